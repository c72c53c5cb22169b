"""What the blobs app does when the tenants app announces a change (``tenants.signals``).

Connected in ``BlobsConfig.ready()``. ``tenants`` imports none of Kodori's other apps, so it cannot revoke
tokens itself: it sends ``membership_removed`` inside the removal's transaction, and the revocation and its
audit events below commit or roll back with the removal.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from tenants import signals
from tenants.models import Tenant

from .models import ApiToken

REVOKED_BY_REMOVAL = "membership removed"


@receiver(signals.membership_removed, dispatch_uid="blobs.revoke_tokens_of_removed_member")
def revoke_tokens_of_removed_member(
    sender: Any, *, tenant: Tenant, actor: Any, user_id: int, **kwargs: Any
) -> None:
    """Access ends with the membership: revoke the user's tokens in ``tenant`` for good, one event each.

    Revoked, not merely refused, so that adding the same user again later does not bring an old token back.
    The rows are locked first, so a concurrent revocation by hand records nothing twice.
    """
    tokens = list(
        ApiToken.objects.for_tenant(tenant)
        .active()
        .filter(user_id=user_id)
        .select_for_update()
        .order_by("pk")
    )
    if not tokens:
        return
    ApiToken.objects.filter(pk__in=[t.pk for t in tokens]).update(revoked_at=timezone.now())
    for token in tokens:
        payload = payloads.api_token_revoked_for_reason(
            token_id=token.pk, name=token.name, reason=REVOKED_BY_REMOVAL
        )
        record(tenant, EventType.API_TOKEN_REVOKED, actor=actor, payload=payload)
