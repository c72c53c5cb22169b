"""NUL and other control characters in any query string or form field get a clear 400 and change nothing;
tab, CR and LF reach the forms, which answer a normal page. Never a 500
(kodori.middleware.ControlCharacterMiddleware).

Every route of the access matrix (tests/<app>/routes.py) is asked with control characters in its query string
(names and values) and in each field of its form, as the owner, who reaches the most of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from audit.models import AuditEvent
from blobs.models import Blob
from encryption.models import TenantKey
from kodori.testing.access import Route, World
from tenants.middleware import SESSION_KEY
from tenants.models import Membership, Role
from tests.blobs.support import bearer, make_blob, make_token
from tests.test_access_matrix import ROUTES

pytestmark = pytest.mark.django_db

REFUSED = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f"]
ALLOWED = ["\t", "\n", "\r", "\r\n", "\x7f"]
# Every query parameter a view reads (blob list and API, audit filters and exports, uploads), and one none do.
PARAMETERS = [
    "q", "sort", "page", "types", "year", "from", "to", "actor", "before", "after",
    "cursor", "limit", "name", "type", "next", "unknown",
]  # fmt: skip


def _client(world: World) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(world.users["owner"])
    return client


def _ask(route: Route, world: World, url: str, query: str, data: dict[str, Any]) -> Any:
    method = getattr(_client(world), route.method.lower())
    if route.method == "GET":
        return method(f"{url}?{query}", data, **route.headers)
    return method(f"{url}?{query}" if query else url, data, **route.headers)


def _encoded(text: str) -> str:
    return "".join(f"%{ord(character):02X}" for character in text)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method}-{r.name}")
def test_every_route_refuses_control_characters_and_never_fails(route: Route, world: World) -> None:
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)

    def data() -> dict[str, Any]:  # afresh for each request: a file in it is read by the request
        return route.data(world) if route.data else {}

    fields = [name for name, value in data().items() if isinstance(value, str)]
    for character in REFUSED:
        encoded = _encoded(character)
        for query in (f"q=a{encoded}b", f"a{encoded}b=1", "&".join(f"{p}=x{encoded}" for p in PARAMETERS)):
            response = _ask(route, world, url, query, data())
            assert response.status_code == 400, (route.name, query, response.status_code)
        for field in fields:
            sent = data()
            response = _ask(route, world, url, "", {**sent, field: f"{sent[field]}{character}"})
            assert response.status_code == 400, (route.name, field, response.status_code)
    for character in ALLOWED:
        query = "&".join(f"{p}=x{_encoded(character)}" for p in PARAMETERS)
        response = _ask(route, world, url, query, data())
        assert response.status_code < 500, (route.name, repr(character), response.status_code)
        for field in fields:
            sent = data()
            response = _ask(route, world, url, "", {**sent, field: f"{sent[field]}{character}"})
            assert response.status_code < 500, (route.name, field, repr(character), response.status_code)


def test_the_refusal_is_a_page_saying_what_was_refused(as_user: Any, owner: Any) -> None:
    response = as_user(owner).get("/blobs", {"q": "report\x00.pdf"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "The field “q” contains a control character (U+0000)" in text
    assert "report" not in text  # what was sent is not echoed


@pytest.mark.parametrize(
    "url, params",
    [
        ("/audit", {"actor": "a\x00"}),
        ("/audit", {"types": "tenant-kms.registered\x00"}),
        ("/audit", {"from": "2026-01-01\x00"}),
        ("/audit/export.csv", {"actor": "\x00"}),
        ("/audit/export.zip", {"year": "2026\x00"}),
        ("/blobs", {"q": "\x00"}),
        ("/blobs", {"sort": "name\x01"}),
    ],
)
def test_searches_filters_and_exports_refuse_control_characters(
    as_user: Any, owner: Any, url: str, params: dict[str, str]
) -> None:
    before = AuditEvent.objects.count()
    response = as_user(owner).get(url, params)
    assert response.status_code == 400
    assert AuditEvent.objects.count() == before


def test_the_tenant_switch_refuses_nul_and_keeps_the_tenant(
    as_user: Any, owner: Any, tenant: Any, other_tenant: Any
) -> None:
    Membership.objects.create(user=owner, tenant=other_tenant, role=Role.VIEWER)
    client = as_user(owner)
    client.get("/")
    assert client.session[SESSION_KEY] == tenant.pk
    response = client.post("/tenants/switch", {"tenant": "globex\x00"})
    assert response.status_code == 400
    assert client.session[SESSION_KEY] == tenant.pk


@pytest.mark.parametrize("field", ["key_id", "region", "role_arn"])
def test_the_key_form_refuses_nul_and_registers_nothing(
    as_user: Any, owner: Any, tenant: Any, field: str
) -> None:
    tenant.cloud_kms_enabled = True
    tenant.save()
    data = {
        "key_id": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "role_arn": "arn:aws:iam::111122223333:role/kodori",
        "region": "",
    }
    data[field] += "\x00"
    response = as_user(owner).post("/encryption/register/aws", data)
    assert response.status_code == 400
    assert not TenantKey.objects.for_tenant(tenant).exists()


# --- The API ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["q=%00", "cursor=%00", "limit=1%00", "x%01=1", "q=%1B%5B31m"])
def test_the_api_refuses_control_characters_in_json(member: Any, blob_root: Any, query: str) -> None:
    response = Client().get(f"/api/v1/blobs?{query}", **bearer(make_token(member)))
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["code"] == "bad_request"


def test_an_api_upload_with_a_control_character_in_its_name_is_refused_and_stores_nothing(
    member: Any, blob_root: Any
) -> None:
    response = Client().post(
        "/api/v1/blobs?name=a%00.txt", b"data", content_type="text/plain", **bearer(make_token(member))
    )
    assert response.status_code == 400
    assert not Blob.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
def test_uploads_own_their_bodies_the_middleware_never_reads_them(member: Any, blob_root: Any) -> None:
    """A raw body sent as form-urlencoded (``curl --data-binary``'s default) and a multipart body with a NUL
    in a text part both reach the upload untouched: the middleware parses neither."""
    token = make_token(member)
    raw = Client().post(
        "/api/v1/blobs?name=raw.bin",
        b"a=\x00" * 200,
        content_type="application/x-www-form-urlencoded",
        **bearer(token),
    )
    assert raw.status_code == 201, raw.content
    from django.core.files.uploadedfile import SimpleUploadedFile

    multipart = Client().post(
        "/api/v1/blobs",
        {"note": "nul\x00here", "file": SimpleUploadedFile("notes.txt", b"notes", content_type="text/plain")},
        **bearer(token),
    )
    assert multipart.status_code == 201, multipart.content
    assert Blob.objects.count() == 2


def test_the_blob_download_path_with_nul_is_a_plain_404(as_user: Any, owner: Any, blob_root: Any) -> None:
    blob = make_blob(owner)
    assert as_user(owner).get(f"/blobs/{blob.pk}%00").status_code == 404
