"""Pages that carry key or token material (every page shown to a signed-in user) are sent with
``Cache-Control: no-store`` (kodori.middleware.NoStoreMiddleware)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from encryption import keyring
from encryption.models import RewrapJob, RewrapStatus
from kodori.testing.access import Route, World
from tests.test_access_matrix import ROUTES

pytestmark = pytest.mark.django_db


def assert_no_store(response: Any) -> None:
    directives = {d.strip() for d in response.get("Cache-Control", "").split(",")}
    assert "no-store" in directives, (response.status_code, response.get("Cache-Control"))


def test_the_api_tokens_page_and_a_fresh_token(as_user: Any, member: Any) -> None:
    client = as_user(member)
    assert_no_store(client.get("/api-tokens"))
    created = client.post("/api-tokens", {"name": "backup"})
    assert created.status_code == 200 and b"kdr_" in created.content
    assert_no_store(created)
    assert_no_store(client.post("/api-tokens", {"name": ""}))  # refused, shown again


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_the_key_registration_pages(as_user: Any, owner: Any, tenant: Any, cloud: str) -> None:
    tenant.cloud_kms_enabled = True
    tenant.save()
    client = as_user(owner)
    assert_no_store(client.get(f"/encryption/register/{cloud}"))
    refused = client.post(f"/encryption/register/{cloud}", {"key_id": "not a key"})
    assert refused.status_code == 400
    assert_no_store(refused)


def test_the_key_pages(as_user: Any, owner: Any, tenant: Any) -> None:
    kek = keyring.active_tkv(tenant).kek
    job = RewrapJob.objects.create(
        tenant=tenant, status=RewrapStatus.COMPLETED, target_tkv=keyring.active_tkv(tenant)
    )
    client = as_user(owner)
    for url in (
        "/encryption",
        f"/encryption/keys/{kek.pk}",
        f"/encryption/keys/{kek.pk}/status",
        f"/encryption/keys/{kek.pk}/disable",
        f"/encryption/rewrap/{job.pk}",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_store(response)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.method == "GET"], ids=lambda r: r.name)
def test_every_page_for_a_signed_in_user(route: Route, world: World) -> None:
    client = Client()
    client.force_login(world.users["owner"])
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    get: Any = client.get
    response = get(url, route.data(world) if route.data else {}, **route.headers)
    if response["Content-Type"].startswith("text/html"):
        assert_no_store(response)
