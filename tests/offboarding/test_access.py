"""Who reaches the offboarding pages and API: every route, every role, the exact answer.

The pages (export, tenant deletion) are an owner's; the API's exports need an owner's token and its
deletion status any member's. Another tenant's export is 404 wherever it is asked for, never a 403 that
would confirm it exists. The routes and their expected answers are declared in ``routes.py``, which the
project-wide ``tests/test_access_matrix.py`` walks too.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from django.test import Client
from django.urls import reverse

from kodori.testing.access import ROLES, Route, World
from offboarding import exports, services
from offboarding.models import DeletionRequest, Export, Via
from tenants.models import Tenant, TenantState
from tests.blobs.support import bearer, make_token
from tests.conftest import PASSWORD, client_for
from tests.offboarding.routes import ROUTES, TOKEN_ROUTES

pytestmark = pytest.mark.django_db


def _call(client: Client, route: Route, world: World, headers: dict[str, str]) -> Any:
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    data = route.data(world) if route.data else {}
    return getattr(client, route.method.lower())(url, data, **{**route.headers, **headers})


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method}-{r.name}")
def test_each_role_gets_the_expected_page_answer(route: Route, role: str, world: World) -> None:
    client = Client() if role == "anonymous" else client_for(world.users[role])
    response = _call(client, route, world, {})
    assert response.status_code == route.expect[role], (
        f"{role} {route.method} {route.name}: got {response.status_code}, expected {route.expect[role]}"
    )
    if response.status_code == 302 and role == "anonymous":
        assert response["Location"].startswith(reverse("login") + "?next=/")
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=lambda r: f"{r.method}-{r.name}")
def test_each_role_gets_the_expected_api_answer_with_its_token(route: Route, role: str, world: World) -> None:
    headers = {} if role in ("anonymous", "staff") else bearer(make_token(world.users[role]))
    # CSRF enforced as in production: the API takes no cookies, so it needs no token.
    response = _call(Client(enforce_csrf_checks=True), route, world, headers)
    assert response.status_code == route.expect[role], (
        f"{role} {route.method} {route.name}: got {response.status_code}, expected {route.expect[role]}"
    )
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/json"
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}[response.status_code]
        assert response.json()["error"]["code"] == code
    if response.status_code == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("name", "data", "unchanged"),
    [
        ("offboarding:schedule", {"days": "14", "confirm_name": "Acme Corp", "password": PASSWORD}, "active"),
        ("offboarding:cancel", {}, "scheduled"),
        ("offboarding:export", {"format": "zip"}, "no export"),
    ],
)
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    owner: Any, tenant: Tenant, name: str, data: dict[str, str], unchanged: str
) -> None:
    if unchanged == "scheduled":
        services.schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=10)
    state = Tenant.objects.get(pk=tenant.pk).state
    response = client_for(owner, csrf=True).post(reverse(name), data)
    assert response.status_code == 403 and b"CSRF" in response.content
    assert Tenant.objects.get(pk=tenant.pk).state == state
    assert DeletionRequest.objects.filter(tenant=tenant).count() == (unchanged == "scheduled")
    assert not Export.objects.exists()


def test_with_the_csrf_token_the_same_post_goes_through(owner: Any, tenant: Tenant) -> None:
    client = client_for(owner, csrf=True)
    client.get(reverse("offboarding:deletion"))
    token = client.cookies["csrftoken"].value
    data = {"days": "14", "confirm_name": "Acme Corp", "password": PASSWORD, "csrfmiddlewaretoken": token}
    assert client.post(reverse("offboarding:schedule"), data).status_code == 302
    assert Tenant.objects.get(pk=tenant.pk).state == TenantState.DELETION_SCHEDULED


def _other_tenants_export(other_tenant: Tenant, outsider: Any) -> Export:
    return exports.create_export(other_tenant, "zip", actor=outsider)


def test_an_owner_gets_404_for_another_tenants_export_everywhere(
    owner: Any, outsider: Any, other_tenant: Tenant
) -> None:
    theirs = _other_tenants_export(other_tenant, outsider)
    pages = client_for(owner)
    assert pages.get(reverse("offboarding:export_detail", args=[theirs.pk])).status_code == 404
    assert pages.get(reverse("offboarding:export_part", args=[theirs.pk, 1])).status_code == 404
    api = Client()
    token = bearer(make_token(owner))
    for url in (
        reverse("offboarding:api_export", args=[str(theirs.pk)]),
        reverse("offboarding:api_export_part", args=[str(theirs.pk), 1]),
    ):
        response = api.get(url, **token)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert theirs.parts.get().downloads == 0  # nothing was streamed or counted


@pytest.mark.parametrize("export_id", ["not-a-uuid", str(uuid4())])
def test_an_unknown_export_is_404_like_another_tenants(owner: Any, tenant: Tenant, export_id: str) -> None:
    token = bearer(make_token(owner))
    for url in (
        reverse("offboarding:api_export", args=[export_id]),
        reverse("offboarding:api_export_part", args=[export_id, 1]),
    ):
        response = Client().get(url, **token)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_missing_part_of_an_own_export_is_404(owner: Any, tenant: Tenant) -> None:
    mine = exports.create_export(tenant, "zip", actor=owner)
    assert client_for(owner).get(reverse("offboarding:export_part", args=[mine.pk, 2])).status_code == 404
    response = Client().get(
        reverse("offboarding:api_export_part", args=[str(mine.pk), 2]), **bearer(make_token(owner))
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_signed_in_session_does_not_authenticate_the_api(owner: Any, tenant: Tenant) -> None:
    response = client_for(owner).post(reverse("offboarding:api_exports"))
    assert response.status_code == 401 and not Export.objects.exists()


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_the_api_names_the_methods_it_allows(owner: Any, tenant: Tenant, method: str) -> None:
    response = getattr(Client(), method)(reverse("offboarding:api_exports"), **bearer(make_token(owner)))
    assert response.status_code == 405 and response["Allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_every_members_token_reads_the_deletion_status(
    request: pytest.FixtureRequest, owner: Any, tenant: Tenant, role: str
) -> None:
    token = bearer(make_token(request.getfixturevalue(role)))
    url = reverse("offboarding:api_deletion")
    assert Client().get(url, **token).json() == {
        "state": "active",
        "read_only": False,
        "deletion_due_at": None,
        "scheduled_at": None,
        "scheduled_via": None,
    }
    deletion = services.schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=9)
    body = Client().get(url, **token).json()
    assert body == {
        "state": "deletion-scheduled",
        "read_only": True,
        "deletion_due_at": deletion.due_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "scheduled_at": deletion.requested_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "scheduled_via": "owner",
    }
