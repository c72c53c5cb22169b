"""Who may reach each URL of the blobs app.

``ROUTES`` are walked by ``tests/test_access_matrix.py`` with a signed-in session (and CSRF enforced for the
state-changing ones). The API takes no session: signed-in or not, every role gets 401 there. ``TOKEN_ROUTES``
are the API's own matrix, walked with an API token of each role's user by ``test_api_access.py``; the
outsider's token is for their own tenant, and staff have no tenant, hence no token (401).
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from blobs.models import ApiToken
from kodori.testing.access import Route, World, expect
from tests.blobs.support import make_blob, make_token

# Everyone in a tenant; the outsider reaches their own tenant's page; staff have no tenant.
IN_TENANT = expect(200, anonymous=302, staff=403)
UPLOADERS = expect(403, anonymous=302, owner=200, admin=200, member=200, outsider=200)
# Objects of acme: its people see them, the outsider (another tenant's owner) gets 404.
ACME_OBJECT = expect(200, anonymous=302, outsider=404, staff=403)


def _member_blob(world: World) -> dict[str, Any]:
    return {"pk": make_blob(world.users["member"], tenant=world.tenant).pk}


def _owner_blob(world: World) -> dict[str, Any]:
    return {"pk": make_blob(world.users["owner"], tenant=world.tenant).pk}


def _member_token(world: World) -> dict[str, Any]:
    make_token(world.users["member"], world.tenant)
    return {"pk": ApiToken.objects.get(user=world.users["member"]).pk}


def _api_blob(world: World) -> dict[str, Any]:
    return {"blob_id": str(make_blob(world.users["member"], tenant=world.tenant).pk)}


def _a_file(world: World) -> dict[str, Any]:
    return {"file": SimpleUploadedFile("notes.txt", b"some notes\n", content_type="text/plain")}


ROUTES = [
    Route("blobs:list", IN_TENANT),
    Route("blobs:upload", UPLOADERS),
    # Without JavaScript the form posts multipart; with a file the uploader is sent back to the list.
    Route(
        "blobs:upload",
        expect(403, anonymous=302, owner=302, admin=302, member=302, outsider=302),
        method="POST",
        data=_a_file,
    ),
    Route("blobs:detail", ACME_OBJECT, kwargs=_member_blob),
    Route("blobs:download", ACME_OBJECT, kwargs=_member_blob),
    Route(
        "blobs:download",
        expect(206, anonymous=302, outsider=404, staff=403),
        kwargs=_member_blob,
        headers={"HTTP_RANGE": "bytes=0-1"},
    ),
    Route(
        "blobs:delete",
        expect(403, anonymous=302, owner=200, admin=200, member=200, outsider=404),
        kwargs=_member_blob,
    ),
    # A member deletes only their own blobs.
    Route("blobs:delete", expect(403, anonymous=302, owner=200, admin=200, outsider=404), kwargs=_owner_blob),
    Route(
        "blobs:delete",
        expect(403, anonymous=302, owner=302, admin=302, member=302, outsider=404),
        method="POST",
        kwargs=_member_blob,
    ),
    # Several files as one zip (``offboarding.selection``, where the archive writer lives): every role of the
    # tenant; another tenant's file is a 404 for the outsider.
    Route(
        "offboarding:download_selected",
        ACME_OBJECT,
        method="POST",
        data=lambda w: {"ids": [str(make_blob(w.users["member"], tenant=w.tenant).pk)]},
    ),
    Route("blobs:tokens", IN_TENANT),
    Route("blobs:tokens", IN_TENANT, method="POST", data=lambda w: {"name": "backup"}),
    Route(
        "blobs:token_revoke",
        expect(403, anonymous=302, owner=200, admin=200, member=200, outsider=404),
        kwargs=_member_token,
    ),
    Route(
        "blobs:token_revoke",
        expect(403, anonymous=302, owner=302, admin=302, member=302, outsider=404),
        method="POST",
        kwargs=_member_token,
    ),
    # The API ignores sessions: 401 for everyone who is not holding a token.
    Route("blobs:api_blobs", expect(401)),
    Route("blobs:api_blob", expect(401), kwargs=_api_blob),
    Route("blobs:api_openapi", expect(200)),
]

API_ROLES_LIST = expect(200, anonymous=401, staff=401)
API_ACME_OBJECT = expect(200, anonymous=401, staff=401, outsider=404)

TOKEN_ROUTES = [
    Route("blobs:api_blobs", API_ROLES_LIST),
    Route(
        "blobs:api_blobs",
        expect(403, anonymous=401, staff=401, owner=201, admin=201, member=201, outsider=201),
        method="POST",
        data=_a_file,
    ),
    Route("blobs:api_blob", API_ACME_OBJECT, kwargs=_api_blob),
    Route(
        "blobs:api_blob",
        expect(206, anonymous=401, staff=401, outsider=404),
        kwargs=_api_blob,
        headers={"HTTP_RANGE": "bytes=1-2"},
    ),
    Route("blobs:api_blob", API_ACME_OBJECT, method="HEAD", kwargs=_api_blob),
    Route(
        "blobs:api_blob",
        expect(204, anonymous=401, staff=401, viewer=403, outsider=404),
        method="DELETE",
        kwargs=_api_blob,
    ),
    # Members delete only their own.
    Route(
        "blobs:api_blob",
        expect(204, anonymous=401, staff=401, member=403, viewer=403, outsider=404),
        method="DELETE",
        kwargs=lambda w: {"blob_id": str(make_blob(w.users["owner"], tenant=w.tenant).pk)},
    ),
    Route("blobs:api_openapi", expect(200)),
]
