"""Who may reach each URL of the offboarding app.

``ROUTES`` are walked by ``tests/test_access_matrix.py`` (and ``test_access.py``) with a signed-in session,
CSRF enforced for the state-changing ones. The pages are for owners: other roles get 403, anonymous the
login page, staff (in no tenant) 403, and the outsider (another tenant's owner) reaches their own tenant's
pages but gets 404 for this tenant's export. The API takes no session: 401 for everyone there.
``TOKEN_ROUTES`` are the API's own matrix, walked with each role's API token by ``test_access.py``.
"""

from __future__ import annotations

from typing import Any

from kodori.testing.access import Route, World, expect
from offboarding import exports
from tests.conftest import PASSWORD

OWNERS = expect(403, anonymous=302, owner=200, outsider=200)
ACME_EXPORT = expect(403, anonymous=302, owner=200, outsider=404)


def acme_export(world: World) -> Any:
    return exports.create_export(world.tenant, "zip", actor=world.users["owner"])


def _export(world: World) -> dict[str, Any]:
    return {"pk": acme_export(world).pk}


def _export_part(world: World) -> dict[str, Any]:
    return {"pk": acme_export(world).pk, "number": 1}


def _api_export(world: World) -> dict[str, Any]:
    return {"export_id": str(acme_export(world).pk)}


def _api_export_part(world: World) -> dict[str, Any]:
    return {"export_id": str(acme_export(world).pk), "number": 1}


def _confirm_acme(world: World) -> dict[str, Any]:
    """Acme's confirmation: right for acme's owner; the outsider's own tenant has another name (400)."""
    return {"days": "14", "confirm_name": world.tenant.name, "password": PASSWORD}


ROUTES = [
    Route("offboarding:deletion", OWNERS),
    Route("offboarding:deletion", expect(405), method="POST"),
    Route("offboarding:schedule", expect(405)),
    Route(
        "offboarding:schedule",
        expect(403, anonymous=302, owner=302, outsider=400),
        method="POST",
        data=_confirm_acme,
    ),
    # Nothing is scheduled: the owner is sent back to the page with the refusal.
    Route("offboarding:cancel", expect(403, anonymous=302, owner=302, outsider=302), method="POST"),
    Route("offboarding:export", OWNERS),
    Route(
        "offboarding:export",
        expect(403, anonymous=302, owner=302, outsider=302),
        method="POST",
        data=lambda w: {"format": "tar"},
    ),
    Route("offboarding:export_detail", ACME_EXPORT, kwargs=_export),
    Route("offboarding:export_part", ACME_EXPORT, kwargs=_export_part),
    # The API ignores sessions.
    Route("offboarding:api_exports", expect(401)),
    Route("offboarding:api_export", expect(401), kwargs=_api_export),
    Route("offboarding:api_export_part", expect(401), kwargs=_api_export_part),
    Route("offboarding:api_deletion", expect(401)),
]

API_OWNERS = expect(403, anonymous=401, staff=401, owner=200, outsider=200)
API_ACME_EXPORT = expect(403, anonymous=401, staff=401, owner=200, outsider=404)

TOKEN_ROUTES = [
    Route("offboarding:api_exports", API_OWNERS),
    Route(
        "offboarding:api_exports",
        expect(403, anonymous=401, staff=401, owner=201, outsider=201),
        method="POST",
        data=lambda w: {"format": "tar"},
    ),
    Route("offboarding:api_export", API_ACME_EXPORT, kwargs=_api_export),
    Route("offboarding:api_export_part", API_ACME_EXPORT, kwargs=_api_export_part),
    # Every member's token reads whether (and when) the tenant is to be deleted.
    Route("offboarding:api_deletion", expect(200, anonymous=401, staff=401)),
]
