"""In Chromium: a member walks the pages of a long file list (First / Previous / Next / Last, keyset cursors
in the links), sorted and searched, at desktop and phone width. Screenshots of the list in between."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.blobs.support import make_blob
from tests.browser.test_custody import shots
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def names(page: Any) -> list[str]:
    return [
        name.strip() for name in page.locator("table.blobs-table tbody td:first-child a").all_inner_texts()
    ]


def pager_links(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("nav.blobs-pager a").all_inner_texts()]


@pytest.mark.parametrize("width", [1280, 390])
def test_a_member_pages_through_files_both_ways_and_searches(
    live_server: Any, page: Any, member: Any, blob_root: Path, settings: Any, tmp_path: Path, width: int
) -> None:
    settings.BLOB_PAGE_SIZE = 3
    for i in range(8):
        make_blob(member, b"x" * (i + 1), name=f"report-{i:02d}.pdf")
    make_blob(member, b"other", name="holiday.jpg")
    base = live_server.url
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, base, "member@acme.test")
    page.goto(f"{base}/blobs?sort=name")
    assert names(page) == ["holiday.jpg", "report-00.pdf", "report-01.pdf"]
    assert pager_links(page) == ["Next", "Last"]
    assert "9 files;" in page.locator("main").inner_text()
    if width == 1280:
        shots(page, "23-files-first-page", tmp_path)

    page.get_by_role("link", name="Next").click()
    assert names(page) == ["report-02.pdf", "report-03.pdf", "report-04.pdf"]
    assert pager_links(page) == ["First", "Previous", "Next", "Last"]
    page.get_by_role("link", name="Next").click()
    assert names(page) == ["report-05.pdf", "report-06.pdf", "report-07.pdf"]
    assert pager_links(page) == ["First", "Previous"]  # the last page: nowhere further to go
    page.get_by_role("link", name="Previous").click()
    assert names(page) == ["report-02.pdf", "report-03.pdf", "report-04.pdf"]
    page.get_by_role("link", name="First").click()
    assert names(page) == ["holiday.jpg", "report-00.pdf", "report-01.pdf"]
    page.get_by_role("link", name="Last").click()
    assert names(page) == ["report-05.pdf", "report-06.pdf", "report-07.pdf"]

    # Sorting by size starts again from the first page of that order.
    page.get_by_role("link", name="Size").click()
    assert names(page) == ["report-00.pdf", "report-01.pdf", "report-02.pdf"]
    assert "smallest first" in page.locator("nav.blobs-pager").inner_text()

    page.get_by_label("Search by name").fill("REPORT")
    page.get_by_role("button", name="Search").click()
    assert "8 files match “REPORT”" in page.locator("main").inner_text()
    assert names(page) == ["report-00.pdf", "report-01.pdf", "report-02.pdf"]
    page.get_by_role("link", name="Next").click()
    assert names(page) == ["report-03.pdf", "report-04.pdf", "report-05.pdf"]
    if width == 390:
        shots(page, "24-files-search-page-2", tmp_path)
