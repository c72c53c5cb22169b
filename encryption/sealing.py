"""Sealing a tenant (no read or write of its files) and unsealing it, each audited with what triggered it.

A tenant is sealed when it has no usable active key: its active key's KMS refuses Kodori, or an owner
disabled the active key. It is unsealed when its active key answers again, or when another key is verified and
made active. ``tenant.sealed`` / ``tenant.unsealed`` name the trigger (``Trigger``) and the actor when a
person started it, so the audit tells who or what changed the tenant's state.

Used by the custody verbs (``services``), the key health checks (``health``) and the re-wrap walk.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from tenants.models import Tenant

from .models import TenantKey


class Trigger(StrEnum):
    """What made Kodori look at a key (recorded in seal, unseal and key-health events)."""

    SCHEDULE = "schedule"  # the periodic re-verify
    USE = "use"  # an upload, download or re-wrap met a refusal and asked for a re-verify at once
    OWNER_RETRY = "owner-retry"  # an owner or admin pressed "Retry now"
    SUPPORT_REPROBE = "support-reprobe"  # support re-ran the probe from the admin
    DISABLE = "disable"  # an owner or admin disabled the active key
    ACTIVATION = "activation"  # another key was verified and made active
    RE_ENABLE = "re-enable"  # a disabled key was re-enabled
    REWRAP = "rewrap"  # the re-wrap walk met a refusal of the active key


def _key_fields(key: TenantKey | None) -> dict[str, Any]:
    return {
        "provider": key.wrap_method if key else "",
        "key_id": key.key_id if key else "",
        "key_row_id": key.pk if key else None,
    }


def seal(tenant: Tenant, reason: str, key: TenantKey | None, *, trigger: Trigger, actor: Any = None) -> bool:
    """Seal ``tenant`` (row locked by the caller's transaction); False when sealed for this reason already."""
    if tenant.sealed_at is not None and tenant.seal_reason == reason:
        return False
    tenant.sealed_at = tenant.sealed_at or timezone.now()
    tenant.seal_reason = reason
    tenant.save(update_fields=["sealed_at", "seal_reason"])
    record(
        tenant,
        EventType.TENANT_SEALED,
        actor=actor,
        payload=payloads.tenant_sealed(reason=reason, trigger=trigger, **_key_fields(key)),
    )
    return True


def unseal(
    tenant: Tenant, reason: str, key: TenantKey | None, *, trigger: Trigger, actor: Any = None
) -> bool:
    """Unseal ``tenant`` (row locked by the caller's transaction); False when it was not sealed."""
    if tenant.sealed_at is None:
        return False
    tenant.sealed_at = None
    tenant.seal_reason = ""
    tenant.save(update_fields=["sealed_at", "seal_reason"])
    record(
        tenant,
        EventType.TENANT_UNSEALED,
        actor=actor,
        payload=payloads.tenant_unsealed(reason=reason, trigger=trigger, **_key_fields(key)),
    )
    return True


@transaction.atomic
def seal_tenant(
    tenant: Tenant,
    error: object,
    *,
    key: TenantKey | None = None,
    trigger: Trigger = Trigger.SCHEDULE,
    actor: Any = None,
) -> bool:
    """Seal ``tenant`` because its active key's provider refused (access denied, disabled, not found)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    return seal(tenant, str(error), key, trigger=trigger, actor=actor)
