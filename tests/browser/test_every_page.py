"""In Chromium: every page each role can reach, at desktop (1280 px) and phone (390 px) width, with a tenant
full of realistic data (files, an active AWS key from the emulators, a completed re-wrap, API tokens, an
export, audit events). On each page: nothing scrolls sideways, axe-core finds no serious or critical
violation, the title names the page and the tenant, and the page links the favicon.

The pages come from the access matrix (``tests/<app>/routes.py``): every GET route a role gets 200 for is
visited, so a new page is crawled as soon as its route is declared. A GET route that answers something other
than a page (a download, JSON, a fragment) must be listed in ``NOT_PAGES`` with the reason, or the crawl
fails. axe-core is vendored in ``tests/browser/vendor/`` (see its README)."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from django.urls import reverse

from emulators.dev import DevEmulators
from encryption import keyring, rewrap, services
from encryption.models import WrapMethod
from kodori import errors
from kodori.testing.access import Route, World
from tenants.models import Tenant
from tests.blobs.support import make_blob, make_token
from tests.browser.test_custody import shots
from tests.browser.test_shell import sign_in
from tests.encryption.rewrap.support import finish

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"  # axe-core 4.14.1, MPL-2.0 (vendor/README.md)
FAVICON = Path(__file__).parents[2] / "static" / "kodori" / "favicon.svg"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SIGNED_IN = ("owner", "admin", "member", "viewer")

# GET routes that are not pages, and why: the crawl skips them, and fails for any other GET route that does
# not answer a full HTML page (add it here, with the reason, if it is not meant to be one).
NOT_PAGES = {
    "healthz": "JSON for load balancers",
    "blobs:download": "a file download",
    "blobs:api_openapi": "the API's JSON document",
    "audit:export_csv": "a CSV download",
    "audit:export_jsonl": "a JSONL download",
    "audit:export_bundle": "a zip download",
    "offboarding:export_part": "an archive download",
    "encryption:key_status": "an htmx fragment of /encryption (a key's status cell, polled)",
}

# The first element whose box ends right of the viewport, outside boxes that scroll on their own.
WIDEST = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1
    && (!e.closest('.table-scroll, pre') || getComputedStyle(e).position === 'absolute'))
  .map(e => '<' + e.tagName.toLowerCase() + ' class="' + e.className + '"> '
    + (e.textContent || '').trim().slice(0, 40))[0] || ''"""

# Primary actions a phone user cannot see without scrolling a box sideways (a table's last column, say).
HIDDEN_ACTIONS = """[...document.querySelectorAll('.button.primary')]
  .filter(e => e.offsetParent !== null && e.getBoundingClientRect().right > innerWidth + 1)
  .map(e => (e.textContent || '').trim())"""

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map(n => n.target.join(' '))}));
}"""

FOCUS_STYLE = """e => {
  const s = getComputedStyle(e);
  return [s.outlineStyle, s.outlineWidth, s.outlineColor, s.boxShadow].join(' | ');
}"""


def all_routes() -> list[Route]:
    """Every route the apps declare (the access matrix's list)."""
    routes: list[Route] = []
    for path in sorted(Path(__file__).parents[1].glob("*/routes.py")):
        routes.extend(importlib.import_module(f"tests.{path.parent.name}.routes").ROUTES)
    return routes


@dataclass
class Crawl:
    """What one crawl saw: the problems found, and the pages visited (label → title)."""

    problems: list[str]
    titles: dict[str, str]


def axe_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one line each."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    return [
        f"axe {v['id']} ({v['impact']}): {v['help']} at {', '.join(v['targets'][:6])}"
        for v in page.evaluate(AXE_RUN)
        if v["impact"] in ("serious", "critical")
    ]


def sideways(page: Any) -> str:
    """Empty when the page fits the viewport's width; else by how much it does not, and what sticks out."""
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return f"scrolls sideways by {wide} px: {page.evaluate(WIDEST)}" if wide > 0 else ""


def title_problem(title: str, tenant_name: str | None) -> str:
    """Empty when ``title`` is "<page> · <tenant>" (or "<page> · Kodori" outside a tenant)."""
    suffix = tenant_name or "Kodori"
    page_name = title.removesuffix(f" · {suffix}")
    if page_name == title or not page_name.strip() or page_name in ("Kodori", tenant_name):
        return f"title {title!r} does not read '<page> · {suffix}'"
    return ""


def check_page(page: Any, label: str, tenant_name: str | None, crawl: Crawl) -> None:
    """Every check, at desktop then phone width, on the page already loaded in ``page``."""
    title = page.title()
    crawl.titles[label] = title
    found = [title_problem(title, tenant_name)]
    if page.locator("link[rel=icon][href$='favicon.svg']").count() != 1:
        found.append("no favicon link")
    for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        found.append(sideways(page) and f"{name}: {sideways(page)}")
        found.extend(f"{name}: primary action off screen: {text}" for text in page.evaluate(HIDDEN_ACTIONS))
        found.extend(f"{name}: {v}" for v in axe_violations(page))
    page.set_viewport_size(DESKTOP)
    crawl.problems.extend(f"{label}: {p}" for p in found if p)


def visit(page: Any, url: str, label: str, status: int, tenant_name: str | None, crawl: Crawl) -> None:
    from playwright.sync_api import Error

    try:
        response = page.goto(url)
    except Error as exc:  # a download, for one, is no page to load
        crawl.problems.append(f"{label}: not a page ({exc.message}); list it in NOT_PAGES with the reason")
        return
    page.wait_for_load_state("load")
    if response.status != status:
        crawl.problems.append(f"{label}: answered {response.status}, the access matrix says {status}")
        return
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/html") or page.locator("html > head > title").count() != 1:
        crawl.problems.append(f"{label}: not a page ({content_type}); list it in NOT_PAGES with the reason")
        return
    check_page(page, label, tenant_name, crawl)


KwargsOf = Callable[[int, Route], "dict[str, Any] | None"]


def crawl_role(browser: Any, base: str, role: str, world: World, kwargs_of: KwargsOf, crawl: Crawl) -> None:
    """Sign in as ``role`` (anonymous: stay signed out) and check every page its routes give it."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        if role != "anonymous":
            sign_in(page, base, f"{role}@acme.test")
        tenant_name = None if role == "anonymous" else world.tenant.name
        seen: set[str] = set()
        for index, route in enumerate(all_routes()):
            if route.method != "GET" or route.expect[role] != 200 or route.name in seen:
                continue
            # Public pages (sign in, password reset) are crawled signed out; they read the same signed in.
            if role != "anonymous" and route.expect["anonymous"] == 200:
                continue
            seen.add(route.name)
            url = base + reverse(route.name, kwargs=kwargs_of(index, route))
            if route.name in NOT_PAGES:
                answer = page.request.get(url)
                if answer.ok and b"<title>" in answer.body():
                    crawl.problems.append(f"{role} {route.name}: a page, yet listed in NOT_PAGES")
                continue
            visit(page, url, f"{role} {route.name}", 200, tenant_name, crawl)
            if "Globex" in page.content():
                crawl.problems.append(f"{role} {route.name}: shows the other tenant's name")
        # Kodori's own error pages, as this role meets them.
        visit(page, f"{base}/no-such-page", f"{role} 404", 404, tenant_name, crawl)
        if role in ("member", "viewer"):
            visit(page, base + reverse("encryption:index"), f"{role} 403", 403, tenant_name, crawl)
    finally:
        context.close()


@pytest.fixture
def full_tenant(clouds: DevEmulators, blob_root: Path, world: World) -> World:
    """Acme as a tenant looks after some use: files under the managed key re-wrapped (a completed walk) to
    an active AWS key, more files under it, API tokens, audit events; Globex has a file of its own."""
    assert clouds.aws is not None
    tenant, owner = world.tenant, world.users["owner"]
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.cache.clear()
    for n in range(3):
        make_blob(world.users["member"], f"quarterly report {n}\n".encode(), f"report-{n}.txt", tenant)
    key_arn = clouds.aws.create_key(alias="alias/acme-crawl")
    role_arn = clouds.aws.create_tenant_role("acme-crawl", services.external_id_for(tenant), key_arn)
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    services.verify_key(key.pk)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    finish(job)
    assert job.status == "completed", job.last_error
    make_blob(
        world.users["admin"], b"a" * 150_000, "architecture-diagram-with-a-rather-long-name.pdf", tenant
    )
    make_blob(world.users["owner"], b"minutes\n", "board minutes.txt", tenant)
    make_token(world.users["owner"], tenant)
    make_token(world.users["admin"], tenant)
    make_blob(world.users["outsider"], b"theirs\n", "globex-plans.txt", world.other_tenant)
    return world


def test_every_page_fits_a_phone_passes_axe_and_names_itself(
    live_server: Any, browser: Any, full_tenant: World
) -> None:
    crawl = Crawl(problems=[], titles={})
    kwargs: dict[int, dict[str, Any] | None] = {}

    def kwargs_of(index: int, route: Route) -> dict[str, Any] | None:
        # Once per route: its factory makes objects (a blob, a token), and the next role sees the same ones.
        if index not in kwargs:
            kwargs[index] = route.kwargs(full_tenant) if route.kwargs else None
        return kwargs[index]

    for role in ("anonymous", *SIGNED_IN):
        crawl_role(browser, live_server.url, role, full_tenant, kwargs_of, crawl)

    assert not crawl.problems, "\n".join(crawl.problems)
    # The crawl reached what each role should: the owner's pages include the owner-only ones, the member's
    # stop at what members may do, and the signed-out visitor saw the public pages.
    visited = set(crawl.titles)
    reached = {
        "owner offboarding:deletion",
        "admin encryption:key",
        "member blobs:detail",
        "viewer blobs:list",
        "anonymous login",
    }
    assert reached <= visited, sorted(visited)
    assert not {label for label in visited if label.startswith(("member encryption:", "viewer encryption:"))}
    assert "viewer blobs:upload" not in visited
    assert crawl.titles["owner blobs:list"].endswith(" · Acme Corp")
    assert crawl.titles["anonymous login"] == "Sign in · Kodori"


def test_not_pages_lists_only_get_routes_that_exist() -> None:
    gets = {route.name for route in all_routes() if route.method == "GET"}
    assert set(NOT_PAGES) <= gets, sorted(set(NOT_PAGES) - gets)


def test_the_checks_catch_a_page_that_breaks_them(page: Any) -> None:
    """A page that is too wide, unlabelled, low in contrast and titled only "Kodori" fails every check."""
    page.set_viewport_size(PHONE)
    page.set_content(
        "<!doctype html><html><head><title>Kodori</title></head><body style='margin:8px'>"
        "<div class=wide style='width:700px'>fits a desktop, not a phone</div>"
        "<div style='overflow-x:auto'><p style='width:900px;text-align:right'>"
        "<a class='button primary' href='#'>Download</a></p></div>"
        "<input type=text><p style='color:#bbb;background:#fff'>faint</p></body></html>"
    )
    crawl = Crawl(problems=[], titles={})
    check_page(page, "broken", "Acme Corp", crawl)
    report = "\n".join(crawl.problems)
    assert "title 'Kodori' does not read '<page> · Acme Corp'" in report
    assert "no favicon link" in report
    assert 'phone: scrolls sideways by 318 px: <div class="wide"> fits a desktop' in report, report
    assert "desktop: scrolls" not in report
    assert "phone: primary action off screen: Download" in report
    assert "desktop: primary action" not in report
    assert re.search(r"axe label \(critical\).* at input", report), report
    assert "axe color-contrast (serious)" in report
    assert title_problem("Files · Acme Corp", "Acme Corp") == ""
    assert title_problem("Acme Corp · Acme Corp", "Acme Corp")
    assert title_problem("Sign in · Kodori", None) == ""


def test_the_favicon_is_served_and_every_page_links_it(live_server: Any, page: Any, member: Any) -> None:
    response = page.request.get(f"{live_server.url}/static/kodori/favicon.svg")
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.body() == FAVICON.read_bytes()
    sign_in(page, live_server.url, "member@acme.test")
    for path in ("/", "/blobs", "/no-such-page"):
        page.goto(live_server.url + path)
        href = page.locator("link[rel=icon]").get_attribute("href")
        assert href == "/static/kodori/favicon.svg"
        assert page.request.get(live_server.url + href).headers["content-type"].startswith("image/svg+xml")
    # The 500 page loads no static file (the failure may be anywhere): it carries the same icon inline.
    page.set_content(errors.render_page(500))
    inline = page.locator("link[rel=icon]").get_attribute("href")
    assert inline is not None and inline.startswith("data:image/svg+xml,")
    svg = unquote(inline.removeprefix("data:image/svg+xml,")).replace("'", '"')
    assert svg == FAVICON.read_text().strip()  # the same icon as static/kodori/favicon.svg


def test_keyboard_focus_is_visible_and_labelled(live_server: Any, page: Any, member: Any) -> None:
    """The first stops of the keyboard: each named, on screen, and drawn differently once it has focus."""
    sign_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/blobs")
    stops = []
    for _ in range(3):
        page.keyboard.press("Tab")
        element = page.evaluate_handle("document.activeElement")
        name = element.evaluate("e => (e.getAttribute('aria-label') || e.innerText || '').trim()")
        assert element.evaluate("e => e.tagName") in ("A", "BUTTON", "SELECT", "SUMMARY") and name
        box = element.bounding_box()
        assert box is not None and box["x"] >= 0 and box["y"] >= 0, f"{name} is focused off screen"
        stops.append((element, name, element.evaluate(FOCUS_STYLE)))
    page.evaluate("document.activeElement.blur()")
    for element, name, focused in stops:
        assert element.evaluate(FOCUS_STYLE) != focused, f"{name}: focus changes nothing on screen"
    assert [name for _, name, _ in stops][:2] == ["Skip to content", "Kodori home"]


def box(page: Any, selector: str) -> dict[str, float]:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not on screen"
    return dict(found)


def test_on_a_phone_the_header_collapses_and_short_lists_stack(
    live_server: Any, page: Any, owner: Any, admin: Any, member: Any, outsider: Any, tmp_path: Path
) -> None:
    base = live_server.url
    sign_in(page, base, "owner@acme.test")
    page.goto(f"{base}/members")
    nav_links = page.get_by_role("navigation", name="Main").get_by_role("link")
    assert nav_links.count() >= 4
    # Desktop: one row. Phone: brand and account menu on top, every navigation link below, all on screen.
    page.set_viewport_size(DESKTOP)
    assert abs(box(page, ".mainnav")["y"] - box(page, ".brand")["y"]) < 20
    page.set_viewport_size(PHONE)
    brand, summary = box(page, ".brand"), box(page, ".usermenu summary")
    assert abs(summary["y"] - brand["y"]) < 20, "the account menu is not beside the brand"
    assert box(page, ".mainnav")["y"] >= brand["y"] + brand["height"]
    for link in nav_links.all():
        edge = link.bounding_box()
        assert edge is not None and edge["x"] >= 0 and edge["x"] + edge["width"] <= PHONE["width"]
    # Members stack: no column headers on screen, each cell labelled by its column.
    assert box(page, ".table-stack thead")["height"] <= 1
    role_cell = page.locator("td[data-label=Role]").first
    label = role_cell.evaluate("e => getComputedStyle(e, '::before').content")
    assert label == '"Role"'
    assert page.get_by_text("Only you so far.").count() == 0  # acme has three people
    shots(page, "25-header-and-members", tmp_path)
    page.set_viewport_size(PHONE)
    page.locator(".usermenu summary").click()
    menu = box(page, ".usermenu ul")
    assert menu["x"] >= 0 and menu["x"] + menu["width"] <= PHONE["width"]
    target = Path(os.environ.get("KODORI_SCREENSHOT_DIR") or tmp_path)
    page.screenshot(path=str(target / "25-header-menu-open-phone.png"))

    # An empty token list says what tokens are for and where to make one; making one fills the list.
    page.set_viewport_size(DESKTOP)
    page.goto(f"{base}/api-tokens")
    empty = page.locator(".empty-state")
    assert "No API tokens yet." in empty.inner_text()
    assert empty.get_by_role("link", name="Create a token").get_attribute("href") == "#id_name"
    assert empty.get_by_role("link", name="API guide").count() == 1
    shots(page, "26-api-tokens-empty", tmp_path)
    page.get_by_label("Token name").fill("nightly backup")
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("Your new token").wait_for()
    assert page.locator(".empty-state").count() == 0
    page.set_viewport_size(PHONE)
    row = page.locator(".table-stack tbody tr", has_text="nightly backup")
    assert box(page, ".table-stack tbody tr")["width"] <= PHONE["width"]
    assert row.get_by_role("link", name="Revoke nightly backup").is_visible()
    assert not sideways(page) and not axe_violations(page)  # the secret's card and its command fit too
    shots(page, "27-api-tokens-list", tmp_path)

    # Keyboard focus in the header: the yellow ring on the dark bar.
    page.set_viewport_size(DESKTOP)
    page.goto(f"{base}/blobs")
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Files"
    page.screenshot(
        path=str(target / "29-focus-visible.png"), clip={"x": 0, "y": 0, "width": 640, "height": 160}
    )

    # A tenant of one: the members page says who to invite, and how.
    context = page.context
    context.clear_cookies()
    sign_in(page, base, "owner@globex.test")
    page.goto(f"{base}/members")
    alone = page.locator(".empty-state")
    assert "Only you so far." in alone.inner_text()
    assert alone.get_by_role("link", name="Add a member").get_attribute("href") == "#id_email"
    assert page.locator("#id_email").count() == 1
    shots(page, "28-members-only-you", tmp_path)
