"""Where the vendored Wycheproof vectors live (``KODORI_VECTORS_DIR`` overrides)."""

from __future__ import annotations

import os
from pathlib import Path


def vectors_dir() -> Path:
    override = os.environ.get("KODORI_VECTORS_DIR")
    return Path(override) if override else Path(__file__).resolve().parent
