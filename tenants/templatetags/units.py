"""``{% load units %}`` ``{{ blob.size|filesize }}``: sizes in binary units (``tenants.units``), used instead
of Django's ``filesizeformat``, which says "KB" for 1024 bytes."""

from __future__ import annotations

from typing import Any

from django import template

from tenants.units import format_bytes

register = template.Library()


@register.filter
def filesize(value: Any) -> str:
    """A byte count as ``2.4 MiB`` (number and unit joined by a no-break space); ``?`` when not a number."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return "?"
    return format_bytes(n, space="\u00a0")
