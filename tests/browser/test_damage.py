"""In Chromium: what each role sees when something other than a key is wrong. A file damaged in storage is
named on /blobs (banner and row) and on its own page, and its download is Kodori's error page; a broken audit
chain is reported on /audit until an owner acknowledges it with a reason (an admin reads it, cannot
acknowledge). Desktop and phone screenshots of each, with no sideways scrolling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from audit import services as audit_services
from audit.models import AuditEvent
from blobs.models import Blob
from tenants.models import Tenant
from tests.audit.conftest import fill, raw
from tests.blobs.support import make_blob
from tests.browser.test_custody import shots
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _flip_middle(root: Path, blob: Blob) -> None:
    path = root / blob.storage_key
    data = bytearray(path.read_bytes())
    data[61 + 16400 + 100] ^= 1  # chunk 1
    path.write_bytes(bytes(data))


def test_a_damaged_file_is_named_everywhere_and_never_served(
    live_server: Any, page: Any, member: Any, tenant: Tenant, blob_root: Path, tmp_path: Path
) -> None:
    whole = make_blob(member, b"w" * 1000, name="whole.txt")
    damaged = make_blob(member, bytes(range(256)) * 200, name="ledger-2026.csv")
    _flip_middle(blob_root, damaged)
    base = live_server.url
    sign_in(page, base, "member@acme.test")

    # The download meets the damage: Kodori's own error page, status 500, and nothing of the file.
    response = page.goto(f"{base}/blobs/{damaged.pk}/download")
    assert response is not None and response.status == 500
    assert "damaged in storage" in page.content()
    shots(page, "13-damaged-download", tmp_path)

    page.goto(f"{base}/blobs")
    banner = page.get_by_role("alert").filter(has_text="damaged")
    assert "ledger-2026.csv" in banner.inner_text()
    row = page.locator("tr", has_text="ledger-2026.csv")
    assert "Damaged" in row.inner_text()
    assert "Damaged" not in page.locator("tr", has_text="whole.txt").inner_text()
    shots(page, "14-damaged-list", tmp_path)

    page.goto(f"{base}/blobs/{damaged.pk}")
    notice = page.get_by_role("alert").filter(has_text="damaged in storage")
    assert "chunk 1" in notice.inner_text()
    shots(page, "15-damaged-file", tmp_path)

    page.goto(f"{base}/blobs/{whole.pk}")
    assert page.get_by_role("alert").filter(has_text="damaged in storage").count() == 0


def test_a_broken_chain_is_reported_until_an_owner_acknowledges_it(
    live_server: Any, page: Any, owner: Any, admin: Any, tenant: Tenant, blob_root: Path, tmp_path: Path
) -> None:
    fill(tenant, 8)
    audit_services.verify_chains(tenant=tenant)
    original = AuditEvent.objects.for_tenant(tenant).get(seq=4).actor_name
    edit = "UPDATE audit_auditevent SET actor_name = %s WHERE tenant_id = %s AND seq = 4"
    raw(edit, ["Mallory", tenant.pk])
    audit_services.verify_chains(tenant=tenant)  # the periodic full verification finds it
    raw(edit, [original, tenant.pk])
    base = live_server.url

    # The row was put back, but the break stays reported. An admin reads it, and is told who can acknowledge.
    sign_in(page, base, "admin@acme.test")
    page.goto(f"{base}/audit")
    assert "#4" in page.content()
    assert page.get_by_role("button", name="Acknowledge this break").count() == 0
    page.context.clear_cookies()

    sign_in(page, base, "owner@acme.test")
    page.goto(f"{base}/audit")
    assert page.get_by_role("button", name="Acknowledge this break").count() == 1
    shots(page, "16-audit-break", tmp_path)
    page.get_by_label("Reason").fill("Restored from the 2026-12-03 backup; ticket SEC-42.")
    page.get_by_role("button", name="Acknowledge this break").click()
    page.wait_for_url(f"{base}/audit*")
    content = page.content()
    assert "acknowledged break" in content and "SEC-42" in content
    assert page.get_by_role("button", name="Acknowledge this break").count() == 0
    shots(page, "17-audit-break-acknowledged", tmp_path)
