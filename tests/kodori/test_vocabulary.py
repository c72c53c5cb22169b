"""One vocabulary and one unit system on every page Kodori renders, for every role (issue 20, item 1).

Every GET route of the access matrix (``tests/<app>/routes.py``), plus every guide, is fetched as each role,
after a file of a few KiB was uploaded so that sizes show on the lists, the file's page and the audit log.
The visible text of each HTML answer (text outside ``<code>``, ``<pre>``, ``<script>``, ``<style>``, and the
``title``, ``aria-label``, ``alt`` and ``placeholder`` attributes) must not use what the UI gave up:

- "Blob" or "Blobs" as a word: the UI says "Files" (URLs stay ``/blobs``). The guides are exempt from this
  one rule: they document the API, whose resource is called ``blobs``;
- decimal or ambiguous size units (KB, kB, MB, GB, TB): sizes are KiB, MiB, GiB (``tenants.units``);
- "cloud KMS", "Cloud Kms", "CloudKMS"...: it is spelled "Cloud KMS";
- repository paths such as ``docs/byok-aws.md``: the guides are pages (``/guides/``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from kodori.guides.catalogue import GUIDES
from kodori.testing.access import Route, World
from tenants.units import format_bytes
from tests.blobs.support import make_blob

BASE_DIR = Path(__file__).resolve().parents[2]
ROLES = ("anonymous", "owner", "admin", "member", "viewer", "outsider", "staff")
SIZE = 5 * 1024 + 300  # 5.3 KiB: shown as KiB, and as "5.4 KB" by a decimal formatter

WORD_BLOB = re.compile(r"\bBlobs?\b|(?<![/_.-])\bblobs?\b(?![/_.-]\w)")
DECIMAL_UNITS = re.compile(r"\b\d+(?:[.,]\d+)?\s*(?:[kK]B|MB|GB|TB|PB)\b|\b(?:KB|MB|GB|TB)\b")
CLOUD_KMS = re.compile(r"(?<![\w/.])cloud[\s-]?kms\b(?![.\w])", re.IGNORECASE)
REPOSITORY_PATH = re.compile(r"\bdocs/[\w.-]+\.md\b")


class VisibleText(HTMLParser):
    """The text a person sees or hears: text nodes outside code and scripts, and labelling attributes."""

    SKIPPED = {"code", "pre", "script", "style", "textarea"}
    LABELS = ("title", "aria-label", "alt", "placeholder")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self.depth += 1
        self.parts += [value for name, value in attrs if name in self.LABELS and value]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)

    @classmethod
    def of(cls, html: str) -> str:
        parser = cls()
        parser.feed(html)
        return re.sub(r"\s+", " ", " ".join(parser.parts))


def offences(text: str, *, guide: bool = False) -> list[str]:
    found = [m.group(0) for m in DECIMAL_UNITS.finditer(text)]
    found += [m.group(0) for m in CLOUD_KMS.finditer(text) if m.group(0) != "Cloud KMS"]
    found += [m.group(0) for m in REPOSITORY_PATH.finditer(text)]
    if not guide:
        found += [m.group(0) for m in WORD_BLOB.finditer(text)]
    return found


def _routes() -> list[Route]:
    routes: list[Route] = []
    for path in sorted((BASE_DIR / "tests").glob("*/routes.py")):
        routes += importlib.import_module(f"tests.{path.parent.name}.routes").ROUTES
    return [
        r for r in routes if r.method == "GET" and not r.name.startswith(("blobs:api", "offboarding:api"))
    ]


def _pages(world: World) -> Iterator[tuple[str, str]]:
    """(name, URL) of every page: each GET route once, its objects made once, and every guide."""
    seen: set[str] = set()
    for route in _routes():
        url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
        if url not in seen:
            seen.add(url)
            yield route.name, url
    for guide in GUIDES:
        yield "guides:guide", reverse("guides:guide", args=[guide.slug])


def _client(world: World, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_no_page_uses_a_word_or_unit_the_ui_gave_up(role: str, world: World, blob_root: Path) -> None:
    blob = make_blob(world.users["member"], data=bytes(SIZE), name="report.pdf", tenant=world.tenant)
    client = _client(world, role)
    checked, problems = 0, []
    for name, url in [*_pages(world), ("blobs:detail", reverse("blobs:detail", args=[blob.pk]))]:
        response = client.get(url)
        if not response.get("Content-Type", "").startswith("text/html") or response.streaming:
            continue
        text = VisibleText.of(response.content.decode())
        checked += 1
        if bad := offences(text, guide=name == "guides:guide"):
            problems.append(f"{url} ({response.status_code}): {sorted(set(bad))}")
    assert checked >= len(GUIDES) + 3, "too few pages were checked: is the route list empty?"
    assert problems == [], f"{role} sees:\n" + "\n".join(problems)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["owner", "member", "viewer"])
def test_sizes_are_shown_in_binary_units(role: str, world: World, blob_root: Path) -> None:
    blob = make_blob(world.users["member"], data=bytes(SIZE), name="report.pdf", tenant=world.tenant)
    client = _client(world, role)
    shown = format_bytes(SIZE)
    assert shown == "5.3 KiB"
    for url in (reverse("blobs:list"), reverse("blobs:detail", args=[blob.pk])):
        text = VisibleText.of(client.get(url).content.decode())
        assert shown in text, url
    if role == "owner":
        text = VisibleText.of(client.get(reverse("audit:index") + "?all=1").content.decode())
        assert f"({shown})" in text  # "Uploaded “report.pdf” (5.3 KiB)"


@pytest.mark.django_db
def test_a_refused_upload_says_its_limit_in_binary_units(
    as_user: Any, member: Any, settings: Any, blob_root: Path
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.BLOB_MAX_SIZE = 2048
    file = SimpleUploadedFile("big.bin", bytes(3000), content_type="application/octet-stream")
    response = as_user(member).post(reverse("blobs:upload"), {"file": file})
    text = VisibleText.of(response.content.decode())
    assert response.status_code == 413
    assert "This file is 2.9 KiB; files may be at most 2.0 KiB." in text
    assert offences(text) == []


@pytest.mark.django_db
def test_the_welcome_mail_uses_the_same_words(
    as_user: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        as_user(owner).post(reverse("tenants:member_add"), {"email": "new@acme.test", "role": "member"})
    (message,) = mail.outbox
    assert offences(f"{message.subject}\n{message.body}") == []


def test_no_template_uses_djangos_decimal_size_filter() -> None:
    users = [
        p for p in (BASE_DIR / "templates").rglob("*") if p.is_file() and "filesizeformat" in p.read_text()
    ]
    assert users == [], "use {% load units %} {{ n|filesize }} (binary units) instead"


def test_the_upload_page_script_counts_in_binary_units() -> None:
    script = (BASE_DIR / "static" / "kodori" / "blobs.js").read_text()
    assert '"KiB", "MiB", "GiB"' in script and "1024" in script
    assert not re.search(r"[\"'](?:KB|kB|MB|GB)[\"']", script)


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1.0 MiB"),  # never "1024.0 KiB"
        (2_500_000, "2.4 MiB"),
        (10 * 1024**3, "10.0 GiB"),
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_format_bytes(n: int, shown: str) -> None:
    assert format_bytes(n) == shown


def test_the_filter_keeps_number_and_unit_together_and_refuses_non_numbers() -> None:
    from tenants.templatetags.units import filesize

    assert filesize(1536) == "1.5\u00a0KiB"
    assert filesize("2048") == "2.0\u00a0KiB"
    assert filesize(None) == "?" and filesize("many") == "?"


@pytest.mark.parametrize(
    "text",
    ["Blobs", "3 blobs", "1.5 KB", "10 MB", "2GB", "cloud KMS", "Cloud Kms", "CloudKMS", "see docs/api.md"],
)
def test_the_rules_catch_what_they_forbid(text: str) -> None:
    assert offences(text) != []


@pytest.mark.parametrize(
    "text", ["Files", "1.5 KiB", "10.0 MiB", "Cloud KMS", "/blobs/upload", "/api/v1/blobs", "blob_corrupt"]
)
def test_the_rules_allow_what_the_ui_says(text: str) -> None:
    assert offences(text) == []
