"""Tenants and the people in them.

A user belongs to any number of tenants through ``Membership``; the role on that membership decides what the
user may do in that tenant and nowhere else.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .querysets import MembershipQuerySet, TenantQuerySet
from .roles import Role as Role  # where it has always been imported from


class TenantState(models.TextChoices):
    """Where a tenant stands in its life (``tenants.lifecycle`` holds the transitions and refusals).

    ``deletion-scheduled``: an owner or support scheduled its erasure; until ``deletion_due_at`` the tenant is
    read-only (downloads and export work) and any owner can cancel. ``erasing``: the waiting period ended and
    the erasure began (its keys are destroyed first); there is no way back. ``erased``: nothing of the tenant
    remains but this row and its audit chain, kept for ``TENANT_AUDIT_RETENTION_DAYS``.
    """

    ACTIVE = "active", "Active"
    DELETION_SCHEDULED = "deletion-scheduled", "Deletion scheduled"
    ERASING = "erasing", "Being erased"
    ERASED = "erased", "Erased"


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
    # Offboarding (``offboarding``): the state, when a scheduled erasure falls due, and when it finished.
    state = models.CharField(max_length=24, choices=TenantState.choices, default=TenantState.ACTIVE)
    deletion_due_at = models.DateTimeField(null=True, blank=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__in=[s.value for s in TenantState]), name="tenant_state_valid"
            ),
            # A scheduled or running erasure has a due date; an active tenant has none.
            models.CheckConstraint(
                condition=models.Q(state=TenantState.ACTIVE, deletion_due_at__isnull=True)
                | (~models.Q(state=TenantState.ACTIVE) & models.Q(deletion_due_at__isnull=False)),
                name="tenant_deletion_due_matches_state",
            ),
            models.CheckConstraint(
                condition=~models.Q(state=TenantState.ERASED) | models.Q(erased_at__isnull=False),
                name="tenant_erased_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def is_sealed(self) -> bool:
        return self.sealed_at is not None

    @property
    def is_read_only(self) -> bool:
        """True from the moment a deletion is scheduled: no uploads, deletes or key changes."""
        return self.state != TenantState.ACTIVE

    @property
    def deletion_scheduled(self) -> bool:
        return self.state == TenantState.DELETION_SCHEDULED


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
