"""The ``receiptq`` command is one package: ``python -m receiptq`` runs it, and its
command modules share only public names (each group's own helpers stay its own)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import receiptq.cli

CLI = Path(receiptq.cli.__file__).parent


def private_names_borrowed(source: str) -> list[str]:
    """The private names (``_x``) a module takes from other ``receiptq.cli`` modules:
    imported by name, or read as an attribute of an imported cli module. The shared
    base ``receiptq.cli._common`` may be imported; its private names may not."""
    tree = ast.parse(source)
    modules: set[str] = set()  # local names bound to cli modules
    borrowed = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "receiptq":
            modules.update(a.asname or a.name for a in node.names if a.name == "cli")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("receiptq.cli"):
            for alias in node.names:
                if node.module == "receiptq.cli" and alias.name == "_common":
                    modules.add(alias.asname or alias.name)
                elif alias.name.startswith("_"):
                    borrowed.append(f"{node.module}.{alias.name}")
                elif node.module == "receiptq.cli":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("receiptq.cli"):
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
        ):
            borrowed.append(f"{node.value.id}.{node.attr}")
    return borrowed


def test_python_dash_m_receiptq_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "receiptq", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: receiptq")
    for command in ("db", "status", "dead-letter", "enqueue", "process", "queue", "breakers"):
        assert f"    {command}" in done.stdout


def test_no_cli_module_uses_another_cli_modules_private_names():
    modules = sorted(CLI.glob("*.py"))
    assert len(modules) > 10
    borrowed = {
        path.name: names
        for path in modules
        if (names := private_names_borrowed(path.read_text(encoding="utf-8")))
    }
    assert borrowed == {}


def test_the_private_names_check_sees_both_ways_of_borrowing():
    source = (
        "from receiptq import cli\n"
        "from receiptq.cli import status, _common\n"
        "from receiptq.cli.status import _pause\n"
        "from receiptq.cli._common import _number, url\n"
        "status._watch_frames\n"
        "_common.url\n"
        "cli._url(args)\n"
    )
    assert private_names_borrowed(source) == [
        "receiptq.cli.status._pause",
        "receiptq.cli._common._number",
        "status._watch_frames",
        "cli._url",
    ]
