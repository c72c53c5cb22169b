"""``/audit``: who sees it, filters in the URL, the rotation chip, keyset pages and the chain badge."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import payloads, services, signing
from audit.models import EventType
from tenants.models import Tenant

from .conftest import ARN, GCP_PATH, fill, raw

pytestmark = pytest.mark.django_db

URL = "/audit"


@contextmanager
def at(moment: datetime, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patch:
        patch.setattr("django.utils.timezone.now", lambda: moment)
        yield


def rotate(tenant: Tenant, actor: Any = None) -> None:
    payload = payloads.key_rotated(
        from_provider="customer_kms_aws", from_key_id=ARN, to_provider="customer_kms_gcp", to_key_id=GCP_PATH
    )
    services.record(tenant, EventType.TENANT_KMS_ROTATED, actor=actor, payload=payload)


SAMPLE = {
    EventType.TENANT_KMS_REGISTERED: payloads.key_registered(
        key_row_id=1, provider="customer_kms_aws", key_id=ARN
    ),
    EventType.MEMBERSHIP_ADDED: payloads.membership_added(
        user_id=9, email="new@acme.test", role="viewer", created_account=True
    ),
    EventType.BLOB_UPLOADED: payloads.blob_uploaded(blob_id=1, name="q1.pdf", size=2_500_000),
    EventType.API_TOKEN_CREATED: payloads.api_token_created(token_id=1, name="ci"),
}


def record(tenant: Tenant, kind: EventType, actor: Any = None) -> None:
    services.record(tenant, kind, actor=actor, payload=SAMPLE[kind])


def text(html: bytes) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.decode()))


def seqs(html: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb'<td class="audit-seq">(\d+)</td>', html)]


@pytest.fixture
def history(tenant: Tenant, owner: Any, admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """#1 2025 key registered (owner), #2 2025 member added (system), #3 2026 rotated (admin), #4 blob."""
    with at(datetime(2025, 6, 1, 12, tzinfo=UTC), monkeypatch):
        record(tenant, EventType.TENANT_KMS_REGISTERED, owner)
        record(tenant, EventType.MEMBERSHIP_ADDED)
    with at(datetime(2026, 2, 10, 8, tzinfo=UTC), monkeypatch):
        rotate(tenant, admin)
    with at(datetime(2026, 3, 5, 8, tzinfo=UTC), monkeypatch):
        record(tenant, EventType.BLOB_UPLOADED, owner)


def test_owner_and_admin_see_the_log_newest_first(
    as_user: Any, owner: Any, admin: Any, history: None
) -> None:
    for user in (owner, admin):
        r = as_user(user).get(f"{URL}?all=1")
        assert r.status_code == 200
        assert seqs(r.content) == [4, 3, 2, 1]
        # Opened without filters, the page shows the key-custody events (tests/audit/test_audit_list.py).
        assert seqs(as_user(user).get(URL).content) == [3, 1]


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_are_refused(as_user: Any, role: str, request: pytest.FixtureRequest) -> None:
    assert as_user(request.getfixturevalue(role)).get(URL).status_code == 403


def test_anonymous_users_are_sent_to_log_in(client: Any) -> None:
    r = client.get(URL)
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]


def test_the_outsider_sees_only_their_own_tenant(
    as_user: Any, outsider: Any, history: None, other_tenant: Tenant
) -> None:
    record(other_tenant, EventType.API_TOKEN_CREATED, outsider)
    r = as_user(outsider).get(f"{URL}?all=1")
    assert r.status_code == 200
    assert seqs(r.content) == [1]
    assert b"api-token.created" in r.content
    assert b"tenant-kms.rotated</code>" not in r.content and b"owner@acme.test" not in r.content
    for export in ("audit:export_csv", "audit:export_bundle"):
        body = b"".join(as_user(outsider).get(reverse(export)).streaming_content)
        assert b"owner@acme.test" not in body


def test_the_rotated_row_shows_the_diff_chip(as_user: Any, owner: Any, history: None) -> None:
    r = as_user(owner).get(URL)
    assert "aws-kms …a1b2c3d4e5f6 → gcp-kms …9f8e7d6c5b4a" in text(r.content)
    assert b"audit-diff-chip" in r.content


def test_other_rows_have_a_summary_and_an_expandable_payload(as_user: Any, owner: Any, history: None) -> None:
    html = as_user(owner).get(f"{URL}?all=1").content.decode()
    page = text(html.encode())
    assert "Uploaded “q1.pdf” (2.4 MiB)" in page
    assert "Added new@acme.test as viewer" in page
    assert "Registered aws-kms …a1b2c3d4e5f6 (key #1)" in page
    assert html.count('<details class="audit-payload">') == 4
    assert "&quot;name&quot;: &quot;q1.pdf&quot;" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("types=tenant-kms.*&year=2026", [3]),
        ("types=tenant-kms.*", [3, 1]),
        ("types=tenant-kms.registered&types=blob.*", [4, 1]),
        ("types=membership.added,blob.uploaded", [4, 2]),
        ("year=2025", [2, 1]),
        ("from=2026-02-10&to=2026-03-04", [3]),
        ("from=2025-06-01", [4, 3, 2, 1]),
        ("to=2025-06-01", [2, 1]),
        ("year=2026&from=2026-03-01", [4]),
        ("actor=OWNER@acme.test", [4, 1]),
        ("actor=system", [2]),
        ("actor=admin@acme.test&types=tenant-kms.*", [3]),
        ("year=2024", []),
    ],
)
def test_filters_are_in_the_url(
    as_user: Any, owner: Any, history: None, query: str, expected: list[int]
) -> None:
    # ``all=1``: every type unless the query names types (the page's default view is key custody).
    r = as_user(owner).get(f"{URL}?all=1&{query}")
    assert r.status_code == 200
    assert seqs(r.content) == expected


@pytest.mark.parametrize(
    "query", ["types=nothing.*", "year=20x6", "from=yesterday", "from=2026-02-02&to=2026-01-01"]
)
def test_bad_filters_are_explained(as_user: Any, owner: Any, history: None, query: str) -> None:
    r = as_user(owner).get(f"{URL}?{query}")
    assert r.status_code == 400
    assert b'class="form-errors"' in r.content


def link(html: bytes, rel: str) -> str:
    found = re.search(rf'<a class="button small" href="([^"]+)" rel="{rel}">'.encode(), html)
    assert found is not None, f"no {rel} link"
    return found.group(1).decode().replace("&amp;", "&")


def test_pages_use_keysets_not_counts(as_user: Any, owner: Any, tenant: Tenant, settings: Any) -> None:
    settings.AUDIT_PAGE_SIZE = 5
    fill(tenant, 12)
    client = as_user(owner)
    client.get(f"{URL}?all=1")  # first view verifies the chain; later views only look
    with CaptureQueriesContext(connection) as queries:
        first = client.get(f"{URL}?all=1")
    assert seqs(first.content) == [12, 11, 10, 9, 8]
    # Every event: the chain's length is its head's number, nothing is counted.
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not [q for q in queries.captured_queries if "OFFSET" in q["sql"].upper()]
    second = client.get(f"{URL}{link(first.content, 'next')}")
    assert seqs(second.content) == [7, 6, 5, 4, 3]
    third = client.get(f"{URL}{link(second.content, 'next')}")
    assert seqs(third.content) == [2, 1]
    assert b'rel="next"' not in third.content and b'rel="last"' not in third.content
    back = client.get(f"{URL}{link(third.content, 'prev')}")
    assert seqs(back.content) == [7, 6, 5, 4, 3]
    assert seqs(client.get(f"{URL}{link(third.content, 'first')}").content) == [12, 11, 10, 9, 8]


def test_paging_keeps_the_filters(as_user: Any, owner: Any, tenant: Tenant, settings: Any) -> None:
    settings.AUDIT_PAGE_SIZE = 2
    fill(tenant, 12)  # every fourth event is a rotation: #1, #5, #9
    r = as_user(owner).get(f"{URL}?types=tenant-kms.rotated")
    assert seqs(r.content) == [9, 5]
    older = link(r.content, "next")
    assert older.startswith("?types=tenant-kms.rotated&after=")
    assert seqs(as_user(owner).get(f"{URL}{older}").content) == [1]


def test_the_badge_says_verified_through_the_head(as_user: Any, owner: Any, tenant: Tenant) -> None:
    fill(tenant, 3)
    page = text(as_user(owner).get(URL).content)
    assert re.search(r"verified through #3 at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)


def test_the_badge_turns_red_when_the_chain_is_broken(as_user: Any, owner: Any, tenant: Tenant) -> None:
    fill(tenant, 3)
    as_user(owner).get(URL)
    fill(tenant, 2)
    raw("UPDATE audit_auditevent SET payload = '{}' WHERE tenant_id = %s AND seq = 4", [tenant.pk])
    r = as_user(owner).get(URL)
    assert b'class="status status-danger audit-badge" role="alert">chain broken at #4</span>' in r.content


def test_a_page_view_catches_a_change_to_the_last_verified_event(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    fill(tenant, 3)
    as_user(owner).get(URL)
    raw(
        "UPDATE audit_auditevent SET hash = md5('x') || md5('y') WHERE tenant_id = %s AND seq = 3",
        [tenant.pk],
    )
    assert b"chain broken at #3" in as_user(owner).get(URL).content


def test_page_views_verify_a_bounded_number_of_new_events(
    as_user: Any, owner: Any, tenant: Tenant, settings: Any
) -> None:
    settings.AUDIT_PAGE_VERIFY_LIMIT = 4
    fill(tenant, 10)
    assert "verified through #4" in text(as_user(owner).get(URL).content)
    assert "verified through #8" in text(as_user(owner).get(URL).content)
    assert "verified through #10" in text(as_user(owner).get(URL).content)


def test_the_public_key_and_latest_checkpoint_are_shown(as_user: Any, owner: Any, tenant: Tenant) -> None:
    fill(tenant, 2)
    services.sign_checkpoint(tenant)
    page = text(as_user(owner).get(URL).content)
    assert signing.public_key_b64() in page
    assert signing.current_key_id() in page
    assert re.search(r"#2, signed \d{4}-", page)


def test_verify_now_rereads_the_whole_chain(as_user: Any, owner: Any, tenant: Tenant) -> None:
    fill(tenant, 3)
    client = as_user(owner)
    client.get(URL)  # verified through #3; a page view will not look at #1 again
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s AND seq = 1", [tenant.pk])
    assert b"verified through #3" in client.get(URL).content
    r = client.post(reverse("audit:verify"), follow=True)
    assert "The audit chain is broken at #1" in text(r.content)
    assert b"chain broken at #1" in r.content


def test_verify_now_needs_a_csrf_token(as_user: Any, owner: Any) -> None:
    r = as_user(owner, csrf=True).post(reverse("audit:verify"))
    assert r.status_code == 403 and b"CSRF" in r.content


def test_the_navigation_links_to_the_log_for_managers_only(as_user: Any, owner: Any, member: Any) -> None:
    assert b'href="/audit"' in as_user(owner).get("/").content
    assert b'href="/audit"' not in as_user(member).get("/").content
