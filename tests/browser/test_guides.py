"""In Chromium: the guides are one click away and read well at 1280 px and 390 px (issue 20, items 4 and 1).

Anyone reaches the guides from the footer of the sign-in page; an owner goes from the AWS registration page
straight to the guide's section on the role to create; an admin from the audit log's verification help to the
offline verification of an evidence bundle; a member's home says "Files", offers only what a member may use,
and shows sizes in KiB. Screenshots 30 to 34, desktop and phone; no page scrolls sideways at 390 px (code
blocks and tables scroll inside their own boxes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kodori.guides.catalogue import GUIDES
from tests.blobs.support import make_blob
from tests.browser.test_custody import PHONE, shots
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def in_view(page: Any, anchor: str) -> bool:
    """The heading ``anchor`` is on screen (the browser scrolled to the section)."""
    return bool(
        page.evaluate(
            "id => { const r = document.getElementById(id).getBoundingClientRect();"
            " return r.top >= 0 && r.top < innerHeight; }",
            anchor,
        )
    )


def section_shots(page: Any, url: str, name: str, tmp_path: Path) -> None:
    """What a reader sees on opening ``url`` (a guide, at a section or not) at 1280 px and at 390 px: the
    viewport, not the whole page (a guide is metres long); no sideways scroll at either width."""
    target = Path(os.environ.get("KODORI_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    for size, suffix in (({"width": 1280, "height": 900}, ""), (PHONE, "-phone")):
        page.set_viewport_size(size)
        page.goto(url)
        page.screenshot(path=str(target / f"{name}{suffix}.png"))
        assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0, (name, size)
    page.set_viewport_size({"width": 1280, "height": 900})


def own_scroll_boxes(page: Any) -> list[str]:
    """Code blocks and tables wider than the page: each scrolls inside itself and takes keyboard focus."""
    return list(
        page.evaluate(
            """[...document.querySelectorAll('.guide pre, .guide .guide-table')]
              .filter(e => e.scrollWidth > e.clientWidth)
              .map(e => getComputedStyle(e).overflowX + ' ' + e.getAttribute('tabindex'))"""
        )
    )


def test_anyone_reads_the_guides_from_the_sign_in_page(live_server: Any, page: Any, tmp_path: Path) -> None:
    base = live_server.url
    page.goto(f"{base}/accounts/login/")
    page.get_by_role("contentinfo").get_by_role("link", name="Guides").click()
    page.wait_for_url(f"{base}/guides/")
    assert page.get_by_role("heading", level=1).inner_text() == "Guides"
    for title in ("AWS KMS", "Azure Key Vault", "GCP Cloud KMS", "The audit log", "The files API"):
        assert page.get_by_role("link", name=title).is_visible()
    shots(page, "30-guides-index", tmp_path)

    page.get_by_role("link", name="AWS KMS").click()
    page.wait_for_url(f"{base}/guides/byok-aws")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Bring your own key: AWS KMS")
    assert page.title().startswith("AWS KMS · Guides")
    page.get_by_text("On this page").click()
    page.get_by_role("link", name="The kill switch: revoking Kodori's access").click()
    assert page.url.endswith("#the-kill-switch-revoking-kodoris-access")
    assert in_view(page, "the-kill-switch-revoking-kodoris-access")
    # A link to another guide goes to its page; repository files are not links at all.
    assert page.locator('a[href="/guides/byok-azure"]').count() >= 1
    assert page.locator('.guide a[href*=".md"], .guide a[href*="../"]').count() == 0
    page.set_viewport_size(PHONE)
    boxes = own_scroll_boxes(page)
    assert boxes and all(box in ("auto 0", "scroll 0") for box in boxes), boxes
    for guide in GUIDES:  # every guide, whole, at 390 px: nothing wider than the screen but inside its box
        page.goto(f"{base}/guides/{guide.slug}")
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"/guides/{guide.slug} scrolls sideways by {wide} px at 390 px"
    section_shots(page, f"{base}/guides/byok-aws", "31-guide-aws", tmp_path)

    response = page.goto(f"{base}/guides/architecture")
    assert response is not None and response.status == 404


def test_an_owner_goes_from_registration_to_the_guides_section(
    live_server: Any, page: Any, owner: Any, tmp_path: Path
) -> None:
    base = live_server.url
    sign_in(page, base, "owner@acme.test")
    for width in (1280, PHONE["width"]):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{base}/encryption/register/aws")
        assert page.get_by_text("docs/").count() == 0
        page.get_by_role("link", name="AWS KMS guide, “Step 2: the role Kodori assumes”").click()
        page.wait_for_url(f"{base}/guides/byok-aws#step-2-the-role-kodori-assumes")
        assert in_view(page, "step-2-the-role-kodori-assumes")
    page.set_viewport_size({"width": 1280, "height": 900})
    # The account menu offers the guides too.
    page.locator("details.usermenu summary").click()
    assert page.locator("details.usermenu").get_by_role("link", name="Guides").is_visible()
    section_shots(
        page, f"{base}/guides/byok-aws#step-2-the-role-kodori-assumes", "32-guide-aws-step-2", tmp_path
    )


def test_an_admin_goes_from_the_audit_log_to_offline_verification(
    live_server: Any, page: Any, admin: Any, tmp_path: Path
) -> None:
    base = live_server.url
    sign_in(page, base, "admin@acme.test")
    for width in (1280, PHONE["width"]):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{base}/audit")
        page.get_by_role("link", name="how to verify it offline").click()
        page.wait_for_url(f"{base}/guides/audit#for-auditors-verifying-an-export-offline")
        assert in_view(page, "for-auditors-verifying-an-export-offline")
    page.set_viewport_size({"width": 1280, "height": 900})
    section_shots(
        page,
        f"{base}/guides/audit#for-auditors-verifying-an-export-offline",
        "34-guide-audit-verify",
        tmp_path,
    )


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_members_home_says_files_and_offers_only_what_they_may_use(
    role: str, live_server: Any, page: Any, request: pytest.FixtureRequest, blob_root: Path, tmp_path: Path
) -> None:
    user = request.getfixturevalue(role)
    make_blob(user if role == "member" else request.getfixturevalue("owner"), data=bytes(5 * 1024 + 300))
    base = live_server.url
    sign_in(page, base, user.email)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Files").is_visible()
    assert nav.get_by_text("Blobs").count() == 0
    tiles = page.locator("ul.tiles")
    assert [t.strip() for t in tiles.locator("strong").all_inner_texts()] == ["Files", "API tokens", "Guides"]
    files = tiles.locator('a[href="/blobs"]').inner_text()
    assert ("Upload" in files) is (role == "member")
    if role == "member":
        shots(page, "33-home-member", tmp_path)
    tiles.locator('a[href="/blobs"]').click()
    page.wait_for_url(f"{base}/blobs")
    assert page.get_by_text("5.3 KiB").first.is_visible()
    assert page.get_by_text(" KB").count() == 0
