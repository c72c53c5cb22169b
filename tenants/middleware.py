"""Resolves the current tenant for every request.

The current tenant is kept in the session and always re-checked against the user's memberships, so a stale or
forged session value can never select a tenant the user is not in.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .models import Membership

SESSION_KEY = "kodori_tenant_id"


def resolve_membership(request: HttpRequest) -> Membership | None:
    user = request.user
    if not user.is_authenticated:
        return None
    memberships = Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")
    wanted = request.session.get(SESSION_KEY)
    membership = None
    if wanted is not None:
        membership = memberships.filter(tenant_id=wanted).first()
    if membership is None:
        membership = memberships.first()
        if membership is not None:
            request.session[SESSION_KEY] = membership.tenant_id
    return membership


class CurrentTenantMiddleware:
    """Sets ``request.membership`` and ``request.tenant`` (both None for anonymous or tenantless users)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Programmatic clients (API tokens) may already have set the tenant; keep it.
        if not hasattr(request, "tenant"):
            membership = resolve_membership(request)
            request.membership = membership  # type: ignore[attr-defined]
            request.tenant = membership.tenant if membership else None  # type: ignore[attr-defined]
        return self.get_response(request)
