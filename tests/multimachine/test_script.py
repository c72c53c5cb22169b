"""The make-free script that starts the cluster (``python -m kodori.devtools.cluster``) runs the processes the
cluster tests run, and docs/operations.md ("Deployment") shows exactly those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kodori.devtools import cluster
from kodori.devtools.run import BASE_DIR


def deployment_section() -> str:
    doc = (BASE_DIR / "docs" / "operations.md").read_text()
    assert "\n## Deployment\n" in doc
    return doc.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]


def test_the_script_runs_from_a_plain_interpreter_and_prints_its_layout() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "kodori.devtools.cluster", "--print-layout"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert printed == cluster.describe()
    processes = cluster.layout(8000, Path("schedule"))
    assert [p.role for p in processes] == ["web", "web", "worker", "worker", "beat"]
    # Two "machines": the same port on two loopback addresses.
    binds = [p.cmd[p.cmd.index("--bind") + 1] for p in processes if p.role == "web"]
    assert binds == ["127.0.0.2:8000", "127.0.0.3:8000"]


def test_the_deployment_section_shows_the_script_and_every_process_it_starts() -> None:
    section = deployment_section()
    assert ".venv/bin/python -m kodori.devtools.cluster" in section
    for line in cluster.describe():
        assert line in section, f"docs/operations.md, Deployment, does not show: {line}"
