"""`receiptq bench --from-json/--compare/--plot/--markdown`: the picture and the table
drawn from saved lines, with no benchmark run and no database."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from receiptq import cli
from receiptq.tools.bench import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

OWN = [
    {"peer": "receiptq", "workload": "drain", "enqueue_jobs_per_s": 12000.0,
     "drain_jobs_per_s": 5000.0, "version": "receiptq 0.1.0, PostgreSQL 16.4"},
    {"peer": "receiptq", "workload": "steady", "completed_jobs_per_s": 2300.0, "enqueued": 11570,
     "latency_p50_ms": 13.4, "latency_p99_ms": 78.0, "backlog_at_end": 10},
    {"peer": "receiptq", "workload": "ceiling", "enqueue_jobs_per_s": 40000.0,
     "drain_jobs_per_s": 14000.0},
    {"peer": "receiptq", "workload": "tiers", "plain_drain_jobs_per_s": 4800.0,
     "fair_drain_jobs_per_s": 4650.0, "fair_drain_jobs_per_s_rounds": [4600.0, 4700.0],
     "fairness_cost_percent": 3.1},
]  # fmt: skip
PEERS = [
    {"peer": "pgqueuer-asyncpg", "workload": "drain", "enqueue_jobs_per_s": 34000.0,
     "drain_jobs_per_s": 4000.0},
    {"peer": "pgqueuer-asyncpg", "workload": "steady", "completed_jobs_per_s": 1500.0,
     "enqueued": 7620, "latency_p50_ms": 13.4, "latency_p99_ms": 93.0, "backlog_at_end": 20},
    {"peer": "dramatiq-redis", "workload": "drain", "enqueue_jobs_per_s": 3700.0,
     "drain_jobs_per_s": 2600.0},
    {"peer": "dramatiq-redis", "workload": "steady", "completed_jobs_per_s": 2300.0,
     "enqueued": 15280, "latency_p50_ms": 906.0, "latency_p99_ms": 1585.0,
     "backlog_at_end": 3686},
]  # fmt: skip


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_draw_writes_a_png_of_the_panels_the_lines_fill(tmp_path):
    path = tmp_path / "bench.png"
    titles = plot.draw([*OWN, *PEERS], path, "a title")
    assert [t.split(":")[0] for t in titles] == [
        "drain", "enqueue before the drain", "steady", "tiers",
    ]  # fmt: skip
    assert "fairness cost 3.1 %" in titles[3]
    width, height = png_size(path)
    assert (width, height) == (920, 840)  # 2 x 2 panels of 4.6 x 4.2 in at 100 dpi
    assert path.stat().st_size > 20_000  # bars, labels and text, not an empty canvas


def test_three_panels_in_a_row_without_tiers_or_backlog_lines(tmp_path):
    path = tmp_path / "bench.png"
    titles = plot.draw([*OWN[:3], *PEERS], path, "a title")
    assert len(titles) == 3
    assert png_size(path) == (1380, 420)


def test_from_json_plots_and_prints_the_markdown_table_without_running(tmp_path, capsys):
    own = write_lines(tmp_path / "rq.jsonl", OWN)
    peers = write_lines(tmp_path / "peers.jsonl", PEERS)
    picture = tmp_path / "bench.png"
    argv = ["bench", "--from-json", str(own), "--compare", str(peers), "--plot", str(picture)]
    code = cli.main([*argv, "--markdown", "--url", "postgresql://nobody@127.0.0.1:1/none"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert png_size(picture)[0] > 0
    assert out.splitlines()[0] == (
        "|  | receiptq | pgqueuer-asyncpg | dramatiq-redis | Dramatiq StubBroker (ceiling) |"
    )
    assert "| drain jobs/s | 5,000 | 4,000 (1.25×) | 2,600 (1.92×) | 14,000 (0.36×) |" in out


def test_from_json_alone_prints_the_saved_lines_as_a_table(tmp_path, capsys):
    own = write_lines(tmp_path / "rq.jsonl", OWN)
    assert cli.main(["bench", "--from-json", str(own)]) == 0
    out = capsys.readouterr().out
    assert "receiptq bench" in out and "ceiling" in out and "14000" in out


@pytest.mark.parametrize(
    ("content", "option", "message"),
    [
        (None, "--from-json", "--from-json {path}: no such file"),
        ("not json at all\n", "--from-json", "--from-json {path}: no result lines"),
        ('{"peer": "receiptq",\n', "--from-json", "--from-json {path}, line 1: not JSON"),
        (None, "--compare", "--compare {path}: no such file"),
    ],
)
def test_a_missing_or_garbled_file_is_one_line_and_exit_2(
    tmp_path, capsys, content, option, message
):
    path = tmp_path / "lines.jsonl"
    if content is not None:
        path.write_text(content)
    argv = ["bench", option, str(path)]
    if option == "--compare":
        argv += ["--from-json", str(write_lines(tmp_path / "rq.jsonl", OWN))]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("receiptq: error: " + message.format(path=path))


def test_a_plot_into_a_missing_directory_is_refused_before_anything_runs(tmp_path, capsys):
    own = write_lines(tmp_path / "rq.jsonl", OWN)
    picture = tmp_path / "absent" / "bench.png"
    assert cli.main(["bench", "--from-json", str(own), "--plot", str(picture)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"receiptq: error: --plot {picture}: no such directory"
