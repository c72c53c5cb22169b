"""Records what the tenants app announces (``tenants.signals``), inside the transaction of each change."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from tenants import signals
from tenants.models import Membership, Role, Tenant

from . import payloads, services
from .models import EventType


@receiver(signals.membership_added, dispatch_uid="audit.membership_added")
def on_membership_added(
    sender: Any, *, tenant: Tenant, actor: Any, membership: Membership, created_account: bool, **kwargs: Any
) -> None:
    payload = payloads.membership_added(
        user_id=membership.user_id,
        email=membership.user.email,
        role=membership.role,
        created_account=created_account,
    )
    services.record(tenant, EventType.MEMBERSHIP_ADDED, actor=actor, payload=payload)


@receiver(signals.membership_role_changed, dispatch_uid="audit.membership_role_changed")
def on_membership_role_changed(
    sender: Any, *, tenant: Tenant, actor: Any, membership: Membership, previous_role: Role, **kwargs: Any
) -> None:
    payload = payloads.membership_role_changed(
        user_id=membership.user_id,
        email=membership.user.email,
        from_role=Role(previous_role).value,
        to_role=Role(membership.role).value,
    )
    services.record(tenant, EventType.MEMBERSHIP_ROLE_CHANGED, actor=actor, payload=payload)


@receiver(signals.membership_removed, dispatch_uid="audit.membership_removed")
def on_membership_removed(
    sender: Any, *, tenant: Tenant, actor: Any, user_id: int, email: str, role: str, **kwargs: Any
) -> None:
    payload = payloads.membership_removed(user_id=user_id, email=email, role=Role(role).value)
    services.record(tenant, EventType.MEMBERSHIP_REMOVED, actor=actor, payload=payload)


@receiver(signals.cloud_kms_switched, dispatch_uid="audit.cloud_kms_switched")
def on_cloud_kms_switched(sender: Any, *, tenant: Tenant, actor: Any, enabled: bool, **kwargs: Any) -> None:
    kind = EventType.TENANT_CLOUD_KMS_ENABLED if enabled else EventType.TENANT_CLOUD_KMS_DISABLED
    payload = payloads.cloud_kms_switched(enabled=enabled, reason=kwargs.get("reason", ""))
    services.record(tenant, kind, actor=actor, payload=payload)
