"""Keyset pages of /blobs and /api/v1/blobs (issue 17): every file exactly once, in order, in both directions,
while files come and go; refused cursors; and queries PostgreSQL answers from the sort's index."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from blobs import listing, views
from blobs.models import Blob
from tests.blobs.support import bearer, make_blob, make_token

pytestmark = pytest.mark.django_db

# Duplicate names and sizes on purpose: ties are broken by the id, or a page boundary would skip or repeat.
FILES = [
    (f"{word}-{i % 3}.txt", (i * 7) % 5 + 1)
    for i, word in enumerate(["delta", "alpha", "echo", "bravo", "alpha"])
]


@pytest.fixture
def files(member: Any, blob_root: Path, other_tenant: Any, outsider: Any) -> list[Blob]:
    make_blob(outsider, b"x", name="alpha-0.txt")  # another tenant's file never appears
    return [make_blob(member, b"z" * size, name=name) for name, size in FILES * 2]


def _expected(blobs: list[Blob], sort: listing.Sort) -> list[Any]:
    rows = sorted(blobs, key=lambda b: (getattr(b, sort.column), b.pk), reverse=sort.descending)
    return [b.pk for b in rows]


@pytest.mark.parametrize("key", sorted(listing.SORTS))
def test_walking_next_then_previous_visits_every_file_once_in_order(
    files: list[Blob], tenant: Any, key: str
) -> None:
    sort, visible = listing.SORTS[key], Blob.objects.visible_in(tenant)
    page, seen = listing.page(visible, sort, 3), list[Any]()
    assert not page.has_previous
    while True:
        seen += [b.pk for b in page.rows]
        if not page.has_next:
            break
        page = listing.page(visible, sort, 3, after=page.next_cursor)
        assert page.has_previous
    assert seen == _expected(files, sort)
    back: list[Any] = []
    page = listing.page(visible, sort, 3, last=True)
    assert not page.has_next and page.has_previous
    while True:
        back = [b.pk for b in page.rows] + back
        if not page.has_previous:
            break
        page = listing.page(visible, sort, 3, before=page.previous_cursor)
    assert back == seen


def test_pages_stay_exact_while_files_are_added_and_deleted(
    files: list[Blob], tenant: Any, member: Any
) -> None:
    sort, visible = listing.SORTS["-created"], Blob.objects.visible_in(tenant)
    first = listing.page(visible, sort, 4)
    make_blob(member, b"new", name="newer.txt")  # lands before the first page: not on the next one
    remaining = _expected(files, sort)[4:]
    gone = Blob.objects.get(pk=remaining[1])
    gone.delete()
    gone.data_key.delete()
    second = listing.page(visible, sort, 4, after=first.next_cursor)
    assert [b.pk for b in second.rows] == [remaining[0], *remaining[2:5]]


def _raw(body: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        "e30",
        listing.encode(listing.SORTS["name"], Blob(name="a")),
        "WyItY3JlYXRlZCIsIDEsICJ4Il0",
        _raw(["-created", 1, "00000000-0000-0000-0000-000000000001"]),  # a number where a time belongs
    ],
)
def test_a_cursor_not_given_out_for_this_sort_is_refused(files: list[Blob], tenant: Any, cursor: str) -> None:
    with pytest.raises(ValueError):
        listing.page(Blob.objects.visible_in(tenant), listing.SORTS["-created"], 3, after=cursor)


def test_the_page_links_first_previous_next_last_and_says_so_for_a_bad_link(
    files: list[Blob], as_user: Any, member: Any, settings: Any
) -> None:
    settings.BLOB_PAGE_SIZE = 4
    client = as_user(member)
    first = client.get(reverse("blobs:list"), {"sort": "size"}).content.decode()
    assert 'rel="next"' in first and 'rel="last"' in first
    assert 'rel="prev"' not in first and 'rel="first"' not in first
    assert "10 files;" in first  # the tenant's own count, from its counters
    last_url = html.unescape(re.search(r'href="([^"]+)" rel="last"', first).group(1))  # type: ignore[union-attr]
    last = client.get(last_url).content.decode()
    assert 'rel="prev"' in last and 'rel="first"' in last and 'rel="next"' not in last
    assert "smallest first" in last
    bad = client.get(reverse("blobs:list"), {"sort": "size", "after": "garbage"})
    assert bad.status_code == 200
    assert "That page link is out of date or damaged" in bad.content.decode()


def test_a_search_counts_its_matches_only_up_to_a_cap(
    files: list[Blob], as_user: Any, member: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = as_user(member)
    assert "4 files match “alpha”" in client.get(reverse("blobs:list"), {"q": "alpha"}).content.decode()
    monkeypatch.setattr(views, "SEARCH_COUNT_CAP", 3)
    assert (
        "More than 3 files match “alpha”"
        in client.get(reverse("blobs:list"), {"q": "alpha"}).content.decode()
    )


def test_the_api_cursor_walks_every_file_and_refuses_a_forged_one(
    files: list[Blob], member: Any, client: Any
) -> None:
    auth, url, seen = bearer(make_token(member)), reverse("blobs:api_blobs"), []
    params: dict[str, Any] = {"limit": 3}
    while True:
        body = client.get(url, params, **auth).json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [str(pk) for pk in _expected(files, listing.SORTS["-created"])]
    forged = client.get(url, {"cursor": listing.encode(listing.SORTS["size"], files[0])}, **auth)
    assert forged.status_code == 400
    assert forged.json()["error"]["message"] == "The cursor is not one this API gave out."


def _plan(queryset: Any) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize(
    ("key", "index"),
    [
        ("-created", "blobs_tenant_recent"),
        ("name", "blobs_tenant_name_id"),
        ("-size", "blobs_tenant_size_id"),
    ],
)
def test_a_later_page_is_a_range_scan_of_the_sorts_index(
    files: list[Blob], tenant: Any, key: str, index: str
) -> None:
    """Without these indexes (or with an OR instead of a row comparison) PostgreSQL must sort every file of
    the tenant for each page: with sorting switched off the plan shows whether it can avoid that."""
    sort = listing.SORTS[key]
    cursor = listing.encode(sort, files[3])
    value, pk = listing.decode(sort, cursor)
    queryset = listing.beyond(Blob.objects.visible_in(tenant), sort, value, pk).order_by(*sort.ordering)[:26]
    plan = _plan(queryset)
    assert f"Index Scan using {index}" in plan or f"Index Scan Backward using {index}" in plan, plan
    assert "Sort" not in plan, plan


def test_name_search_uses_the_trigram_index(files: list[Blob]) -> None:
    """The index is on the expression Django writes for ``icontains``: if the two ever differ, no plan can
    use it (on a table this small the planner would pick another index, so only the predicate is asked)."""
    plan = _plan(Blob.objects.filter(name__icontains="lph"))
    assert "blobs_name_trgm" in plan, plan


@pytest.mark.parametrize("key", sorted(listing.SORTS))
def test_a_search_finds_matches_beyond_its_index_window_in_order_both_ways(
    files: list[Blob], tenant: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a window of 2 files every page mixes matches found by walking the index with matches found
    beyond it by trigrams: together they must be exactly the simple walk's pages."""
    monkeypatch.setattr(listing, "SEARCH_WINDOW", 2)
    sort, every = listing.SORTS[key], Blob.objects.visible_in(tenant)
    expected = [b.pk for b in every.filter(name__icontains="ALPHA").order_by(*sort.ordering)]
    assert len(expected) == 4
    page, seen = listing.page(every, sort, 1, query="ALPHA"), list[Any]()
    while True:
        seen += [b.pk for b in page.rows]
        if not page.has_next:
            break
        page = listing.page(every, sort, 1, after=page.next_cursor, query="ALPHA")
        assert page.has_previous
    assert seen == expected
    page = listing.page(every, sort, 3, last=True, query="ALPHA")
    assert [b.pk for b in page.rows] == expected[-3:] and page.has_previous and not page.has_next
    page = listing.page(every, sort, 3, before=page.previous_cursor, query="ALPHA")
    assert [b.pk for b in page.rows] == expected[:1] and not page.has_previous and page.has_next
