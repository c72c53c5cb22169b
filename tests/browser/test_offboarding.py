"""In Chromium: an owner schedules the tenant's deletion from the overview (a mistyped name is refused), every
page then shows the date, a member's upload is refused with the read-only message and the member cannot
cancel; the owner cancels and uploads work again; the owner exports the files as a zip and downloads part 1
through the browser. Desktop and phone screenshots, with no sideways scrolling at 390 px."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core import mail

from audit import signing, verify_bundle
from blobs.models import Blob
from offboarding.models import DeletionRequest, DeletionStatus, ExportPart, PartStatus
from tenants.lifecycle import due_text
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob
from tests.browser.test_custody import _WIDEST, PHONE, shots
from tests.browser.test_shell import sign_in
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every page a signed-in owner reaches from the navigation and the overview.
OWNER_PAGES = ["/", "/blobs", "/blobs/upload", "/api-tokens", "/encryption", "/audit", "/members", "/export"]


def fits_phone(page: Any, what: str) -> None:
    """At 390 px nothing makes ``page`` scroll sideways (what ``shots`` checks, without a screenshot)."""
    page.set_viewport_size(PHONE)
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, (
        f"{what}: the page scrolls sideways by {wide} px at 390 px wide: {page.evaluate(_WIDEST)}"
    )
    page.set_viewport_size({"width": 1280, "height": 900})


def banner(page: Any) -> Any:
    return page.locator(".banner").filter(has_text="will be erased on")


def upload_through_the_page(page: Any, name: str, data: bytes) -> Any:
    """Send ``name`` with the upload page's script; the row it adds to the progress list."""
    page.get_by_label("Choose files").set_input_files(
        [{"name": name, "mimeType": "text/plain", "buffer": data}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    row = page.locator(".blobs-progress-item.is-done, .blobs-progress-item.is-failed", has_text=name)
    row.wait_for()
    return row


def test_an_owner_schedules_and_cancels_the_deletion_then_exports(
    live_server: Any,
    browser: Any,
    page: Any,
    owner: Any,
    member: Any,
    tenant: Tenant,
    blob_root: Path,
    tmp_path: Path,
) -> None:
    contents = {
        "q3-report.pdf": os.urandom(40_000),
        "minutes 2026-11-03.txt": b"Present: everyone.\n" * 50,
        "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    }
    make_blob(owner, contents["q3-report.pdf"], name="q3-report.pdf")
    make_blob(member, contents["minutes 2026-11-03.txt"], name="minutes 2026-11-03.txt")
    make_blob(member, contents["logo.svg"], name="logo.svg")
    base = live_server.url

    # The member has the upload page open before anything happens: its form is still there afterwards.
    member_context = browser.new_context()
    try:
        member_page = member_context.new_page()
        member_page.set_default_timeout(15_000)
        sign_in(member_page, base, "member@acme.test")
        member_page.goto(f"{base}/blobs/upload")

        # 1. The owner finds the page from the overview and reads what will happen.
        sign_in(page, base, "owner@acme.test")
        page.get_by_role("link", name="Tenant deletion").click()
        page.wait_for_url(f"{base}/tenant/deletion")
        explanation = page.locator(
            "section", has=page.get_by_role("heading", name="Before you delete Acme Corp")
        )
        assert "destroys the tenant's keys and data keys first" in explanation.inner_text()
        assert "signed erasure certificate" in explanation.inner_text()
        assert banner(page).count() == 0
        shots(page, "18-deletion-explained", tmp_path)

        # A name that is not the tenant's exact name is refused on the field; nothing is scheduled.
        page.get_by_label("Waiting period (days)").fill("7")
        page.get_by_label("Tenant name").fill("Acme")
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Schedule deletion of Acme Corp").click()
        field = page.locator(".field", has=page.get_by_label("Tenant name"))
        assert (
            "That is not the tenant's name. Type Acme Corp exactly." in field.locator(".error").inner_text()
        )
        assert page.get_by_role("alert").filter(has_text="Type Acme Corp exactly").count() == 1
        fits_phone(page, "the refused confirmation")
        tenant.refresh_from_db()
        assert tenant.state == TenantState.ACTIVE and tenant.deletion_due_at is None
        assert not DeletionRequest.objects.exists()

        page.get_by_label("Waiting period (days)").fill("7")
        page.get_by_label("Tenant name").fill("Acme Corp")
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Schedule deletion of Acme Corp").click()
        page.wait_for_url(f"{base}/tenant/deletion")
        tenant.refresh_from_db()
        scheduled = DeletionRequest.objects.get()
        assert tenant.state == TenantState.DELETION_SCHEDULED
        assert scheduled.waiting_days == 7 and scheduled.due_at - scheduled.requested_at == timedelta(days=7)
        due = due_text(tenant.deletion_due_at)  # "4 January 2027 at 09:30 UTC"
        assert page.get_by_role("heading", name=f"Acme Corp will be erased on {due}").is_visible()
        assert "Deletion scheduled. The owners are being e-mailed" in page.locator(".messages").inner_text()
        assert due in banner(page).inner_text() and "Until then it is read-only" in banner(page).inner_text()
        # On this page the banner does not link to itself.
        assert banner(page).get_by_role("link").count() == 0
        assert page.get_by_role("button", name="Cancel the deletion").is_visible()
        assert [m.to for m in mail.outbox] == [["owner@acme.test"]]
        shots(page, "19-deletion-scheduled", tmp_path)

        # 2. Every page the owner opens names the date and links to the way out.
        for path in OWNER_PAGES:
            page.goto(f"{base}{path}")
            assert due in banner(page).inner_text(), path
            assert (
                banner(page).get_by_role("link", name="Cancel the deletion or see the details").is_visible()
            )
            fits_phone(page, path)

        # The member's open upload page: the upload is refused and the row says why.
        row = upload_through_the_page(member_page, "late.txt", b"too late")
        assert "is-failed" in (row.get_attribute("class") or "")
        assert f"scheduled for deletion on {due} and is read-only" in row.inner_text()
        assert "nothing can be uploaded" in row.inner_text()
        fits_phone(member_page, "the refused upload")
        # Opened again, the upload page offers no form; /blobs has no upload link and no delete buttons.
        member_page.goto(f"{base}/blobs/upload")
        assert "Uploads are closed." in member_page.locator("main").inner_text()
        assert member_page.get_by_label("Choose files").count() == 0
        member_page.goto(f"{base}/blobs")
        assert due in banner(member_page).inner_text()
        assert "An owner can export every file or cancel the deletion." in banner(member_page).inner_text()
        assert member_page.locator("a[href='/tenant/deletion']").count() == 0
        assert member_page.get_by_role("link", name="Upload files").count() == 0
        assert member_page.get_by_role("link", name="Delete logo.svg").count() == 0
        assert not Blob.objects.filter(name="late.txt").exists()
        shots(member_page, "20-member-read-only", tmp_path)
        shots(member_page, "21-member-read-only", tmp_path)  # its phone screenshot is the committed one
        assert member_page.goto(f"{base}/tenant/deletion").status == 403

        # 3. The owner cancels from the banner; the banner goes for everyone and uploads work again.
        page.goto(f"{base}/blobs")
        banner(page).get_by_role("link", name="Cancel the deletion or see the details").click()
        page.wait_for_url(f"{base}/tenant/deletion")
        page.get_by_role("button", name="Cancel the deletion").click()
        page.wait_for_url(f"{base}/tenant/deletion")
        assert page.get_by_text("The deletion is cancelled. Acme Corp is active again.").is_visible()
        assert banner(page).count() == 0
        assert page.get_by_role("button", name="Schedule deletion of Acme Corp").is_visible()
        scheduled.refresh_from_db()
        assert scheduled.status == DeletionStatus.CANCELLED
        page.goto(f"{base}/blobs")
        assert banner(page).count() == 0

        member_page.goto(f"{base}/blobs")
        assert banner(member_page).count() == 0
        assert member_page.get_by_role("link", name="Delete logo.svg").is_visible()
        member_page.get_by_role("link", name="Upload files").click()
        member_page.wait_for_url(f"{base}/blobs/upload")
        contents["after-cancel.txt"] = b"uploaded once the deletion was cancelled\n"
        row = upload_through_the_page(member_page, "after-cancel.txt", contents["after-cancel.txt"])
        assert row.get_by_role("link", name="Uploaded after-cancel.txt").is_visible()
        assert Blob.objects.filter(name="after-cancel.txt").exists()
    finally:
        member_context.close()

    # 4. The owner exports every file as a zip and downloads part 1 through the browser.
    page.goto(f"{base}/")
    page.get_by_role("link", name="Export").click()
    page.wait_for_url(f"{base}/export")
    assert page.get_by_label("zip (opens everywhere)").is_checked()
    fits_phone(page, "/export")
    page.get_by_role("button", name="Make export").click()
    page.wait_for_url(f"{base}/export/*")
    part_row = page.locator("#export-parts tbody tr")
    assert part_row.count() == 1
    cells = part_row.locator("td").all_inner_texts()
    assert cells[:2] == ["1 of 1", "4"] and "not downloaded yet" in cells[3]
    assert page.get_by_text("4 files,").is_visible()

    with page.expect_download() as info:
        page.get_by_role("link", name="Download part 1").click()
    download = info.value
    assert download.suggested_filename.startswith("kodori-export-acme-")
    assert download.suggested_filename.endswith("-part1.zip")
    saved = tmp_path / "part1.zip"
    download.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        assert {"manifest.jsonl", "README.txt", "audit-evidence.zip"} <= names
        assert {n for n in names if n.startswith("files/")} == {f"files/{n}" for n in contents}
        for name, data in contents.items():
            assert archive.read(f"files/{name}") == data, name
        lines = [orjson.loads(line) for line in archive.read("manifest.jsonl").splitlines()]
        (tmp_path / "audit-evidence.zip").write_bytes(archive.read("audit-evidence.zip"))
    assert lines[0]["record"] == "header" and lines[0]["tenant"]["slug"] == "acme"
    assert {line["name"]: line["sha256"] for line in lines if line["record"] == "file"} == {
        name: hashlib.sha256(data).hexdigest() for name, data in contents.items()
    }
    assert lines[-1]["record"] == "end" and (lines[-1]["files"], lines[-1]["skipped"]) == (4, 0)
    # The evidence in part 1 verifies offline and tells the story: scheduled, cancelled, exported.
    with zipfile.ZipFile(tmp_path / "audit-evidence.zip") as evidence:
        events = [orjson.loads(line) for line in evidence.read("bundle.jsonl").splitlines()]
    types = [e["type"] for e in events if e["record"] == "event"]
    assert [t for t in types if t.startswith("tenant.")] == [
        "tenant.deletion-scheduled",
        "tenant.deletion-cancelled",
        "tenant.exported",
    ]
    args = [
        str(tmp_path / "audit-evidence.zip"),
        "--public-key",
        signing.public_key_b64(),
        "--require-signatures",
    ]
    with contextlib.redirect_stdout(io.StringIO()) as report:
        assert verify_bundle.main(args) == 0, report.getvalue()

    # The part now reads "downloaded" (the server marks it once the last byte is sent).
    part = ExportPart.objects.get()
    for _ in range(50):
        part.refresh_from_db()
        if part.status != PartStatus.STREAMING:
            break
        page.wait_for_timeout(100)
    assert part.status == PartStatus.COMPLETE
    page.reload()
    assert "downloaded" in page.locator("#export-parts tbody tr td").nth(3).inner_text()
    assert "not downloaded yet" not in page.locator("#export-parts").inner_text()
    shots(page, "22-export-downloaded", tmp_path)
