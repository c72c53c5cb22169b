"""The audit log's tables: append-only events in one hash chain per tenant, and signed checkpoints of heads.

``AuditEvent`` and ``Checkpoint`` refuse updates and deletes three times over: their ``save``/``delete``,
their querysets' ``update``/``delete``, and a PostgreSQL trigger (migration 0002) for anything that bypasses
the ORM. ``ChainVerification`` is a mutable cache of how far each chain was last verified.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.functions import Upper

from tenants.querysets import TenantScopedQuerySet


class EventType(models.TextChoices):
    """Every kind of event. The value is the wire name users filter on (``types=tenant-kms.*``)."""

    TENANT_KMS_REGISTERED = "tenant-kms.registered", "Key registered"
    TENANT_KMS_ROTATED = "tenant-kms.rotated", "Key rotated"
    TENANT_KMS_DISABLED = "tenant-kms.disabled", "Key disabled"
    TENANT_KMS_VERIFY_FAILED = "tenant-kms.verify-failed", "Key verification failed"
    TENANT_KMS_RE_ENABLED = "tenant-kms.re-enabled", "Key re-enabled"
    TENANT_KMS_REMOVED = "tenant-kms.removed", "Failed key registration removed"
    TENANT_KMS_UNREACHABLE = "tenant-kms.unreachable", "Key refuses Kodori"
    TENANT_KMS_REACHABLE = "tenant-kms.reachable", "Key answers again"
    TENANT_KMS_AUTH_SECRET_ROTATED = (
        "tenant-kms.auth-secret-rotated",
        "Kodori-managed key re-wrapped (AUTH_SECRET)",
    )
    TENANT_SEALED = "tenant.sealed", "Tenant sealed"
    TENANT_UNSEALED = "tenant.unsealed", "Tenant unsealed"
    TENANT_CLOUD_KMS_ENABLED = "tenant.cloud-kms-enabled", "Cloud KMS switched on"
    TENANT_CLOUD_KMS_DISABLED = "tenant.cloud-kms-disabled", "Cloud KMS switched off"
    REWRAP_STARTED = "rewrap.started", "Re-wrap started"
    REWRAP_COMPLETED = "rewrap.completed", "Re-wrap completed"
    REWRAP_FAILED = "rewrap.failed", "Re-wrap failed"
    REWRAP_PAUSED = "rewrap.paused", "Re-wrap paused"
    REWRAP_RESUMED = "rewrap.resumed", "Re-wrap resumed"
    REWRAP_CANCELLED = "rewrap.cancelled", "Re-wrap cancelled"
    MEMBERSHIP_ADDED = "membership.added", "Member added"
    MEMBERSHIP_ROLE_CHANGED = "membership.role-changed", "Role changed"
    MEMBERSHIP_REMOVED = "membership.removed", "Member removed"
    API_TOKEN_CREATED = "api-token.created", "API token created"
    API_TOKEN_REVOKED = "api-token.revoked", "API token revoked"
    BLOB_UPLOADED = "blob.uploaded", "Blob uploaded"
    BLOB_DELETED = "blob.deleted", "Blob deleted"
    BLOB_DOWNLOADED = "blob.downloaded", "Blob downloaded"
    BLOB_CORRUPT = "blob.corrupt", "Blob damaged"
    BLOB_REPAIRED = "blob.repaired", "Damaged blob whole again"
    AUDIT_EXPORTED = "audit.exported", "Audit log exported"


class ImmutableRecordError(Exception):
    """Raised on any attempt to change or delete an audit event or checkpoint."""


class _AppendOnlyQuerySet(TenantScopedQuerySet):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableRecordError(f"{self.model.__name__} rows are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableRecordError(f"{self.model.__name__} rows are append-only")


class _AppendOnly(models.Model):
    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableRecordError(f"{type(self).__name__} rows are append-only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableRecordError(f"{type(self).__name__} rows are append-only")


class AuditEvent(_AppendOnly):
    """Event ``seq`` of its tenant's chain. Written only by ``audit.services.record``.

    The actor is copied (id, name, e-mail) rather than linked, so events outlive users, and so deleting a user
    never has to touch this table. ``actor_id`` None means the system (a task, a periodic check).
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+", db_index=False)
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64, choices=EventType.choices)
    created_at = models.DateTimeField()
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=200)
    actor_email = models.CharField(max_length=254, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.CharField(max_length=45, blank=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = _AppendOnlyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "seq"], name="audit_event_unique_tenant_seq"),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_event_seq_positive"),
        ]
        indexes = [
            models.Index(fields=["tenant", "type", "seq"], name="audit_event_tenant_type"),
            models.Index(fields=["tenant", "created_at"], name="audit_event_tenant_created"),
            models.Index("tenant", Upper("actor_email"), "seq", name="audit_event_tenant_actor"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"

    @property
    def event_type(self) -> EventType | None:
        try:
            return EventType(self.type)
        except ValueError:
            return None

    @property
    def is_system(self) -> bool:
        return self.actor_id is None


class CheckpointReason(models.TextChoices):
    SCHEDULED = "scheduled", "Periodic"
    EXPORT = "export", "Export"
    MANUAL = "manual", "Manual"


class Checkpoint(_AppendOnly):
    """An Ed25519 signature by the deployment key over (tenant, seq, hash, signed_at) of a chain's event.

    A later chain must still contain event ``seq`` with this ``hash``: that is what catches tail truncation
    and rewrites that a bare hash chain cannot.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+", db_index=False)
    seq = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    key_id = models.CharField(max_length=16)
    public_key = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)
    reason = models.CharField(
        max_length=16, choices=CheckpointReason.choices, default=CheckpointReason.SCHEDULED
    )

    objects = _AppendOnlyQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "seq"], name="audit_checkpoint_unique_seq")]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq} of tenant {self.tenant_id}"


class ChainVerification(models.Model):
    """How far a tenant's chain was verified, so ``/audit`` only checks what is new. A cache, not evidence."""

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    verified_seq = models.PositiveBigIntegerField(default=0)
    verified_hash = models.CharField(max_length=64)
    # Checkpoints up to this primary key were checked (signature, and against their event).
    checkpoint_pk = models.BigIntegerField(default=0)
    verified_at = models.DateTimeField()
    full_verified_at = models.DateTimeField(null=True, blank=True)
    broken_seq = models.PositiveBigIntegerField(null=True, blank=True)
    broken_reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} verified through #{self.verified_seq}"
