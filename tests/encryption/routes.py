"""Who may reach each URL of the encryption app."""

from __future__ import annotations

from kodori.testing.access import Route, World, expect

# Owners and admins; the outsider (owner of another tenant) sees their own tenant's pages, and gets 404 for
# this tenant's keys.
MANAGERS = expect(403, anonymous=302, owner=200, admin=200, outsider=200)


def _acme_key(world: World) -> dict[str, int]:
    from encryption import keyring

    return {"pk": keyring.active_tkv(world.tenant).kek_id}


def _acme_job(world: World) -> dict[str, int]:
    """A finished re-wrap job of acme (finished, so any number of them may exist)."""
    from encryption import keyring
    from encryption.models import RewrapJob, RewrapStatus

    job, _ = RewrapJob.objects.get_or_create(
        tenant=world.tenant,
        status=RewrapStatus.COMPLETED,
        defaults={"target_tkv": keyring.active_tkv(world.tenant)},
    )
    return {"pk": job.pk}


ROUTES = [
    Route("encryption:index", MANAGERS),
    Route("encryption:register", MANAGERS, kwargs=lambda w: {"cloud": "aws"}),
    # Cloud KMS is off for both tenants: the form answers 400 with the reason, and nothing is stored.
    Route(
        "encryption:register",
        expect(403, anonymous=302, owner=400, admin=400, outsider=400),
        method="POST",
        kwargs=lambda w: {"cloud": "gcp"},
        data=lambda w: {"key_id": "projects/acme-prod/locations/global/keyRings/r/cryptoKeys/k"},
    ),
    Route(
        "encryption:key_status",
        expect(403, anonymous=302, owner=200, admin=200, outsider=404),
        kwargs=_acme_key,
    ),
    Route(
        "encryption:disable", expect(403, anonymous=302, owner=200, admin=200, outsider=404), kwargs=_acme_key
    ),
    # The active key needs the typed confirmation: without it, 400 and nothing changes.
    Route(
        "encryption:disable",
        expect(403, anonymous=302, owner=400, admin=400, outsider=404),
        method="POST",
        kwargs=_acme_key,
    ),
    Route("encryption:retry", expect(403, anonymous=302, owner=302, admin=302, outsider=302), method="POST"),
    Route("encryption:key", expect(403, anonymous=302, owner=200, admin=200, outsider=404), kwargs=_acme_key),
    # The transitions on the active key: each refused by the lifecycle (a message and a redirect), changing
    # nothing; another tenant's key is 404.
    Route(
        "encryption:enable",
        expect(403, anonymous=302, owner=302, admin=302, outsider=404),
        method="POST",
        kwargs=_acme_key,
    ),
    Route(
        "encryption:activate",
        expect(403, anonymous=302, owner=302, admin=302, outsider=404),
        method="POST",
        kwargs=_acme_key,
    ),
    Route(
        "encryption:retry_key",
        expect(403, anonymous=302, owner=302, admin=302, outsider=404),
        method="POST",
        kwargs=_acme_key,
    ),
    Route(
        "encryption:remove", expect(403, anonymous=302, owner=302, admin=302, outsider=404), kwargs=_acme_key
    ),
    Route(
        "encryption:remove",
        expect(403, anonymous=302, owner=302, admin=302, outsider=404),
        method="POST",
        kwargs=_acme_key,
    ),
    # Nothing to re-wrap in a fresh tenant: the owner is told so on the page (redirect), nothing is created.
    Route(
        "encryption:rewrap_start",
        expect(403, anonymous=302, owner=302, admin=302, outsider=302),
        method="POST",
    ),
    Route(
        "encryption:rewrap_progress",
        expect(403, anonymous=302, owner=200, admin=200, outsider=404),
        kwargs=_acme_job,
    ),
    # A finished job cannot be paused, resumed or cancelled: a message on the page says so.
    *[
        Route(
            name,
            expect(403, anonymous=302, owner=302, admin=302, outsider=404),
            method="POST",
            kwargs=_acme_job,
        )
        for name in ("encryption:rewrap_pause", "encryption:rewrap_resume", "encryption:rewrap_cancel")
    ],
]
