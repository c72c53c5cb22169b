"""Tiles, links and buttons are shown only to roles that may use them (issue 20, item 1).

Every page a role can open (each GET route of the access matrix, and the home page's tiles) is read as that
role; every link on it to a Kodori page is followed as the same role and must not answer 403, and every form
that posts must target a route that ``tests/<app>/routes.py`` lets that role post to. A link or button shown
to a role that the view would refuse fails here, naming the page and the target.
"""

from __future__ import annotations

import importlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import Resolver404, resolve, reverse

from kodori.testing.access import Route, World
from tests.blobs.support import make_blob

BASE_DIR = Path(__file__).resolve().parents[2]


class Targets(HTMLParser):
    """Where a page's links go and where its forms post."""

    def __init__(self) -> None:
        super().__init__()
        self.links: set[str] = set()
        self.posts: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and (a.get("href") or "").startswith("/") and not a["href"].startswith("/static/"):  # type: ignore[union-attr]
            self.links.add(urlsplit(a["href"] or "").path)
        elif tag == "form" and (a.get("method") or "get").lower() == "post" and a.get("action"):
            self.posts.add(urlsplit(a["action"] or "").path)


def _routes() -> list[Route]:
    routes: list[Route] = []
    for path in sorted((BASE_DIR / "tests").glob("*/routes.py")):
        routes += importlib.import_module(f"tests.{path.parent.name}.routes").ROUTES
    return routes


def _view_name(path: str) -> str | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return match.view_name


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_every_link_and_button_a_role_sees_is_one_it_may_use(
    role: str, world: World, blob_root: Path
) -> None:
    make_blob(world.users["member"], name="report.pdf", tenant=world.tenant)
    make_blob(world.users["owner"], name="owners.pdf", tenant=world.tenant)
    client = Client()
    client.force_login(world.users[role])
    routes = _routes()
    declared_posts = {r.name for r in routes if r.method == "POST"}
    may_post = {r.name for r in routes if r.method == "POST" and r.expect[role] != 403}
    pages = {reverse("home")}
    for route in routes:
        if (
            route.method == "GET"
            and route.expect[role] == 200
            and not route.name.startswith(("blobs:api", "offboarding:api"))
        ):
            pages.add(reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None))
    shown, refused = 0, []
    followed: dict[str, int] = {}
    for page in sorted(pages):
        response = client.get(page)
        if response.status_code != 200 or not response.get("Content-Type", "").startswith("text/html"):
            continue
        targets = Targets()
        targets.feed(response.content.decode())
        for link in targets.links:
            if link not in followed:
                followed[link] = client.get(link).status_code
            shown += 1
            if followed[link] == 403:
                refused.append(f"{page} links to {link} (403)")
        for action in targets.posts:
            name = _view_name(action)
            shown += 1
            if name in declared_posts and name not in may_post:
                refused.append(f"{page} has a button posting to {name}, which refuses {role}")
    assert shown > 20, "too few links were found: did the pages render?"
    assert refused == [], "\n".join(refused)
