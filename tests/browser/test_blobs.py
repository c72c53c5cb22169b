"""In Chromium: upload through the page (progress, several files, drag and drop), download byte-identical."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from blobs.models import Blob
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _private_blob_root(settings: Any, tmp_path: Path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "blobs.storage.BlobFileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "b")},
        },
    }


RECORD_PROGRESS = """
window.progressSeen = [];
new MutationObserver((records) => {
  for (const r of records)
    if (r.target.tagName === 'PROGRESS') window.progressSeen.push(Number(r.target.value));
}).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['value']});
"""

DROP_TWO_FILES = """
([a, b]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([a], 'dropped-a.txt', {type: 'text/plain'}));
  transfer.items.add(new File([b], 'dropped-b.txt', {type: 'text/plain'}));
  const zone = document.querySelector('[data-dropzone]');
  zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
  zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
}
"""


def test_a_member_uploads_with_progress_and_downloads_the_same_bytes(
    live_server: Any, page: Any, member: Any, tmp_path: Path
) -> None:
    base = live_server.url
    data = os.urandom(6 * 1024 * 1024 + 123)
    sign_in(page, base, "member@acme.test")
    page.goto(f"{base}/blobs")
    page.get_by_role("link", name="Upload files").click()
    page.wait_for_url(f"{base}/blobs/upload")
    page.evaluate(RECORD_PROGRESS)

    page.get_by_label("Choose files").set_input_files(
        [{"name": "photo.raw", "mimeType": "application/octet-stream", "buffer": data}]
    )
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("link", name="Uploaded photo.raw").wait_for()
    bar = page.get_by_role("progressbar", name="Upload of photo.raw")
    assert bar.get_attribute("value") == "100"
    seen = page.evaluate("window.progressSeen")
    assert seen and seen[-1] == 100 and all(0 <= v <= 100 for v in seen)

    # Two more at once, dropped onto the page.
    page.evaluate(DROP_TWO_FILES, ["first dropped file", "second dropped file"])
    page.get_by_role("link", name="Uploaded dropped-a.txt").wait_for()
    page.get_by_role("link", name="Uploaded dropped-b.txt").wait_for()
    assert sorted(Blob.objects.values_list("name", flat=True)) == [
        "dropped-a.txt",
        "dropped-b.txt",
        "photo.raw",
    ]

    page.get_by_role("link", name="Uploaded photo.raw").click()
    page.get_by_role("heading", name="photo.raw").wait_for()
    assert page.get_by_text("Key version 1").is_visible()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download", exact=True).click()
    download = info.value
    assert download.suggested_filename == "photo.raw"
    target = tmp_path / "downloaded"
    download.save_as(target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_refused_upload_shows_the_reason(live_server: Any, page: Any, member: Any, settings: Any) -> None:
    settings.BLOB_MAX_SIZE = 1000
    sign_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/blobs/upload")
    page.get_by_label("Choose files").set_input_files(
        [{"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 5000}]
    )
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("files may be at most 1000 bytes").first.wait_for()
    assert not Blob.objects.exists()
