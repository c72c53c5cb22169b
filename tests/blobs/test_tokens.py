"""API tokens: shown once, stored hashed, bound to a user and a tenant, limited by the user's current role."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from blobs.models import ApiToken
from tenants import services as tenant_services
from tenants.models import Membership, Role
from tests.blobs.support import bearer, make_blob, make_token

pytestmark = pytest.mark.django_db


def _create_on_page(client: Client, name: str = "backup") -> str:
    response = client.post(reverse("blobs:tokens"), {"name": name})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    match = re.search(rb'value="(kdr_[A-Za-z0-9_-]{43})"', response.content)
    assert match, "the new token is shown on the page"
    return match.group(1).decode()


def test_a_token_is_shown_once_and_stored_only_as_its_hash(as_user: Any, member: Any) -> None:
    client = as_user(member)
    secret = _create_on_page(client)
    token = ApiToken.objects.get()
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(list(ApiToken.objects.values()))
    later = client.get(reverse("blobs:tokens"))
    assert secret.encode() not in later.content
    assert token.prefix.encode() in later.content
    assert AuditEvent.objects.filter(type="api-token.created").count() == 1


def test_a_token_works_until_it_is_revoked(as_user: Any, member: Any) -> None:
    client = as_user(member)
    secret = _create_on_page(client)
    api = Client()
    assert api.get(reverse("blobs:api_blobs"), **bearer(secret)).status_code == 200
    token = ApiToken.objects.get()
    assert token.last_used_at is not None
    assert client.post(reverse("blobs:token_revoke", args=[token.pk])).status_code == 302
    refused = api.get(reverse("blobs:api_blobs"), **bearer(secret))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert AuditEvent.objects.filter(type="api-token.revoked").count() == 1


def test_a_token_follows_its_users_current_role(owner: Any, member: Any, tenant: Any) -> None:
    secret = make_token(member)
    blob = make_blob(member)
    membership = Membership.objects.get(user=member, tenant=tenant)
    tenant_services.change_role(membership, Role.VIEWER, actor=owner)
    url = reverse("blobs:api_blob", args=[blob.pk])
    assert Client().get(url, **bearer(secret)).status_code == 200
    assert Client().delete(url, **bearer(secret)).status_code == 403
    tenant_services.remove_member(Membership.objects.get(user=member, tenant=tenant), actor=owner)
    assert Client().get(url, **bearer(secret)).status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic a2RyXzpwYXNz",
        "Bearer kdr_" + "x" * 43,
        "Bearer not-a-kodori-token",
        "Token kdr_x",
    ],
)
def test_malformed_or_unknown_tokens_are_401(member: Any, header: str) -> None:
    extra: dict[str, Any] = {"HTTP_AUTHORIZATION": header} if header else {}
    response = Client().get(reverse("blobs:api_blobs"), **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="kodori"'


def test_members_see_their_own_tokens_and_admins_see_everyones(
    as_user: Any, member: Any, viewer: Any, admin: Any
) -> None:
    make_token(member)
    make_token(viewer)
    mine = as_user(member).get(reverse("blobs:tokens")).content
    assert b"member@acme.test" in mine and b"viewer@acme.test" not in mine
    everyone = as_user(admin).get(reverse("blobs:tokens")).content
    assert b"member@acme.test" in everyone and b"viewer@acme.test" in everyone
    theirs = ApiToken.objects.get(user=viewer)
    assert as_user(member).post(reverse("blobs:token_revoke", args=[theirs.pk])).status_code == 403
    assert as_user(admin).post(reverse("blobs:token_revoke", args=[theirs.pk])).status_code == 302


def test_the_api_list_pages_with_a_cursor(member: Any) -> None:
    names = [f"file-{i:02}.txt" for i in range(7)]
    for name in names:
        make_blob(member, name.encode(), name=name)
    auth = bearer(make_token(member))
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = Client().get(reverse("blobs:api_blobs"), params, **auth).json()
        seen += [item["name"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == list(reversed(names))
    bad = Client().get(reverse("blobs:api_blobs"), {"cursor": "!!"}, **auth)
    assert bad.status_code == 400
    assert Client().get(reverse("blobs:api_blobs"), {"limit": 0}, **auth).status_code == 400
