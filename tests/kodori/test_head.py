"""A HEAD answers the status and headers the GET would, without a body (kodori.middleware.HeadMiddleware).

Walks every GET route of the access matrix (tests/<app>/routes.py) for every role, and the API's GET routes
with each role's token. Blob downloads (``blobs:download``, ``blobs:api_blob``) have their own HEAD, without
decryption, tested with the download code.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from kodori.testing.access import ROLES, Route, World
from tests.blobs.routes import TOKEN_ROUTES
from tests.blobs.support import bearer, make_token
from tests.test_access_matrix import ROUTES

pytestmark = pytest.mark.django_db

DOWNLOADS = {"blobs:download", "blobs:api_blob"}
PAGE_ROUTES = [r for r in ROUTES if r.method == "GET" and r.name not in DOWNLOADS]
API_ROUTES = [r for r in TOKEN_ROUTES if r.method == "GET" and r.name not in DOWNLOADS]


def _headers(response: Any) -> dict[str, str]:
    headers = dict(response.headers)
    # A fresh CSRF cookie is random each time; that there is one (or not) must match.
    if "Set-Cookie" in headers:
        headers["Set-Cookie"] = ";".join(sorted(name for name in response.cookies))
    # never_cache pages (login, password reset) expire "now": to the second, like any clock reading.
    if "Expires" in headers:
        headers["Expires"] = "<time>"
    # An export's file name holds the time and its range of events (the GET's own export event moves it).
    if "Content-Disposition" in headers:
        headers["Content-Disposition"] = re.sub(r"\d+", "N", headers["Content-Disposition"])
    return headers


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


def _compare(url: str, who: str, get: Client, head: Client, **extra: Any) -> None:
    pinned = {"HTTP_X_REQUEST_ID": "head-parity-check", **extra}
    got, headed = get.get(url, **pinned), head.head(url, **pinned)
    assert headed.status_code == got.status_code, (
        f"{who} HEAD {url}: {headed.status_code} != {got.status_code}"
    )
    assert _headers(headed) == _headers(got), f"{who} HEAD {url}"
    assert _body(headed) == b""


def _session_client(world: World, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


@pytest.mark.parametrize("route", PAGE_ROUTES, ids=lambda r: f"GET-{r.name}")
def test_head_answers_what_get_answers_for_every_role(route: Route, world: World) -> None:
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    query = route.data(world) if route.data else {}
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    for role in ROLES:
        _compare(url, role, _session_client(world, role), _session_client(world, role), **route.headers)


@pytest.mark.parametrize("route", API_ROUTES, ids=lambda r: f"GET-{r.name}")
def test_head_answers_what_get_answers_on_the_api_for_every_role(route: Route, world: World) -> None:
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    for role in ROLES:
        auth = {}
        if role not in ("anonymous", "staff"):
            auth = bearer(make_token(world.users[role]))
        _compare(url, role, Client(), Client(), **auth, **route.headers)


def test_head_of_an_unknown_page_and_api_route(world: World) -> None:
    _compare("/no/such/page", "anonymous", Client(), Client())
    _compare("/api/v1/no/such/route", "anonymous", Client(), Client())


def test_the_application_itself_drops_a_heads_body(world: World) -> None:
    """Not only the test client: the WSGI application answers HEAD without a body (gunicorn sends what it
    gets), with the Content-Length of the GET."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import RequestFactory

    handler = WSGIHandler()
    sizes = {}
    start_response: Any = lambda status, headers, exc_info=None: None  # noqa: E731
    for method in ("GET", "HEAD"):
        environ = RequestFactory().generic(method, "/api/v1/openapi.json").environ
        response = handler(environ, start_response)
        sizes[method] = (response["Content-Length"], len(b"".join(response)))
        response.close()
    assert sizes["HEAD"] == (sizes["GET"][0], 0)
    assert int(sizes["GET"][0]) == sizes["GET"][1] > 0
