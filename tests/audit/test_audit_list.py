"""``/audit`` as a list people navigate: it opens on key custody, says what it shows and how much of the
chain that is, pages with opaque keyset cursors (first / previous / next / last), has an empty state with a
way on, and exports the same events as JSONL that match the CSV one to one and re-hash."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import chain, pages, payloads, services, verify_bundle
from audit.models import EventType
from audit.pages import event_url
from tenants.models import Tenant

from .conftest import ARN, fill

pytestmark = pytest.mark.django_db

URL = "/audit"


def seqs(html: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb'<td class="audit-seq">(\d+)</td>', html)]


def text(html: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.decode()))


def links(html: bytes) -> dict[str, str]:
    """The pager's links by their ``rel``, as query strings."""
    found = re.findall(rb'<a class="button small" href="([^"]+)" rel="(first|prev|next|last)">', html)
    return {rel.decode(): href.decode().replace("&amp;", "&") for href, rel in found}


def upload(tenant: Tenant, n: int) -> None:
    for i in range(n):
        payload = payloads.blob_uploaded(blob_id=i, name=f"scan-{i}.pdf", size=100)
        services.record(tenant, EventType.BLOB_UPLOADED, payload=payload)


def register(tenant: Tenant, key_row_id: int) -> None:
    payload = payloads.key_registered(key_row_id=key_row_id, provider="customer_kms_aws", key_id=ARN)
    services.record(tenant, EventType.TENANT_KMS_REGISTERED, payload=payload)


@pytest.fixture
def mixed(tenant: Tenant) -> None:
    """#1-#3 uploads, #4 a key registered, #5-#9 uploads, #10 a key registered, #11-#12 uploads."""
    upload(tenant, 3)
    register(tenant, 1)
    upload(tenant, 5)
    register(tenant, 2)
    upload(tenant, 2)


# --- Key custody by default -----------------------------------------------------------------------------


def test_it_opens_on_key_custody_and_says_how_much_of_the_log_that_is(
    as_user: Any, owner: Any, mixed: None
) -> None:
    r = as_user(owner).get(URL)
    assert r.status_code == 200
    assert seqs(r.content) == [10, 4]
    state = text(r.content)
    assert "Showing key custody events — 2 of 12 events. Show all events" in state
    assert 'href="?all=1"' in r.content.decode()
    assert 'value="custody"' in r.content.decode()  # the types box tells the truth too


def test_one_click_shows_every_event_and_one_click_goes_back(as_user: Any, owner: Any, mixed: None) -> None:
    client = as_user(owner)
    everything = client.get(f"{URL}?all=1")
    assert seqs(everything.content) == list(range(12, 0, -1))
    assert "Showing all events: 12 events. Show key custody events only" in text(everything.content)
    assert 'href="?types=custody"' in everything.content.decode()
    assert seqs(client.get(f"{URL}?types=custody").content) == [10, 4]


def test_an_emptied_types_box_means_every_event(as_user: Any, owner: Any, mixed: None) -> None:
    assert len(seqs(as_user(owner).get(f"{URL}?types=").content)) == 12


def test_switching_view_keeps_the_year_and_actor(as_user: Any, owner: Any, mixed: None) -> None:
    html = as_user(owner).get(f"{URL}?actor=system&year=2020").content.decode()
    assert 'href="?all=1&amp;year=2020&amp;actor=system"' in html
    assert "No key custody events match these filters." in text(html.encode())


def test_other_types_say_which(as_user: Any, owner: Any, mixed: None) -> None:
    r = as_user(owner).get(f"{URL}?types=blob.*")
    assert "Showing events of type blob.* — 10 of 12 events." in text(r.content)


def test_a_filtered_count_is_capped_and_says_so(
    as_user: Any, owner: Any, mixed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("audit.views.COUNT_CAP", 3)
    client = as_user(owner)
    client.get(URL)  # the first view verifies the chain
    with CaptureQueriesContext(connection) as queries:
        r = client.get(f"{URL}?types=blob.*")
    assert "more than 3 of 12 events" in text(r.content)
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 4" in sql for sql in counts)  # never a count of the whole chain


# --- Keyset pages -----------------------------------------------------------------------------------------


def test_first_previous_next_last_walk_the_custody_events(
    as_user: Any, owner: Any, tenant: Tenant, settings: Any
) -> None:
    settings.AUDIT_PAGE_SIZE = 2
    for i in range(7):  # seven registrations, each after two uploads: #3, #6, ... #21
        upload(tenant, 2)
        register(tenant, i)
    client = as_user(owner)
    first = client.get(URL)
    assert seqs(first.content) == [21, 18]
    pager = links(first.content)
    assert set(pager) == {"next", "last"}  # nothing newer: no first or previous
    second = client.get(URL + pager["next"])
    assert seqs(second.content) == [15, 12]
    assert set(links(second.content)) == {"first", "prev", "next", "last"}
    last = client.get(URL + links(second.content)["last"])
    assert seqs(last.content) == [6, 3]  # the oldest events, a full page of them
    assert set(links(last.content)) == {"first", "prev"}
    before_last = client.get(URL + links(last.content)["prev"])
    assert seqs(before_last.content) == [12, 9]
    assert seqs(client.get(URL + links(before_last.content)["prev"]).content) == [18, 15]
    assert seqs(client.get(URL + links(before_last.content)["next"]).content) == [6, 3]
    assert seqs(client.get(URL + links(last.content)["first"]).content) == [21, 18]
    assert "Events #15 to #12, newest first" in text(second.content)


def test_cursors_are_opaque_and_keep_the_filters(
    as_user: Any, owner: Any, tenant: Tenant, settings: Any
) -> None:
    settings.AUDIT_PAGE_SIZE = 3
    fill(tenant, 10)
    nxt = links(as_user(owner).get(f"{URL}?all=1&actor=system").content)["next"]
    assert nxt.startswith("?all=1&actor=system&after=")
    cursor = nxt.rsplit("after=", 1)[1]
    assert not cursor.isdigit() and "=" not in cursor
    assert json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))) == ["audit", 8]


def test_a_new_event_does_not_shift_the_next_page(
    as_user: Any, owner: Any, tenant: Tenant, settings: Any
) -> None:
    settings.AUDIT_PAGE_SIZE = 4
    fill(tenant, 10)
    client = as_user(owner)
    nxt = links(client.get(f"{URL}?all=1").content)["next"]
    fill(tenant, 3)  # OFFSET would now show #9..#6 again
    assert seqs(client.get(URL + nxt).content) == [6, 5, 4, 3]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "12",
        pages.encode("key", 5),  # another list's cursor
        base64.urlsafe_b64encode(b'["audit", -4]').decode(),
        base64.urlsafe_b64encode(b'["audit", "5"]').decode(),
        base64.urlsafe_b64encode(b'["audit", true]').decode(),
    ],
)
def test_a_damaged_cursor_gives_the_first_page_and_says_so(
    as_user: Any, owner: Any, tenant: Tenant, settings: Any, cursor: str
) -> None:
    settings.AUDIT_PAGE_SIZE = 3
    fill(tenant, 6)
    r = as_user(owner).get(URL, {"all": "1", "after": cursor})
    assert r.status_code == 200
    assert seqs(r.content) == [6, 5, 4]
    assert "That page link is out of date or damaged; here is the first page." in text(r.content)


def test_a_cursor_never_reaches_another_tenants_events(
    as_user: Any, owner: Any, outsider: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    fill(tenant, 8)
    fill(other_tenant, 2)
    r = as_user(outsider).get(URL, {"all": "1", "after": pages.encode("audit", 9)})
    assert seqs(r.content) == [2, 1]
    assert b"owner@acme.test" not in r.content


def test_a_link_to_an_event_opens_the_page_that_starts_with_it(
    as_user: Any, owner: Any, tenant: Tenant, settings: Any
) -> None:
    settings.AUDIT_PAGE_SIZE = 3
    fill(tenant, 9)
    url = event_url(5)
    assert url.endswith("#event-5")
    assert seqs(as_user(owner).get(url.split("#")[0]).content) == [5, 4, 3]


# --- Empty states -----------------------------------------------------------------------------------------


def test_no_custody_events_yet_says_when_they_appear_and_offers_a_way_on(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    upload(tenant, 2)
    r = as_user(owner).get(URL)
    page = text(r.content)
    assert "No key custody events yet. They appear when an owner or admin registers" in page
    html = r.content.decode()
    assert f'href="{reverse("encryption:index")}"' in html and 'href="?all=1"' in html
    assert "<table" not in html


def test_an_empty_chain_says_so(as_user: Any, owner: Any) -> None:
    r = as_user(owner).get(f"{URL}?all=1")
    assert "No events yet." in text(r.content)
    assert f'href="{reverse("blobs:list")}"' in r.content.decode()


# --- The JSONL export -------------------------------------------------------------------------------------


def _csv(client: Any, query: dict[str, str]) -> list[dict[str, str]]:
    body = b"".join(client.get(reverse("audit:export_csv"), query).streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def _jsonl(client: Any, query: dict[str, str]) -> tuple[Any, list[dict[str, Any]]]:
    response = client.get(reverse("audit:export_jsonl"), query)
    body = b"".join(response.streaming_content)
    assert body.endswith(b"\n")
    return response, [json.loads(line) for line in body.decode().splitlines()]


EXPORTS = [{"all": "1"}, {"types": "custody"}, {"types": "blob.*", "actor": "system"}]


@pytest.mark.parametrize("query", EXPORTS)
def test_the_jsonl_export_matches_the_csv_one_to_one(
    as_user: Any, owner: Any, tenant: Tenant, mixed: None, query: dict[str, str]
) -> None:
    client = as_user(owner)
    rows = _csv(client, query)
    response, lines = _jsonl(client, query)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    assert 'filename="kodori-audit-acme-' in response["Content-Disposition"]
    assert ".jsonl" in response["Content-Disposition"]
    if "all" in query:  # every type: the CSV export's own event, recorded after its range, comes last
        exported = lines.pop()
        assert exported["type"] == "audit.exported" and exported["payload"]["format"] == "csv"
    assert rows and len(lines) == len(rows)
    for row, line in zip(rows, lines, strict=True):
        assert set(row) <= set(line)
        assert str(line["seq"]) == row["seq"] and line["type"] == row["type"]
        assert line["created_at"] == row["created_at"] and line["hash"] == row["hash"]
        assert line["prev_hash"] == row["prev_hash"] and line["summary"] == row["summary"]
        assert ("" if line["actor_id"] is None else str(line["actor_id"])) == row["actor_id"]
        assert json.loads(row["payload"]) == line["payload"]
        # Every field the hash covers is on the line: it re-hashes without Kodori.
        assert verify_bundle.event_hash(line) == line["hash"]
        assert line["tenant"] == tenant.pk


def test_the_jsonl_of_every_event_links_into_a_chain(as_user: Any, owner: Any, mixed: None) -> None:
    _, lines = _jsonl(as_user(owner), {"all": "1"})
    assert [line["seq"] for line in lines] == list(range(1, 13))  # the export's own event is not in it
    for before, after in itertools.pairwise(lines):
        assert after["prev_hash"] == before["hash"]


def test_the_jsonl_export_is_audited_with_its_format_and_filters(
    as_user: Any, owner: Any, tenant: Tenant, mixed: None
) -> None:
    _, lines = _jsonl(as_user(owner), {"types": "custody"})
    assert [line["seq"] for line in lines] == [4, 10]
    head = chain.head(tenant)
    assert head is not None and head.type == EventType.AUDIT_EXPORTED
    assert head.payload == {"format": "jsonl", "firstSeq": 4, "lastSeq": 10, "filters": "types=custody"}


def test_the_jsonl_export_refuses_bad_filters(as_user: Any, owner: Any, tenant: Tenant, mixed: None) -> None:
    response = as_user(owner).get(reverse("audit:export_jsonl"), {"types": "nothing.*"})
    assert response.status_code == 400
    assert chain.head(tenant).type != EventType.AUDIT_EXPORTED  # type: ignore[union-attr]


def test_the_jsonl_export_holds_only_the_users_tenant(
    as_user: Any, outsider: Any, member: Any, other_tenant: Tenant, mixed: None
) -> None:
    upload(other_tenant, 1)
    _, lines = _jsonl(as_user(outsider), {"all": "1"})
    assert [(line["tenant"], line["seq"]) for line in lines] == [(other_tenant.pk, 1)]
    assert as_user(member).get(reverse("audit:export_jsonl")).status_code == 403


def test_the_page_links_the_jsonl_export_with_its_filters(as_user: Any, owner: Any, mixed: None) -> None:
    html = as_user(owner).get(URL).content.decode()
    assert f'href="{reverse("audit:export_jsonl")}?types=custody">Export JSONL</a>' in html
    html = as_user(owner).get(f"{URL}?all=1&actor=system").content.decode()
    assert f'href="{reverse("audit:export_jsonl")}?all=1&amp;actor=system">Export JSONL</a>' in html
