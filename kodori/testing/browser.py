"""Debian's Chromium for the browser tests: where it is, how to start it, what to do if it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("KODORI_CHROMIUM", "/usr/bin/chromium")
# As root and offline: no sandbox, no GPU, and none of Chromium's own network chatter.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def require_chromium() -> None:
    """Skip when Chromium is not installed on a developer's machine; under CI its absence is a failure."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} not installed: `apt-get install chromium` runs the browser tests")
