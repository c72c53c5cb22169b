"""Template context: the current tenant, the user's role in it, and the tenants they can switch to."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .models import Membership


def current_tenant(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    if membership is None:
        return {"current_tenant": None, "current_role": None, "switchable_memberships": []}
    others = (
        Membership.objects.filter(user=membership.user_id).select_related("tenant").order_by("tenant__name")
    )
    return {
        "current_tenant": membership.tenant,
        "current_role": membership.role_enum,
        "switchable_memberships": list(others),
    }
