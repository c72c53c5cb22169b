"""Who may reach each URL of the audit app: owners and admins of the current tenant, nobody else."""

from __future__ import annotations

from typing import Any

from audit import payloads, services
from audit.models import EventType
from kodori.testing.access import Route, World, expect

# The outsider is the owner of another tenant: they reach their own tenant's log, never acme's.
MANAGERS_ONLY = expect(403, anonymous=302, owner=200, admin=200, outsider=200)


def _acme_break(world: World) -> dict[str, Any]:
    """A break found in acme's chain (its rows as a verification would keep them)."""
    from django.utils import timezone

    from audit.models import ChainBreak

    now = timezone.now()
    brk, _ = ChainBreak.objects.get_or_create(
        tenant=world.tenant, first_bad_seq=1, kind="edited", detail="route",
        defaults={"last_bad_seq": 1, "reason": "test", "found_at": now, "found_by": "test",
                  "last_seen_at": now},
    )  # fmt: skip
    return {"pk": brk.pk}


def _with_events(world: World) -> dict[str, Any]:
    """Give both tenants an event, so the bundle export has something to export (200, not a redirect)."""
    for tenant in (world.tenant, world.other_tenant):
        services.record(
            tenant, EventType.API_TOKEN_CREATED, payload=payloads.api_token_created(token_id=1, name="ci")
        )
    return {}


ROUTES = [
    Route("audit:index", MANAGERS_ONLY),
    Route("audit:export_csv", MANAGERS_ONLY),
    Route("audit:export_jsonl", MANAGERS_ONLY),
    Route("audit:export_bundle", MANAGERS_ONLY, data=_with_events),
    Route("audit:export_bundle", expect(403, anonymous=302, owner=302, admin=302, outsider=302)),
    Route("audit:verify", expect(403, anonymous=302, owner=302, admin=302, outsider=302), method="POST"),
    # Owners only; another tenant's owner does not find acme's break.
    Route(
        "audit:acknowledge_break",
        expect(403, anonymous=302, owner=302, outsider=404),
        method="POST",
        kwargs=_acme_break,
        data=lambda world: {"reason": "restored from backup"},
    ),
]
