"""The core install works without the receipt pipeline's heavy packages (the
``receipts`` and ``demo`` extras): a subprocess that refuses to import them runs the
core CLI, the web app and a worker of a user actor, and a command that needs an
extra says in one line which one to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from receiptq import extras

ROOT = Path(__file__).resolve().parents[2]

#: What the extras bring (and what those pull in: numpy, OpenCV, onnxruntime).
HEAVY = (
    "rapidocr_onnxruntime", "cv2", "PIL", "onnxruntime", "numpy", "rapidfuzz",
    "aiosmtpd", "pgserver", "font_source_sans_pro", "font_source_serif_pro",
)  # fmt: skip

CORE_RUN = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, os, sys

    HEAVY = set(sys.argv[1].split(","))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {name!r} (refused)", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    url = os.environ["RECEIPTQ_DATABASE_URL"]

    import dramatiq
    import receiptq.actors  # the Procfile's worker module
    import receiptq.web.app
    from receiptq import cli
    from receiptq.broker import PostgresBroker
    from receiptq.services import ocr

    def command(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
        return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

    result = {
        "migrate": command("db", "migrate", "--url", url),
        "status": command("status", "--json", "--url", url),
        "receipts": command("receipts", "list", "--json", "--url", url),
        "demo": command("demo", "--url", url),
    }
    receiptq.web.app.create_app(url)

    broker = PostgresBroker(url, poll_interval_ms=50)
    done = []
    dramatiq.actor(done.append, actor_name="user_job", queue_name="user_jobs", broker=broker)
    broker.get_actor("user_job").send(7)
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    broker.join("user_jobs", timeout=30_000)
    worker.stop()
    broker.close()
    result["worker"] = done

    try:
        ocr.check_image(b"an image")
    except ImportError as exc:
        result["ocr"] = str(exc)

    for name in ("RECEIPTQ_DATABASE_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    result["no_url"] = command("status")
    result["imported"] = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
    print(json.dumps(result))
    """
)


def test_core_runs_without_the_heavy_packages_and_names_the_missing_extra(database_url):
    env = {**os.environ, "RECEIPTQ_DATABASE_URL": database_url, "COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-c", CORE_RUN, ",".join(HEAVY)],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])

    assert result["imported"] == []
    for name in ("migrate", "status", "receipts"):
        assert result[name]["code"] == 0, result[name]
    assert json.loads(result["receipts"]["out"]) == {"receipts": []}
    assert result["worker"] == [7]
    demo = result["demo"]
    assert demo["code"] == 1
    assert demo["err"].count("\n") == 1
    assert "receiptq demo needs receiptq's 'demo' extra" in demo["err"]
    assert "pip install 'receiptq[demo]'" in demo["err"]
    assert "pip install 'receiptq[receipts]'" in result["ocr"]
    no_url = result["no_url"]
    assert no_url["code"] == 1 and no_url["err"].count("\n") == 1
    assert "no database URL is set" in no_url["err"] and "receiptq[demo]" in no_url["err"]


def test_every_extra_module_is_installed_by_its_extra_and_dev_installs_the_demo():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    optional = project["optional-dependencies"]
    assert not any(heavy in core for heavy in ("rapidocr", "pillow", "rapidfuzz", "pgserver"))
    assert "receiptq[receipts]" in optional["demo"]
    assert "receiptq[demo]" in optional["dev"]
    assert set(extras.EXTRAS["receipts"]) <= set(extras.EXTRAS["demo"])
    assert extras.missing("demo") == []  # this (dev) install has everything
