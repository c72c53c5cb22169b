"""Keyset pages over a unique integer column, newest first: ``/audit`` (by ``seq``, unique in a tenant's
chain) and the key history on ``/encryption`` (by id).

A page is found from the row next to it, never with OFFSET: the thousandth page costs what the first does,
one range scan of an index that ends in the column (``audit_event_unique_tenant_seq``,
``audit_event_tenant_type``, the primary key). Pages stay right while rows are added: nothing is skipped or
shown twice.

A cursor is ``base64url(JSON [kind, value])``, opaque to the reader. A cursor of another list (``kind``), or
one that does not decode to a positive integer, is refused with ``ValueError`` and the caller says so. A
cursor names a position only; which rows a page may show is still up to the caller's (tenant-scoped)
queryset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from django.db.models import Model, QuerySet
from django.urls import reverse

from tenants import cursors

M = TypeVar("M", bound=Model)

AUDIT_KIND = "audit"  # the kind of ``/audit``'s cursors

_MAX = 2**63 - 1


def encode(kind: str, value: int) -> str:
    return cursors.pack(kind, value)


def decode(kind: str, cursor: str) -> int:
    """The value a cursor of ``kind`` names; ``ValueError`` for anything not given out by ``encode``."""
    items = cursors.unpack(cursor)
    if len(items) != 2:
        raise ValueError("not a cursor")
    name, value = items
    if name != kind:
        raise ValueError("a cursor of another list")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX:
        raise ValueError("not a position")
    return value


@dataclass(frozen=True)
class Page(Generic[M]):
    """Rows newest first, and whether there are newer (earlier pages) and older rows (later pages)."""

    rows: list[M]
    kind: str
    column: str
    has_newer: bool
    has_older: bool

    def _value(self, row: M) -> int:
        return int(getattr(row, self.column))

    @property
    def newer_cursor(self) -> str:
        return encode(self.kind, self._value(self.rows[0])) if self.has_newer and self.rows else ""

    @property
    def older_cursor(self) -> str:
        return encode(self.kind, self._value(self.rows[-1])) if self.has_older and self.rows else ""

    def links(self, link: Callable[..., str]) -> dict[str, str]:
        """First / previous / next / last URLs ("" where there is nowhere to go). ``link(**params)`` builds
        a URL that keeps the list's own parameters (its filters) and adds these."""
        return {
            "first": link() if self.has_newer else "",
            "previous": link(before=self.newer_cursor) if self.newer_cursor else "",
            "next": link(after=self.older_cursor) if self.older_cursor else "",
            "last": link(last="1") if self.has_older else "",
        }


def page(
    rows: QuerySet[M],
    column: str,
    size: int,
    *,
    kind: str,
    after: str | None = None,
    before: str | None = None,
    last: bool = False,
) -> Page[M]:
    """One page of ``rows``, newest (highest ``column``) first: the first page, the one after (older than) or
    before (newer than) a cursor, or the last (oldest) page. ``ValueError`` for a bad cursor."""
    if after:
        start = decode(kind, after)
        found = list(rows.filter(**{f"{column}__lt": start}).order_by(f"-{column}")[: size + 1])
        shown = found[:size]
        newer = bool(shown) and rows.filter(**{f"{column}__gt": getattr(shown[0], column)}).exists()
        return Page(shown, kind, column, newer, len(found) > size)
    if before or last:
        ahead = rows.filter(**{f"{column}__gt": decode(kind, before)}) if before else rows
        found = list(ahead.order_by(column)[: size + 1])
        shown = found[:size][::-1]
        older = bool(shown) and rows.filter(**{f"{column}__lt": getattr(shown[-1], column)}).exists()
        return Page(shown, kind, column, len(found) > size, older)
    found = list(rows.order_by(f"-{column}")[: size + 1])
    return Page(found[:size], kind, column, False, len(found) > size)


def requested(query: Any) -> dict[str, Any]:
    """The page a request asks for (``after``, ``before``, ``last`` in its query string), as ``page``'s
    keyword arguments; one direction only, ``after`` first."""
    after = query.get("after") or None
    before = None if after else (query.get("before") or None)
    return {"after": after, "before": before, "last": not after and not before and bool(query.get("last"))}


def asked_for_a_page(query: Any) -> bool:
    return any(query.get(name) for name in ("after", "before", "last"))


def querystring(params: list[tuple[str, str]], **extra: str) -> str:
    return urlencode(params + [(k, v) for k, v in extra.items() if v])


def count_up_to(rows: QuerySet[Any], cap: int) -> int:
    """How many rows ``rows`` has, counting no further than ``cap`` (a COUNT over a LIMIT subquery)."""
    return rows.order_by()[:cap].count()


def event_url(seq: int, *, custody: bool = False) -> str:
    """A link to the ``/audit`` page that starts at event ``seq`` (the key-custody view, or every event)."""
    view = "types=custody" if custody else "all=1"
    return f"{reverse('audit:index')}?{view}&after={encode(AUDIT_KIND, seq + 1)}#event-{seq}"
