"""Tenant scoping as queryset methods: every tenant-owned query starts from one of these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from django.db import models

from .roles import Role

if TYPE_CHECKING:
    from .models import Tenant


class TenantScopedQuerySet(models.QuerySet[Any]):
    """Base for querysets of rows that belong to one tenant through a ``tenant`` foreign key.

    ``for_tenant`` is the only door: a row of another tenant is simply not in the queryset, so looking it
    up by primary key is a 404, never a 403 that would confirm it exists.
    """

    def for_tenant(self, tenant: Tenant) -> Self:
        return self.filter(tenant=tenant)


class TenantQuerySet(models.QuerySet[Any]):
    def for_user(self, user: Any) -> Self:
        """The tenants ``user`` is a member of."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)


class MembershipQuerySet(TenantScopedQuerySet):
    def owners(self) -> Self:
        return self.filter(role=Role.OWNER)
