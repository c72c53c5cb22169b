"""Opaque list cursors: a short JSON list in unpadded base64url, so a link carries a position and nothing
that reads as an offset. ``blobs.listing`` and ``audit.pages`` build their keyset cursors on these two."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def pack(*items: Any) -> str:
    raw = json.dumps(list(items), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack(cursor: str) -> list[Any]:
    """The items :func:`pack` was given; ``ValueError`` for anything it did not make."""
    try:
        items = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor") from None
    if not isinstance(items, list):
        raise ValueError("not a cursor")
    return items
