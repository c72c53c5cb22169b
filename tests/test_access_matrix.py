"""Every named URL, for every role: the expected status. A URL that no route declares fails the suite.

Routes are declared next to each app's tests in ``tests/<app>/routes.py`` (see ``kodori.testing.access``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from kodori.testing.access import ROLES, Route, World

# Django's admin has its own permission system (tested in tests/tenants/test_admin.py).
UNCHECKED_NAMESPACES = {"admin"}


def _all_routes() -> list[Route]:
    routes: list[Route] = []
    for path in sorted(Path(__file__).parent.glob("*/routes.py")):
        module = importlib.import_module(f"tests.{path.parent.name}.routes")
        routes.extend(module.ROUTES)
    return routes


ROUTES = _all_routes()


def _pattern_names(resolver: URLResolver, namespace: str = "") -> set[str]:
    names: set[str] = set()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or ""
            if ns in UNCHECKED_NAMESPACES:
                continue
            inner = f"{namespace}{ns}:" if ns else namespace
            names |= _pattern_names(entry, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(f"{namespace}{entry.name}")
    return names


def test_every_named_url_has_an_access_rule() -> None:
    declared = {route.name for route in ROUTES}
    missing = _pattern_names(get_resolver()) - declared
    assert not missing, f"add these URLs to a tests/<app>/routes.py: {sorted(missing)}"


def _request(route: Route, world: World, role: str, *, csrf: bool = False) -> Any:
    client = Client(enforce_csrf_checks=csrf)
    if role != "anonymous":
        client.force_login(world.users[role])
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    data = route.data(world) if route.data else {}
    return getattr(client, route.method.lower())(url, data, **route.headers)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method}-{r.name}")
def test_role_gets_expected_status(route: Route, role: str, world: World) -> None:
    response = _request(route, world, role)
    assert response.status_code == route.expect[role], (
        f"{role} {route.method} {route.name}: got {response.status_code}, expected {route.expect[role]}"
    )


STATE_CHANGING = [r for r in ROUTES if r.method not in ("GET", "HEAD", "OPTIONS")]


@pytest.mark.django_db
@pytest.mark.parametrize("route", STATE_CHANGING, ids=lambda r: f"{r.method}-{r.name}")
def test_state_changing_views_refuse_requests_without_csrf_token(route: Route, world: World) -> None:
    # The owner is the role most routes admit; without the token even they must be refused.
    response = _request(route, world, "owner", csrf=True)
    assert response.status_code == 403
    assert b"CSRF" in response.content
