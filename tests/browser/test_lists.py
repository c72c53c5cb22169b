"""In Chromium, at 1280 px and 390 px: ``/audit`` opens on key custody with one click to every event and
back, pages with First / Previous / Next / Last, offers JSONL beside CSV and has an empty state with a way on;
the key history pages and links each rotation to its re-wrap walk, whose page summarises it. Owners and admins
see these pages; members are refused."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import payloads, services
from audit.models import EventType
from encryption import history, keyring
from encryption.models import (
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
    WrapMethod,
)
from tenants.models import Tenant
from tests.browser.test_custody import shots
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-a1b2c3d4e{:03d}"


def _uploads(tenant: Tenant, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        payload = payloads.blob_uploaded(blob_id=i, name=f"invoice-{i:04d}.pdf", size=48_213 + i)
        services.record(tenant, EventType.BLOB_UPLOADED, payload=payload)


def _custody(tenant: Tenant, owner: Any) -> dict[str, Any]:
    """A managed key rotated to an AWS key among 60 uploads; the completed walk that followed it."""
    old = keyring.active_tkv(tenant)
    _uploads(tenant, 30)
    TenantKeyVersion.objects.filter(pk=old.pk).update(status=VersionStatus.RETIRED)
    TenantKey.objects.filter(pk=old.kek_id).update(status=KeyStatus.RETIRED)
    key = TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_AWS,
        key_id=ARN.format(1),
        canonical_id=ARN.format(1),
        status=KeyStatus.ACTIVE,
        registered_by=owner,
    )
    target = TenantKeyVersion.objects.create(tenant=tenant, kek=key, version=2, wrapped_key=b"w")
    registered = payloads.key_registered(key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id)
    services.record(tenant, EventType.TENANT_KMS_REGISTERED, actor=owner, payload=registered)
    rotated = payloads.key_rotated(
        from_provider=WrapMethod.GLOBAL,
        from_key_id="",
        to_provider=key.wrap_method,
        to_key_id=key.key_id,
        from_key_row_id=old.kek_id,
        to_key_row_id=key.pk,
    )
    event = services.record(tenant, EventType.TENANT_KMS_ROTATED, actor=owner, payload=rotated)
    assert event is not None
    job = RewrapJob.objects.create(
        tenant=tenant,
        status=RewrapStatus.COMPLETED,
        target_tkv=target,
        total=20_000,
        done=20_000,
        versions={str(old.pk): {"version": 1, "kek": old.kek_id, "total": 20_000, "done": 20_000}},
        destroyed_versions=[1],
    )
    started = event.created_at + timedelta(milliseconds=200)
    RewrapJob.objects.filter(pk=job.pk).update(
        created_at=started, finished_at=started + timedelta(seconds=2.6)
    )
    _uploads(tenant, 30, start=30)
    return {"key": key, "job": job, "event": event}


@pytest.mark.parametrize("email", ["owner@acme.test", "admin@acme.test"])
def test_audit_opens_on_key_custody_and_pages(
    live_server: Any,
    page: Any,
    tenant: Tenant,
    owner: Any,
    admin: Any,
    settings: Any,
    tmp_path: Path,
    email: str,
) -> None:
    settings.AUDIT_PAGE_SIZE = 20
    _custody(tenant, owner)
    base = live_server.url
    sign_in(page, base, email)
    page.goto(f"{base}/audit")
    view = page.locator("#audit-view")
    assert "Showing key custody events — 2 of 62 events." in " ".join(view.inner_text().split())
    assert page.locator("tbody tr").count() == 2
    assert "invoice-" not in page.locator("tbody").inner_text()
    assert page.locator(".audit-diff-chip").inner_text() == "kodori-managed → aws-kms …a1b2c3d4e001"
    assert (
        page.get_by_role("link", name="Export JSONL").get_attribute("href")
        == "/audit/export.jsonl?types=custody"
    )
    assert page.get_by_role("link", name="Export CSV").is_visible()
    if email.startswith("owner"):
        shots(page, "40-audit-custody-default", tmp_path)

    page.get_by_role("link", name="Show all events").click()
    page.wait_for_url("**/audit?all=1")
    assert "Showing all events: 62 events." in " ".join(view.inner_text().split())
    assert page.locator("tbody tr").count() == 20
    assert page.locator("tbody tr").first.get_attribute("id") == "event-62"
    if email.startswith("owner"):
        shots(page, "41-audit-all-events", tmp_path)

    pager = page.get_by_role("navigation", name="Pages")
    pager.get_by_role("link", name="Next").click()
    assert page.locator("tbody tr").first.get_attribute("id") == "event-42"
    pager.get_by_role("link", name="Last").click()
    assert page.locator("tbody tr").first.get_attribute("id") == "event-20"
    assert pager.get_by_role("link", name="Next").count() == 0
    pager.get_by_role("link", name="Previous").click()
    assert page.locator("tbody tr").first.get_attribute("id") == "event-40"
    pager.get_by_role("link", name="First").click()
    assert page.locator("tbody tr").first.get_attribute("id") == "event-62"
    assert pager.get_by_role("link", name="Previous").count() == 0

    page.get_by_role("link", name="Show key custody events only").click()
    page.wait_for_url("**/audit?types=custody")
    assert page.locator("tbody tr").count() == 2


def test_audit_with_no_custody_events_says_when_they_appear(
    live_server: Any, page: Any, tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    _uploads(tenant, 3)
    base = live_server.url
    sign_in(page, base, "owner@acme.test")
    page.goto(f"{base}/audit")
    empty = page.locator(".audit-empty")
    assert "No key custody events yet." in empty.inner_text()
    shots(page, "44-audit-custody-empty", tmp_path)
    empty.get_by_role("link", name="Show all events").click()
    assert page.locator("tbody tr").count() == 3
    page.goto(f"{base}/audit")
    page.locator(".audit-empty").get_by_role("link", name="Manage keys on Encryption").click()
    page.wait_for_url("**/encryption")


def test_members_cannot_open_audit_or_a_walk(
    live_server: Any, page: Any, tenant: Tenant, owner: Any, member: Any
) -> None:
    job = _custody(tenant, owner)["job"]
    base = live_server.url
    sign_in(page, base, "member@acme.test")
    assert page.goto(f"{base}/audit").status == 403
    assert page.goto(f"{base}/audit/export.jsonl").status == 403
    assert page.goto(f"{base}/encryption/rewrap/{job.pk}").status == 403


@pytest.mark.parametrize("email", ["owner@acme.test", "admin@acme.test"])
def test_the_key_history_pages_and_links_each_rotation_to_its_walk(
    live_server: Any,
    page: Any,
    tenant: Tenant,
    owner: Any,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    email: str,
) -> None:
    made = _custody(tenant, owner)
    key, job, event = made["key"], made["job"], made["event"]
    for i in range(2, 7):  # five registrations that failed, after the rotation
        TenantKey.objects.create(
            tenant=tenant,
            wrap_method=WrapMethod.CUSTOMER_KMS_AWS,
            key_id=ARN.format(i),
            canonical_id=ARN.format(i),
            status=KeyStatus.FAILED,
            last_verify_error="AccessDeniedException: the role may not call kms:Decrypt",
        )
    monkeypatch.setattr(history, "PAGE_SIZE", 3)  # the live server runs in this process
    base = live_server.url
    sign_in(page, base, email)
    page.goto(f"{base}/encryption")
    rows = page.locator("section[aria-labelledby=history] tbody tr")
    assert rows.count() == 3
    pager = page.get_by_role("navigation", name="Key history pages")
    pager.get_by_role("link", name="Last").click()
    assert rows.count() == 3
    row = page.locator(f"tr#key-{key.pk}")
    assert row.get_by_role("link", name=f"Re-wrap #{job.pk}").is_visible()
    assert "completed, 20,000 of 20,000 data keys" in row.inner_text()
    assert pager.get_by_role("link", name="Next").count() == 0
    if email.startswith("owner"):
        row.scroll_into_view_if_needed()
        shots(page, "43-key-history-pages", tmp_path)

    row.get_by_role("link", name=f"Re-wrap #{job.pk}").click()
    page.wait_for_url(f"**/encryption/rewrap/{job.pk}")
    summary = " ".join(page.locator(".rewrap-summary").inner_text().split())
    assert summary.startswith(
        "Re-wrapped 20,000 data keys from key version 1 to 2 in 2.6 s (7,692 per second)"
    )
    if email.startswith("owner"):
        shots(page, "42-rewrap-summary", tmp_path)
    page.get_by_role("link", name=f"audit event #{event.seq}").click()
    page.wait_for_url("**/audit?types=custody&after=*")
    assert page.locator(f"tr#event-{event.seq} .audit-diff-chip").is_visible()
    page.go_back()
    page.get_by_role("link", name=key.label).first.click()
    page.wait_for_url(f"**/encryption/keys/{key.pk}")
