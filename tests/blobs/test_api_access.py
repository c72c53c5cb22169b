"""The API's access matrix: every API route, every role, authenticated by that role's API token."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from kodori.testing.access import ROLES, Route, World
from tests.blobs.routes import TOKEN_ROUTES
from tests.blobs.support import bearer, make_token


def _request(route: Route, world: World, role: str, client: Client) -> Any:
    headers = dict(route.headers)
    if role not in ("anonymous", "staff"):
        headers.update(bearer(make_token(world.users[role])))
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    data = route.data(world) if route.data else {}
    method = route.method.lower()
    if method in ("head", "delete"):
        return getattr(client, method)(url, **headers)
    return getattr(client, method)(url, data, **headers)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "route", TOKEN_ROUTES, ids=lambda r: f"{r.method}-{r.name}-{'-'.join(r.headers.values())}"
)
def test_role_gets_expected_status_with_its_token(route: Route, role: str, world: World) -> None:
    # CSRF is enforced as in production: the API must not need it, because it takes no cookies.
    response = _request(route, world, role, Client(enforce_csrf_checks=True))
    assert response.status_code == route.expect[role], (
        f"{role} {route.method} {route.name}: got {response.status_code}, expected {route.expect[role]}"
    )
    if response.status_code >= 400 and route.method != "HEAD":
        assert response["Content-Type"] == "application/json"
        assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.django_db
def test_a_signed_in_session_does_not_authenticate_the_api(as_user: Any, owner: Any) -> None:
    response = as_user(owner).get(reverse("blobs:api_blobs"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"
