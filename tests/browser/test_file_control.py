"""In Chromium: uploads and downloads a person can control, on /blobs and the upload page (issue 20, item 5).

* Cancel an upload in progress (the browser's upload throttled, so the press lands mid-body): the row says
  it was cancelled, and the database and the store hold nothing of it; the other uploads go on.
* Drop files anywhere on the list page: an overlay while they are dragged over it, then each file's progress
  and a way to see them in the list. A viewer's page takes no drop.
* Tick files with the keyboard (or all of the page) and download them as one zip: every member byte for byte.
  A file damaged since the page was shown refuses the archive with a page that names it.
* The time column says "Added" and shows the time the list is sorted by; an empty list says what it is for.

Owners, admins and members (and viewers where they see the page) at 1280 and 390 px; screenshots 35-39.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blobs.models import Blob, BlobStatus
from encryption.models import DataKey
from tests.blobs.support import FileStore, make_blob, pattern, stored_files
from tests.browser.test_custody import PHONE, shots
from tests.browser.test_every_page import axe_violations
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
UPLOADERS = ["owner", "admin", "member"]
SCREENSHOT_ROLE = "member"


@pytest.fixture(autouse=True)
def _blobs_here(blob_root: Path) -> None:
    """Blob objects of these tests in a directory of their own, to check what the store holds."""


def _user(request: Any, role: str) -> Any:
    return request.getfixturevalue(role)


def _look(page: Any, name: str, tmp_path: Path, role: str, *, save: bool | None = None) -> None:
    """Screenshots (desktop and phone) for one role (``save``; the member's by default); for every role, no
    sideways scroll at 390 px and no serious or critical axe-core violation at either width."""
    if role == SCREENSHOT_ROLE if save is None else save:
        shots(page, name, tmp_path)
    for viewport in (PHONE, {"width": 1280, "height": 900}):
        page.set_viewport_size(viewport)
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{name} ({role}): scrolls sideways by {wide} px at {viewport['width']} px"
        assert axe_violations(page) == [], f"{name} ({role}) at {viewport['width']} px"


def _throttle_uploads(page: Any, bytes_per_second: int) -> None:
    """Chromium's own network emulation: request bodies leave the browser at this rate."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second},
    )


def _wait(page: Any, condition: Any, what: str, timeout_ms: int = 15_000) -> None:
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    assert condition(), what


# --- Cancel -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", UPLOADERS)
def test_cancelling_an_upload_mid_way_leaves_nothing_of_it(
    live_server: Any, page: Any, request: Any, role: str, blob_root: Path, tmp_path: Path
) -> None:
    _user(request, role)
    base = live_server.url
    sign_in(page, base, f"{role}@acme.test")
    page.goto(f"{base}/blobs/upload")
    _throttle_uploads(page, 512 * 1024)  # 6 MiB: about 12 s each, so Cancel lands mid-body
    page.get_by_label("Choose files").set_input_files(
        [
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"short and done"},
            {"name": "cancel-me.mov", "mimeType": "video/quicktime", "buffer": os.urandom(6 * MIB)},
            {"name": "keep-going.iso", "mimeType": "application/octet-stream", "buffer": os.urandom(6 * MIB)},
        ]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_role("link", name="Uploaded notes.txt").wait_for()

    bar = page.get_by_role("progressbar", name="Upload of cancel-me.mov")
    _wait(
        page,
        lambda: (
            Blob.objects.filter(name="cancel-me.mov", status=BlobStatus.UPLOADING).exists()
            and int(bar.get_attribute("value") or 0) > 0
        ),
        "the upload never got under way",
    )
    assert int(bar.get_attribute("value") or 0) < 100
    page.get_by_role("button", name="Cancel the upload of cancel-me.mov").click()
    row = page.locator(".blobs-progress-item", has_text="cancel-me.mov")
    row.get_by_text("Cancelled; nothing was stored.").wait_for()
    assert row.get_by_role("button").count() == 0  # no Cancel left on a cancelled row
    # The server saw the request end short of its length and threw the partial file away at once.
    _wait(page, lambda: not Blob.objects.filter(name="cancel-me.mov").exists(), "its row stayed", 5_000)
    keep = page.get_by_role("progressbar", name="Upload of keep-going.iso")
    _wait(page, lambda: int(keep.get_attribute("value") or 0) > 0, "the second upload did not start")
    assert page.get_by_role("button", name="Cancel the upload of keep-going.iso").is_visible()
    _look(page, "36-upload-cancel", tmp_path, role)

    # Cancel the other one too: only notes.txt is left, in the database and in the store.
    page.get_by_role("button", name="Cancel the upload of keep-going.iso").click()
    page.locator(".blobs-progress-item", has_text="keep-going.iso").get_by_text("Cancelled").wait_for()
    _wait(
        page,
        lambda: (
            list(Blob.objects.values_list("name", "status")) == [("notes.txt", BlobStatus.READY)]
            and DataKey.objects.count() == 1
            and len(stored_files(blob_root)) == 1
        ),
        "something of a cancelled upload is left",
        5_000,
    )
    page.goto(f"{base}/blobs")
    table = page.locator("table.blobs-table")
    assert "notes.txt" in table.inner_text()
    assert "cancel-me" not in table.inner_text() and "keep-going" not in table.inner_text()


# --- Drop anywhere on the list ------------------------------------------------------------------------------

DRAG = """([kind, x, y, files]) => {
  const transfer = new DataTransfer();
  for (const [name, text] of files) transfer.items.add(new File([text], name, {type: 'text/plain'}));
  const target = document.elementFromPoint(x, y);
  target.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true,
                                            clientX: x, clientY: y}));
  return target.tagName;
}"""


def _drag(page: Any, kind: str, x: int, y: int, files: list[tuple[str, str]]) -> str:
    return str(page.evaluate(DRAG, [kind, x, y, files]))


@pytest.mark.parametrize("role", UPLOADERS)
def test_files_dropped_anywhere_on_the_list_are_uploaded(
    live_server: Any, page: Any, request: Any, role: str, member: Any, tmp_path: Path
) -> None:
    _user(request, role)
    for n in range(3):
        make_blob(member, f"file {n}".encode(), name=f"existing-{n}.txt")
    base = live_server.url
    sign_in(page, base, f"{role}@acme.test")
    page.goto(f"{base}/blobs")
    overlay = page.locator("[data-drop-overlay]")
    assert overlay.is_hidden()
    files = [("dropped-a.txt", "first dropped file"), ("dropped-b.txt", "second dropped file")]

    # Dragged over a table cell at the bottom right, far from any drop zone: the whole page takes it.
    cell = page.locator("table.blobs-table tbody tr").last.locator("td").last.bounding_box()
    x, y = int(cell["x"] + cell["width"] / 2), int(cell["y"] + cell["height"] / 2)
    _drag(page, "dragenter", x, y, files)
    _drag(page, "dragover", x, y, files)
    assert overlay.is_visible()
    assert page.get_by_text("Drop the files to upload them to Acme Corp").is_visible()
    _look(page, "37-drop-overlay", tmp_path, role)
    _drag(page, "dragleave", x, y, files)
    assert overlay.is_hidden()  # dragged away again: the page is as it was

    _drag(page, "dragenter", x, y, files)
    _drag(page, "drop", x, y, files)
    assert overlay.is_hidden()
    page.get_by_role("link", name="Uploaded dropped-a.txt").wait_for()
    page.get_by_role("link", name="Uploaded dropped-b.txt").wait_for()
    assert page.get_by_role("progressbar", name="Upload of dropped-a.txt").get_attribute("value") == "100"
    assert {b.name: b.created_by_email for b in Blob.objects.filter(name__startswith="dropped-")} == {
        "dropped-a.txt": f"{role}@acme.test",
        "dropped-b.txt": f"{role}@acme.test",
    }
    page.get_by_role("link", name="Show the new files in the list").click()
    page.wait_for_url(f"{base}/blobs")
    names = [n.strip() for n in page.locator("table.blobs-table tbody tr td:first-child a").all_inner_texts()]
    assert names[:2] == ["dropped-b.txt", "dropped-a.txt"] or names[:2] == ["dropped-a.txt", "dropped-b.txt"]

    # Clicking and the keyboard still lead to the upload page.
    page.get_by_role("link", name="Upload files").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/blobs/upload")


def test_a_viewers_list_takes_no_drop(live_server: Any, page: Any, viewer: Any, member: Any) -> None:
    make_blob(member, b"read me", name="readme.txt")
    sign_in(page, live_server.url, "viewer@acme.test")
    page.goto(f"{live_server.url}/blobs")
    assert page.locator("[data-drop-overlay]").count() == 0
    files = [("sneaky.txt", "should not arrive")]
    _drag(page, "dragenter", 300, 300, files)
    _drag(page, "drop", 300, 300, files)
    page.wait_for_timeout(500)
    assert list(Blob.objects.values_list("name", flat=True)) == ["readme.txt"]
    assert page.get_by_role("link", name="Upload files").count() == 0


# --- Select and download as one archive --------------------------------------------------------------------


@pytest.mark.parametrize("role", [*UPLOADERS, "viewer"])
def test_selected_files_download_as_one_zip(
    live_server: Any, page: Any, request: Any, role: str, member: Any, tmp_path: Path
) -> None:
    _user(request, role)
    contents = {
        "report.pdf": pattern(2 * MIB + 17, seed=1),
        "photo.jpg": pattern(300_000, seed=2),
        "notes.txt": b"notes\n",
    }
    for name, data in contents.items():
        make_blob(member, data, name=name)
    make_blob(member, b"second report", name="report.pdf")  # the same name again: numbered in the zip
    base = live_server.url
    sign_in(page, base, f"{role}@acme.test")
    page.goto(f"{base}/blobs")

    headings = page.locator("table.blobs-table thead th").all_inner_texts()
    assert "Added ▼" in headings and not {"Uploaded", "Uploaded ▲", "Uploaded ▼"} & set(headings)
    # The column shows the time the list is sorted by (an upload's start), not its completion.
    notes = Blob.objects.get(name="notes.txt")
    Blob.objects.filter(pk=notes.pk).update(completed_at=notes.created_at + timedelta(days=400))
    page.reload()
    row = page.locator("table.blobs-table tbody tr", has_text="notes.txt")
    assert datetime.fromisoformat(row.locator("time").get_attribute("datetime")) == notes.created_at
    download = page.get_by_role("button", name="Download selected")
    assert download.is_disabled()  # nothing ticked yet

    # With the keyboard: Tab from the button to "select all", Space ticks every row of the page.
    download.evaluate("e => e.closest('form').querySelector('[data-select-all]').focus()")
    page.keyboard.press("Space")
    boxes = page.get_by_role("checkbox", name="Select", exact=False)
    assert page.get_by_role("checkbox", name="Select all files on this page").is_checked()
    assert page.get_by_text("4 files selected.").is_visible()
    # One row unticked with the keyboard: "select all" shows a partial state.
    page.get_by_role("checkbox", name="Select notes.txt").focus()
    page.keyboard.press("Space")
    assert not page.get_by_role("checkbox", name="Select notes.txt").is_checked()
    assert page.get_by_text("3 files selected.").is_visible()
    assert page.evaluate("document.querySelector('[data-select-all]').indeterminate")
    assert boxes.count() == 5  # four rows and "select all"
    _look(page, "35-files-selected", tmp_path, role)

    with page.expect_download() as info:
        download.click()
    archive_path = tmp_path / "selected.zip"
    info.value.save_as(archive_path)
    assert info.value.suggested_filename.startswith("acme-files-")
    assert info.value.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(archive_path) as archive:
        names = sorted(archive.namelist())
        assert names == ["photo.jpg", "report (2).pdf", "report.pdf"]
        got = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in names}
    reports = {
        hashlib.sha256(contents["report.pdf"]).hexdigest(),
        hashlib.sha256(b"second report").hexdigest(),
    }
    assert {got["report.pdf"], got["report (2).pdf"]} == reports
    assert got["photo.jpg"] == hashlib.sha256(contents["photo.jpg"]).hexdigest()


def test_a_file_damaged_since_the_list_was_shown_refuses_the_archive(
    live_server: Any, page: Any, member: Any, blob_root: Path, tmp_path: Path
) -> None:
    make_blob(member, b"fine", name="fine.txt")
    broken = make_blob(member, pattern(100_000), name="quarterly.xlsx")
    sign_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/blobs")
    page.get_by_role("checkbox", name="Select all files on this page").check()
    store = FileStore(blob_root)
    store.write(broken, store.read(broken)[:-5])  # truncated in storage after the page was shown
    page.get_by_role("button", name="Download selected").click()
    page.get_by_text("“quarterly.xlsx” is damaged in storage").wait_for()
    assert page.get_by_text("Nothing was sent").is_visible()
    _look(page, "39-archive-refused", tmp_path, "member")
    page.get_by_role("link", name="Back to the files").click()
    # Now marked: its box cannot be ticked, and the rest still downloads.
    assert page.get_by_role(
        "checkbox", name="quarterly.xlsx is damaged and cannot be downloaded"
    ).is_disabled()
    page.get_by_role("checkbox", name="Select all files on this page").check()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download selected").click()
    info.value.save_as(tmp_path / "rest.zip")
    with zipfile.ZipFile(tmp_path / "rest.zip") as archive:
        assert archive.namelist() == ["fine.txt"] and archive.read("fine.txt") == b"fine"


# --- The empty list -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [*UPLOADERS, "viewer"])
def test_an_empty_list_says_what_it_is_for_and_what_to_do(
    live_server: Any, page: Any, request: Any, role: str, tmp_path: Path
) -> None:
    _user(request, role)
    sign_in(page, live_server.url, f"{role}@acme.test")
    page.goto(f"{live_server.url}/blobs")
    empty = page.locator("section.blobs-empty")
    assert empty.get_by_role("heading", name="No files yet").is_visible()
    assert "This is where Acme Corp keeps its files" in empty.inner_text()
    if role == "viewer":
        assert empty.get_by_role("link", name="Upload the first files").count() == 0
        assert "once an owner, admin or member uploads them" in empty.inner_text()
        assert page.get_by_role("button", name="Download selected").count() == 0
    else:
        assert "or drop files anywhere on this page" in empty.inner_text()
        empty.get_by_role("link", name="Upload the first files").click()
        page.wait_for_url(f"{live_server.url}/blobs/upload")
        page.go_back()
    _look(page, "38-files-empty", tmp_path, role, save=role == "owner")
