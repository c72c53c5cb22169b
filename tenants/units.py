"""Sizes as people read them, in one system everywhere: binary units (KiB, MiB, GiB, TiB), never KB or MB.

Pages use it through the ``filesize`` template filter (``tenants/templatetags/units.py``), messages and
audit summaries call ``format_bytes`` directly, and ``static/kodori/blobs.js`` spells the same rule for upload
progress. It lives in ``tenants``, the lowest app, so every app may use it.
"""

from __future__ import annotations

UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int, *, space: str = " ") -> str:
    """``0 bytes``, ``1 byte``, ``1023 bytes``, ``1.0 KiB``, ``2.4 MiB``, ``10.0 GiB``: one decimal from KiB.

    ``space`` goes between the number and the unit (pages pass a no-break space so the two never part).
    """
    if abs(n) < 1024:
        return f"{n}{space}byte" if abs(n) == 1 else f"{n}{space}bytes"
    value = float(n)
    for unit in UNITS:
        value /= 1024
        if round(abs(value), 1) < 1024 or unit == UNITS[-1]:
            return f"{value:.1f}{space}{unit}"
    raise AssertionError("unreachable: the loop returns at its last unit")  # pragma: no cover
