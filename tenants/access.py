"""View decorators that check access the same way everywhere: load the tenant, check the role, act."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import Membership, Role, Tenant


class TenantRequest(HttpRequest):
    """The request a ``tenant_required`` view receives: the middleware has resolved these."""

    tenant: Tenant
    membership: Membership
    request_id: str
    user: User


View = TypeVar("View", bound=Callable[..., HttpResponse])


def tenant_required(*roles: Role) -> Callable[[View], View]:
    """Require a signed-in user with a current tenant and, when ``roles`` are given, one of those roles.

    Anonymous users go to the login page; a user with no tenant sees a page saying so; a member whose role is
    not enough gets 403 (they know the page exists: it is in their navigation).
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = getattr(request, "membership", None)
            if membership is None:
                return render(request, "tenants/no_tenant.html", status=403)
            if roles and membership.role_enum not in roles:
                raise PermissionDenied("Your role in this tenant does not allow this.")
            return view(request, *args, **kwargs)

        return cast(View, wrapper)

    return decorator


# The roles of each rule on ``Role``, for ``tenant_required(*...)``: the rule itself is spelled once, there.
MANAGERS = tuple(role for role in Role if role.manages_tenant)  # owners and admins
UPLOADERS = tuple(role for role in Role if role.can_upload)  # everyone but viewers
