"""The customer guides served at /guides/ (issue 20, item 4): rendered from docs/ with Python-Markdown, only
the guides of the allow-list, safe HTML, links between guides that work, and sections the app can link to."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client
from django.urls import reverse

from kodori.guides import render as rendering
from kodori.guides.catalogue import GUIDES, find
from kodori.guides.checks import guides_present

BASE_DIR = Path(__file__).resolve().parents[2]
HREF = re.compile(r'href="([^"]*)"')


def guide_html(slug: str) -> str:
    guide = find(slug)
    assert guide is not None
    return str(rendering.render(guide).html)


def anchors(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "member", "viewer"])
def test_the_index_lists_every_guide_for_anyone(who: str, request: pytest.FixtureRequest) -> None:
    client = Client()
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    html = client.get(reverse("guides:index")).content.decode()
    for guide in GUIDES:
        assert f'href="/guides/{guide.slug}"' in html and guide.title in html
    assert ("Sign in to Kodori" in html) is (who == "anonymous")


@pytest.mark.django_db
@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.slug)
def test_each_guide_is_a_page_in_the_site_layout(guide: Any, client: Client) -> None:
    response = client.get(reverse("guides:guide", args=[guide.slug]))
    html = response.content.decode()
    assert response.status_code == 200
    first_heading = (BASE_DIR / "docs" / guide.filename).read_text().splitlines()[0].removeprefix("# ")
    assert f"<title>{guide.title} · Guides" in html
    assert re.search(r"<h1 id=\"[\w-]+\">" + re.escape(first_heading.replace("&", "&amp;")), html)
    assert 'class="skip-link"' in html and 'href="/guides/"' in html  # base layout; a way back
    assert "On this page" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/guides/settings",
        "/guides/../settings",
        "/guides/%2e%2e/settings",
        "/guides/..%2fkodori%2fsettings.py",
        "/guides/architecture",  # in docs/, but not a customer guide
        "/guides/operations",
        "/guides/byok-aws.md",
        "/guides/BYOK-AWS",
        "/guides/byok-aws/",
    ],
)
def test_only_guides_of_the_allow_list_are_served(path: str, client: Client) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert b"SECRET_KEY" not in response.content and b"Kodori is a stateless" not in response.content


@pytest.mark.django_db
def test_guides_answer_get_only(client: Client) -> None:
    assert client.post(reverse("guides:guide", args=["api"])).status_code == 405


@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.slug)
def test_every_link_in_a_guide_works(guide: Any) -> None:
    """Links go to a section of this guide, to another guide's existing section, or out to the web."""
    html = guide_html(guide.slug)
    for href in HREF.findall(html):
        if href.startswith(("https://", "http://", "mailto:")):
            continue
        if href.startswith("#"):
            assert href[1:] in anchors(html), href
            continue
        match = re.fullmatch(r"/guides/([\w-]+)(?:#([\w-]+))?", href)
        assert match, f"{guide.slug} links to {href}"
        assert find(match.group(1)) is not None
        if match.group(2):
            assert match.group(2) in anchors(guide_html(match.group(1))), href
    assert ".md" not in "".join(HREF.findall(html))


def test_links_between_guides_point_at_their_pages_and_other_files_become_text() -> None:
    html = guide_html("byok-aws")
    assert '<a href="/guides/byok-azure">Azure Key Vault</a>' in html
    assert '<a href="/guides/api#when-a-file-is-damaged">' in html
    # docs/operations.md and benchmarks.md are not guides: their names stay as text, without a link.
    assert '<span>"Scrub"</span>' in html and "<span>benchmarks</span>" in html
    assert "operations.md" not in html and "benchmarks.md" not in html


def test_a_link_to_a_repository_file_is_plain_text() -> None:
    html = str(
        rendering.render_text("See [the code](../encryption/foo.py) and [ops](operations.md#scrub).").html
    )
    assert html == "<p>See <span>the code</span> and <span>ops</span>.</p>"


def test_github_style_lists_keep_their_nesting_and_their_code() -> None:
    source = "1. First:\n\n   ```sh\n   echo hi\n   ```\n\n   More.\n\n2. Second\n\n- a\n  - b\n    - c\n"
    html = str(rendering.render_text(source).html)
    assert html.count("<li>") == 5 and html.count("<ul>") == 3
    assert '<pre tabindex="0" class="highlight"><code class="language-sh">echo hi</code></pre>' in html


@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.slug)
def test_every_code_fence_of_a_guide_becomes_a_code_block(guide: Any) -> None:
    source = (BASE_DIR / "docs" / guide.filename).read_text()
    assert guide_html(guide.slug).count("<pre") == len(re.findall(r"^\s*```\w*$", source, re.M)) // 2 > 0


def test_raw_html_and_scripts_are_escaped() -> None:
    source = (
        "# T\n\n<script>alert(1)</script>\n\n<div onclick='x()'>block</div>\n\n"
        "Inline <img src=x onerror=alert(1)> and [click](javascript:alert(1)) and ![pic](https://evil.test/x.png)\n"
    )
    html = str(rendering.render_text(source).html)
    assert "<script" not in html and "<div onclick" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x" in html
    assert "javascript:" not in html and "evil.test" not in html
    assert "<span>click</span>" in html and "<span>pic</span>" in html


def test_headings_get_anchors_and_wide_content_scrolls_in_its_own_box() -> None:
    html = str(
        rendering.render_text(
            "# Guide\n\n## Step 2: the role\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```sh\necho hi\n```\n"
        ).html
    )
    assert '<h2 id="step-2-the-role">Step 2: the role<a class="headerlink" href="#step-2-the-role"' in html
    assert (
        '<div aria-label="Table (scrolls sideways)" class="guide-table" role="region" tabindex="0">' in html
    )
    assert '<pre tabindex="0" class="highlight"><code class="language-sh">echo hi' in html
    sections = rendering.render_text("# A\n\n## B &amp; C\n\n### D\n\n## E\n").sections
    assert [(s.anchor, s.title) for s in sections] == [("b-c", "B & C"), ("e", "E")]


@pytest.mark.django_db
def test_the_rendered_html_is_cached_until_the_file_changes(settings: Any, tmp_path: Path) -> None:
    settings.KODORI_GUIDES_DIR = tmp_path
    guide = find("api")
    assert guide is not None
    guide.path.write_text("# First\n")
    first = rendering.render(guide)
    assert rendering.render(guide) is first  # served from the cache
    guide.path.write_text("# Second\n")
    stat = guide.path.stat()
    os.utime(guide.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = rendering.render(guide)
    assert second is not first and "Second" in second.html


def test_the_check_passes_with_the_checkouts_docs() -> None:
    assert guides_present() == []
    assert [m.id for m in run_checks() if m.id == "kodori.E001"] == []


def test_the_check_names_every_missing_guide(settings: Any, tmp_path: Path) -> None:
    settings.KODORI_GUIDES_DIR = tmp_path
    for guide in GUIDES[1:]:
        shutil.copy(BASE_DIR / "docs" / guide.filename, tmp_path / guide.filename)
    (error,) = guides_present()
    assert error.id == "kodori.E001" and f"lacks the guides {GUIDES[0].filename}," in error.msg
    assert str(tmp_path) in error.msg
    (tmp_path / GUIDES[1].filename).unlink()
    (error,) = [m for m in run_checks() if m.id == "kodori.E001"]  # registered: `manage.py check` fails
    assert GUIDES[0].filename in error.msg and GUIDES[1].filename in error.msg


APP_LINKS = re.compile(r"\{% url 'guides:guide' '([\w-]+)' %\}#([\w-]+)")


def test_every_section_the_app_links_to_exists() -> None:
    links = {
        (slug, anchor)
        for path in (BASE_DIR / "templates").rglob("*")
        if path.is_file()
        for slug, anchor in APP_LINKS.findall(path.read_text())
    }
    assert {"byok-aws", "byok-azure", "byok-gcp", "audit"} <= {slug for slug, _ in links}
    for slug, anchor in links:
        assert anchor in anchors(guide_html(slug)), f"/guides/{slug}#{anchor}"


def test_no_template_shows_a_repository_path() -> None:
    shown = [
        f"{path.relative_to(BASE_DIR)}: {line.strip()}"
        for path in (BASE_DIR / "templates").rglob("*")
        if path.is_file()
        for line in path.read_text().splitlines()
        if "docs/" in line
    ]
    assert shown == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cloud", "section"),
    [
        ("aws", "/guides/byok-aws#step-2-the-role-kodori-assumes"),
        ("azure", "/guides/byok-azure#step-2-let-kodoris-application-into-your-directory"),
        ("gcp", "/guides/byok-gcp#step-2-grant-kodori-the-key-and-nothing-else"),
    ],
)
def test_the_registration_page_links_to_its_clouds_guide(
    cloud: str, section: str, as_user: Any, owner: Any
) -> None:
    html = as_user(owner).get(reverse("encryption:register", args=[cloud])).content.decode()
    assert f'href="{section}"' in html
    assert "docs/" not in html


@pytest.mark.django_db
def test_the_audit_and_token_pages_link_to_their_guides(as_user: Any, owner: Any, member: Any) -> None:
    audit = as_user(owner).get(reverse("audit:index")).content.decode()
    assert 'href="/guides/audit#for-auditors-verifying-an-export-offline"' in audit
    tokens = as_user(member).get(reverse("blobs:tokens")).content.decode()
    assert 'href="/guides/api"' in tokens


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "owner", "viewer"])
def test_every_page_offers_the_guides(who: str, request: pytest.FixtureRequest) -> None:
    client = Client()
    url = reverse("login")
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
        url = reverse("home")
    html = client.get(url).content.decode()
    assert html.count('href="/guides/"') >= 1
