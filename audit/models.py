"""The audit log's tables: append-only events in one hash chain per tenant, and signed checkpoints of heads.

``AuditEvent`` and ``Checkpoint`` refuse updates and deletes three times over: their ``save``/``delete``,
their querysets' ``update``/``delete``, and a PostgreSQL trigger (migration 0002) for anything that bypasses
the ORM. ``ChainVerification`` is a mutable cache of how far each chain was last verified. ``ChainBreak``
remembers every break a verification found, until a person acknowledges it: the database refuses to delete
one, or to change it other than by acknowledging it once (migration 0008).
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
    TENANT_DELETION_SCHEDULED = "tenant.deletion-scheduled", "Tenant deletion scheduled"
    TENANT_DELETION_CANCELLED = "tenant.deletion-cancelled", "Tenant deletion cancelled"
    TENANT_EXPORTED = "tenant.exported", "Tenant export downloaded"
    TENANT_ERASURE_STARTED = "tenant.erasure-started", "Tenant erasure began (keys destroyed)"
    TENANT_ERASED = "tenant.erased", "Tenant erased"
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
    BLOB_UPLOADED = "blob.uploaded", "File uploaded"
    BLOB_DELETED = "blob.deleted", "File deleted"
    BLOB_DOWNLOADED = "blob.downloaded", "File downloaded"
    BLOB_CORRUPT = "blob.corrupt", "File damaged"
    BLOB_REPAIRED = "blob.repaired", "Damaged file whole again"
    AUDIT_EXPORTED = "audit.exported", "Audit log exported"
    AUDIT_BREAK_ACKNOWLEDGED = "audit.break-acknowledged", "Audit chain break acknowledged"


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

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} verified through #{self.verified_seq}"


class BreakKind(models.TextChoices):
    """What a verification found. The first seven are the offline verifier's kinds (``verify_bundle``)."""

    EDITED = "edited", "an event was edited"
    RELINKED = "relinked", "an event was inserted or removed"
    MISSING = "missing", "events are missing"
    REORDERED = "reordered", "events are out of order"
    FOREIGN = "foreign", "an event of another tenant"
    MALFORMED = "malformed", "an event cannot be read"
    REWRITTEN = "rewritten", "the chain differs from what was signed"
    TRUNCATED = "truncated", "the end of the chain was cut off"
    BAD_SIGNATURE = "bad-signature", "a checkpoint's signature is not valid"
    CHECKPOINT_MISSING = "checkpoint-missing", "signed checkpoints were deleted"
    WITNESS_INVALID = "witness-invalid", "a witness object is not valid"


class AcknowledgedVia(models.TextChoices):
    OWNER = "owner", "the tenant's owner, on /audit"
    SUPPORT = "support", "Kodori support, in the admin"
    OPERATOR = "operator", "an operator, with manage.py acknowledge_audit_break"


class ChainBreak(models.Model):
    """A break a verification found in a tenant's chain, kept until a person acknowledges it with a reason.

    (``first_bad_seq``, ``kind``, ``detail``) is what was found: a later verification that finds the same
    thing recognises it (an acknowledged break is then passed over, and the rest of the chain verified); a
    break at another position, of another kind or with other details is new. Rows are never deleted.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")
    first_bad_seq = models.PositiveBigIntegerField()
    last_bad_seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=32, choices=BreakKind.choices)
    detail = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    found_at = models.DateTimeField()
    found_by = models.CharField(max_length=32)
    last_seen_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    ack_actor_id = models.BigIntegerField(null=True, blank=True)
    ack_actor_name = models.CharField(max_length=200, blank=True)
    ack_actor_email = models.CharField(max_length=254, blank=True)
    ack_via = models.CharField(max_length=16, choices=AcknowledgedVia.choices, blank=True)
    ack_reason = models.TextField(blank=True)
    # The ``audit.break-acknowledged`` event that records the acknowledgement in the chain itself.
    ack_seq = models.PositiveBigIntegerField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "first_bad_seq", "kind", "detail"], name="audit_break_unique_finding"
            ),
            models.CheckConstraint(
                condition=models.Q(last_bad_seq__gte=models.F("first_bad_seq")), name="audit_break_range"
            ),
            models.CheckConstraint(
                condition=models.Q(acknowledged_at__isnull=True)
                | (~models.Q(ack_reason="") & models.Q(ack_seq__isnull=False)),
                name="audit_break_ack_has_reason_and_event",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "acknowledged_at"], name="audit_break_tenant_ack")]

    def __str__(self) -> str:
        return f"break at #{self.first_bad_seq} ({self.kind}) of tenant {self.tenant_id}"

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def span(self) -> str:
        """``#4`` or ``#4..#9``."""
        last = self.last_bad_seq
        return f"#{self.first_bad_seq}" if last == self.first_bad_seq else f"#{self.first_bad_seq}..#{last}"
