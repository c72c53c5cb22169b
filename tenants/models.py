"""Tenants and the people in them.

A user belongs to any number of tenants through ``Membership``; the role on that membership decides what the
user may do in that tenant and nowhere else.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .querysets import MembershipQuerySet, TenantQuerySet
from .roles import Role as Role  # where it has always been imported from


class Tenant(models.Model):
    """A customer organisation: the unit of isolation, of keys and of the audit chain."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    # Off until support switches it on (tenants.services.set_cloud_kms_enabled); the switch is audited.
    cloud_kms_enabled = models.BooleanField(default=False)
    # Seal state: set when the tenant's key provider denies access; reads and writes then answer 503.
    sealed_at = models.DateTimeField(null=True, blank=True)
    seal_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def is_sealed(self) -> bool:
        return self.sealed_at is not None


class Membership(models.Model):
    """A user's role in one tenant. At most one per user and tenant."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant"),
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in Role]), name="membership_role_valid"
            ),
        ]
        ordering = ["tenant", "user__email"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant.slug} as {self.role}"

    @property
    def role_enum(self) -> Role:
        return Role(self.role)
