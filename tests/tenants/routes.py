"""Who may reach each URL of the tenants app and Django's auth pages."""

from __future__ import annotations

from kodori.testing.access import Route, World, expect
from tenants.models import Membership

MANAGERS_ONLY = expect(403, anonymous=302, owner=200, admin=200, outsider=200)


def _member_pk(world: World) -> dict[str, int]:
    return {"pk": Membership.objects.get(user=world.users["member"], tenant=world.tenant).pk}


ROUTES = [
    # Support staff in no tenant are sent to the admin.
    Route("home", expect(200, anonymous=302, staff=302)),
    Route("healthz", expect(200)),
    Route("tenants:members", MANAGERS_ONLY),
    # Add: valid form → redirect; the outsider adds to their own tenant.
    Route(
        "tenants:member_add",
        expect(403, anonymous=302, owner=302, admin=302, outsider=302),
        method="POST",
        data=lambda w: {"email": "new-person@acme.test", "role": "viewer"},
    ),
    Route(
        "tenants:member_role",
        expect(403, anonymous=302, owner=302, admin=302, outsider=404),
        method="POST",
        kwargs=_member_pk,
        data=lambda w: {"role": "viewer"},
    ),
    Route(
        "tenants:member_remove",
        expect(403, anonymous=302, owner=200, admin=200, outsider=404),
        kwargs=_member_pk,
    ),
    Route(
        "tenants:member_remove",
        expect(403, anonymous=302, owner=302, admin=302, outsider=404),
        method="POST",
        kwargs=_member_pk,
    ),
    # Switching to acme: members of acme go home; the outsider and staff are not in acme.
    Route(
        "tenants:switch",
        expect(302, outsider=404, staff=404),
        method="POST",
        data=lambda w: {"tenant": "acme"},
    ),
    # Django's auth pages.
    Route("login", expect(200)),
    Route("logout", expect(302), method="POST"),
    Route("password_change", expect(200, anonymous=302)),
    Route("password_change_done", expect(200, anonymous=302)),
    Route("password_reset", expect(200)),
    Route("password_reset_done", expect(200)),
    Route("password_reset_confirm", expect(200), kwargs=lambda w: {"uidb64": "MQ", "token": "set-password"}),
    Route("password_reset_complete", expect(200)),
]
