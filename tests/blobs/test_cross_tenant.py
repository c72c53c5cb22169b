"""Another tenant's blob is 404 on every page and API route, for every method, never 403."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from blobs.models import ApiToken, Blob
from tests.blobs.support import bearer, make_blob, make_token

pytestmark = pytest.mark.django_db

PAGES = [
    ("get", "blobs:detail"),
    ("get", "blobs:download"),
    ("head", "blobs:download"),
    ("get", "blobs:delete"),
    ("post", "blobs:delete"),
]
API = [("get", {}), ("get", {"HTTP_RANGE": "bytes=0-0"}), ("head", {}), ("delete", {})]


@pytest.fixture
def foreign_blob(outsider: Any) -> Blob:
    """A blob of globex, made by its owner."""
    return make_blob(outsider, b"globex secrets", name="globex.txt")


@pytest.mark.parametrize(("method", "name"), PAGES)
@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_pages_answer_404_for_another_tenants_blob(
    as_user: Any, foreign_blob: Blob, request: Any, role: str, method: str, name: str
) -> None:
    user = request.getfixturevalue(role)
    response = getattr(as_user(user), method)(reverse(name, args=[foreign_blob.pk]))
    assert response.status_code == 404
    assert Blob.objects.filter(pk=foreign_blob.pk).exists()


@pytest.mark.parametrize(("method", "headers"), API)
@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_the_api_answers_404_for_another_tenants_blob(
    foreign_blob: Blob, request: Any, role: str, method: str, headers: dict[str, str]
) -> None:
    token = make_token(request.getfixturevalue(role))
    response = getattr(Client(), method)(
        reverse("blobs:api_blob", args=[foreign_blob.pk]), **bearer(token), **headers
    )
    assert response.status_code == 404
    if method != "head":
        assert response.json() == {"error": {"code": "not_found", "message": "No such blob."}}
    assert Blob.objects.filter(pk=foreign_blob.pk).exists()


def test_another_tenants_blob_looks_exactly_like_one_that_never_existed(
    owner: Any, foreign_blob: Blob
) -> None:
    import uuid

    token = make_token(owner)
    client = Client()
    theirs = client.get(reverse("blobs:api_blob", args=[foreign_blob.pk]), **bearer(token))
    nobodys = client.get(reverse("blobs:api_blob", args=[uuid.uuid4()]), **bearer(token))
    garbage = client.get(reverse("blobs:api_blob", args=["not-a-uuid"]), **bearer(token))
    assert theirs.status_code == nobodys.status_code == garbage.status_code == 404
    assert theirs.content == nobodys.content == garbage.content


def test_lists_and_searches_never_show_another_tenants_blobs(
    as_user: Any, owner: Any, foreign_blob: Blob
) -> None:
    make_blob(owner, b"ours", name="acme.txt")
    page = as_user(owner).get(reverse("blobs:list"), {"q": "txt"})
    assert b"acme.txt" in page.content and b"globex.txt" not in page.content
    api = Client().get(reverse("blobs:api_blobs"), {"q": "txt"}, **bearer(make_token(owner))).json()
    assert [item["name"] for item in api["items"]] == ["acme.txt"]


def test_another_tenants_token_cannot_be_revoked_or_seen(as_user: Any, owner: Any, outsider: Any) -> None:
    make_token(outsider)
    theirs = ApiToken.objects.get(user=outsider)
    assert as_user(owner).get(reverse("blobs:token_revoke", args=[theirs.pk])).status_code == 404
    assert as_user(owner).post(reverse("blobs:token_revoke", args=[theirs.pk])).status_code == 404
    assert theirs.prefix.encode() not in as_user(owner).get(reverse("blobs:tokens")).content
    theirs.refresh_from_db()
    assert theirs.is_active
