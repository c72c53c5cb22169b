"""Keyset pages of a tenant's files, for ``/blobs`` and ``/api/v1/blobs``.

A page is found from the row just before it (its sort value and id, carried in an opaque cursor), never by
counting rows with OFFSET, so the ten-thousandth page of a million files costs what the first does: one
range scan of the index that sort has (``blobs_tenant_recent``, ``blobs_tenant_name_id``,
``blobs_tenant_size_id``, each ending in the id, so the order is total). Pages stay correct while files are
added or deleted: nothing is skipped or shown twice.

Cursors are ``base64url(JSON [sort, value, id])``: a cursor of another sort, or one that was tampered with,
is refused as ``ValueError`` and the caller says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from tenants import cursors

from .models import Blob


@dataclass(frozen=True)
class Sort:
    key: str  # as in the URL: "name", "-size", ...
    column: str
    descending: bool

    @property
    def ordering(self) -> tuple[str, str]:
        sign = "-" if self.descending else ""
        return (f"{sign}{self.column}", f"{sign}id")

    @property
    def label(self) -> str:
        return _LABELS[self.key]

    def reversed(self) -> Sort:
        return Sort(self.key, self.column, not self.descending)


SORTS = {
    key: Sort(key, column, key.startswith("-"))
    for key, column in (
        ("-created", "created_at"),
        ("created", "created_at"),
        ("name", "name"),
        ("-name", "name"),
        ("size", "size"),
        ("-size", "size"),
    )
}
DEFAULT_SORT = SORTS["-created"]
_LABELS = {
    "-created": "newest first",
    "created": "oldest first",
    "name": "by name, A to Z",
    "-name": "by name, Z to A",
    "size": "smallest first",
    "-size": "largest first",
}


def encode(sort: Sort, blob: Blob) -> str:
    value = getattr(blob, sort.column)
    return cursors.pack(sort.key, value.isoformat() if isinstance(value, datetime) else value, str(blob.pk))


def decode(sort: Sort, cursor: str) -> tuple[Any, UUID]:
    """The (value, id) a cursor of ``sort`` names; ``ValueError`` for anything not given out here."""
    items = cursors.unpack(cursor)
    if len(items) != 3:
        raise ValueError("not a cursor")
    key, value, pk = items
    if key != sort.key:
        raise ValueError("a cursor of another sort")
    if sort.column == "created_at":
        if not isinstance(value, str):
            raise ValueError("not a time")
        value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            raise ValueError("a time without its zone")
    elif sort.column == "size":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("not a size")
    elif not isinstance(value, str):
        raise ValueError("not a name")
    return value, UUID(str(pk))


def _compare(blobs: QuerySet[Blob], sort: Sort, op: str, value: Any, pk: UUID) -> QuerySet[Blob]:
    """``(column, id) <op> (value, pk)``: one row comparison, which PostgreSQL answers with a range scan of
    the sort's index (an OR of two conditions would not be). The column and operator come from this module,
    never from the request; the values are parameters."""
    sql = f'("blobs"."{sort.column}", "blobs"."id") {op} (%s, %s)'
    return blobs.filter(RawSQL(sql, (value, pk), output_field=BooleanField()))  # noqa: S611


def beyond(blobs: QuerySet[Blob], sort: Sort, value: Any, pk: UUID) -> QuerySet[Blob]:
    """The rows after (value, pk) in ``sort``'s order."""
    return _compare(blobs, sort, "<" if sort.descending else ">", value, pk)


def _not_beyond(blobs: QuerySet[Blob], sort: Sort, value: Any, pk: UUID) -> QuerySet[Blob]:
    """The rows up to and including (value, pk) in ``sort``'s order."""
    return _compare(blobs, sort, ">=" if sort.descending else "<=", value, pk)


@dataclass(frozen=True)
class Page:
    rows: list[Blob]
    sort: Sort
    has_next: bool
    has_previous: bool

    @property
    def next_cursor(self) -> str | None:
        return encode(self.sort, self.rows[-1]) if self.has_next and self.rows else None

    @property
    def previous_cursor(self) -> str | None:
        return encode(self.sort, self.rows[0]) if self.has_previous and self.rows else None


# A search walks at most this many of the tenant's files past the cursor in the sort's index (cheap, and
# exactly right while matches are near), then looks the rest up by trigrams instead: a term whose matches all
# lie far down the index (last year's month in the names) would otherwise walk a million rows to fill a page.
SEARCH_WINDOW = 20_000

# The same order as ``Sort.ordering``, written so that no index can produce it: PostgreSQL then finds the rows
# by the search's own (trigram) index and sorts those few, instead of walking the sort's index.
_UNINDEXED = {"created_at": "+ interval '0'", "size": "+ 0", "name": "|| ''"}


def _unindexed_ordering(sort: Sort) -> list[Any]:
    expression = RawSQL(f'("blobs"."{sort.column}" {_UNINDEXED[sort.column]})', ())  # noqa: S611
    return [expression.desc() if sort.descending else expression.asc(), sort.ordering[1]]


def _rows(
    blobs: QuerySet[Blob],
    scan: Sort,
    start: tuple[Any, UUID] | None,
    n: int,
    window_of: QuerySet[Blob] | None,
) -> list[Blob]:
    """Up to ``n`` rows of ``blobs`` in ``scan``'s order, after ``start`` (or from the beginning).

    ``window_of``: every file the search looks through (``blobs`` before its name filter). Given, the rows are
    looked for first among the next ``SEARCH_WINDOW`` files of the index, then by trigrams beyond them.
    """
    ahead = beyond(blobs, scan, *start) if start else blobs
    if window_of is None:
        return list(ahead.order_by(*scan.ordering)[:n])
    everything = beyond(window_of, scan, *start) if start else window_of
    edge = list(
        everything.order_by(*scan.ordering).values_list(scan.column, "id")[SEARCH_WINDOW - 1 : SEARCH_WINDOW]
    )
    if not edge:
        return list(ahead.order_by(*scan.ordering)[:n])  # fewer files than the window remain: walk them all
    near = list(_not_beyond(ahead, scan, *edge[0]).order_by(*scan.ordering)[:n])
    if len(near) == n:
        return near
    far = beyond(blobs, scan, *edge[0]).order_by(*_unindexed_ordering(scan))[: n - len(near)]
    return near + list(far)


def page(
    blobs: QuerySet[Blob],
    sort: Sort,
    size: int,
    *,
    after: str | None = None,
    before: str | None = None,
    last: bool = False,
    query: str = "",
) -> Page:
    """One page of ``blobs`` in ``sort``'s order: the first, the one after or before a cursor, or the last.

    ``query``: only files whose name contains it (case-insensitive), found as ``_rows`` describes. Raises
    ``ValueError`` for a cursor this module did not give out (or one of another sort).
    """
    blobs, window_of = (search(blobs, query), blobs) if query else (blobs, None)
    backwards = before is not None or last
    scan = sort.reversed() if backwards else sort
    start = None
    if after is not None or before is not None:
        start = decode(sort, after if after is not None else before)  # type: ignore[arg-type]
    rows = _rows(blobs, scan, start, size + 1, window_of)
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
        has_previous, has_next = more, bool(rows) and _exists_beyond(blobs, sort, rows[-1], window_of)
    else:
        has_next = more
        has_previous = (
            after is not None and bool(rows) and _exists_beyond(blobs, sort.reversed(), rows[0], window_of)
        )
    return Page(rows, sort, has_next, has_previous)


def _exists_beyond(blobs: QuerySet[Blob], sort: Sort, row: Blob, window_of: QuerySet[Blob] | None) -> bool:
    return bool(_rows(blobs, sort, (getattr(row, sort.column), row.pk), 1, window_of))


def search(blobs: QuerySet[Blob], query: str) -> QuerySet[Blob]:
    """The files whose name contains ``query``: ``UPPER(name) LIKE UPPER('%q%')``, the trigram index's
    expression."""
    return blobs.filter(name__icontains=query)


def count_up_to(blobs: QuerySet[Blob], cap: int) -> int:
    """How many rows ``blobs`` has, counting no further than ``cap`` (a search's "1,000+ matches")."""
    return blobs.order_by()[:cap].count()
