"""The tenant key hierarchy as rows: registered KEKs, tenant key versions (TKVs) and per-blob data keys.

::

    TenantKey          a key-encryption key (KEK) a tenant uses: kodori-managed, or in a cloud KMS
     └─ TenantKeyVersion   a random 256-bit key, stored only wrapped by its KEK
         └─ DataKey        a blob's 256-bit DEK, stored only wrapped by a TKV (AES-256-GCM)

No plaintext key is ever stored here. The database enforces the invariants the rest of the code relies on:
at most one active KEK and one active TKV per tenant, version numbers unique per tenant, one data key per
blob.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from tenants.models import Tenant
from tenants.querysets import TenantScopedQuerySet


class WrapMethod(models.TextChoices):
    """Where a KEK lives (the "wrap method" customers see in the docs)."""

    GLOBAL = "global", "Kodori-managed"
    OPERATOR_KMS_AWS = "operator_kms_aws", "Operator AWS KMS"
    OPERATOR_KMS_AZURE = "operator_kms_azure", "Operator Azure Key Vault"
    OPERATOR_KMS_GCP = "operator_kms_gcp", "Operator GCP Cloud KMS"
    CUSTOMER_KMS_AWS = "customer_kms_aws", "Your AWS KMS key"
    CUSTOMER_KMS_AZURE = "customer_kms_azure", "Your Azure Key Vault key"
    CUSTOMER_KMS_GCP = "customer_kms_gcp", "Your GCP Cloud KMS key"

    @property
    def is_customer(self) -> bool:
        return self.value.startswith("customer_")


class KeyStatus(models.TextChoices):
    """Lifecycle of a registered KEK (see ARCHITECTURE, "Lifecycle of a registered key")."""

    PENDING = "pending", "Pending verification"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"
    FAILED = "failed", "Verification failed"
    DISABLED = "disabled", "Disabled"


class VersionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"
    DESTROYED = "destroyed", "Destroyed"


class TenantKey(models.Model):
    """One registration of a KEK for a tenant. Kodori-managed tenants get a ``global`` row automatically."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="keys")
    wrap_method = models.CharField(max_length=32, choices=WrapMethod.choices)
    # The provider's identifier (ARN, Key Vault URL, CryptoKey path); empty for kodori-managed keys.
    key_id = models.CharField(max_length=512, blank=True)
    # The key's canonical identity (``encryption.identity``): an alias ARN resolved to its key ARN, a GCP
    # key-version path cut to its CryptoKey. One row per canonical key and tenant; empty for kodori-managed.
    canonical_id = models.CharField(max_length=512, blank=True)
    # Non-secret provider configuration (region, role ARN, directory id ...). Never credentials.
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=KeyStatus.choices, default=KeyStatus.PENDING)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_verify_error = models.TextField(blank=True)
    # Set while the key's KMS refuses Kodori (a probe or a use met access denied, disabled, not found);
    # cleared when it answers again. Kodori then opens nothing under the key, in any process, and names it.
    refused_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "tenant_kms_keys"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(status=KeyStatus.ACTIVE),
                name="tenant_key_one_active_per_tenant",
            ),
            models.UniqueConstraint(
                fields=["tenant", "canonical_id"],
                condition=~models.Q(canonical_id=""),
                name="tenant_key_one_row_per_kms_key",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in KeyStatus]), name="tenant_key_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(wrap_method__in=[m.value for m in WrapMethod]),
                name="tenant_key_method_valid",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_wrap_method_display()} {self.key_id_suffix or ''} ({self.status})".strip()

    @property
    def key_id_suffix(self) -> str:
        """The last 12 characters: what the UI and the audit log show instead of the full identifier."""
        return self.key_id[-12:]

    @property
    def usable(self) -> bool:
        """Whether data protected by this KEK may be unwrapped (retired keys still unwrap old data)."""
        return self.status in (KeyStatus.ACTIVE, KeyStatus.RETIRED)

    @property
    def label(self) -> str:
        """How pages and messages name the key: provider and identifier suffix."""
        if not self.key_id:
            return "the Kodori-managed key"
        return f"{WrapMethod(self.wrap_method).label} …{self.key_id_suffix}"

    @property
    def is_customer(self) -> bool:
        return WrapMethod(self.wrap_method).is_customer


class TenantExternalId(models.Model):
    """The ExternalId Kodori sends when it assumes a tenant's AWS role (AWS's confused-deputy guidance).

    Generated by Kodori (192 random bits), shown to the tenant's owners to paste into their role's trust
    policy, never chosen or edited by the tenant: another tenant who registers the same role ARN gets Kodori
    to send *its own* ExternalId, which that trust policy refuses.
    """

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="aws_external_id")
    value = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tenant_external_ids"

    def __str__(self) -> str:
        return f"ExternalId of {self.tenant.slug}"


class TenantKeyVersion(models.Model):
    """A tenant key version (TKV): 256 random bits, stored only wrapped by ``kek``.

    ``wrap_count`` counts the DEKs wrapped under this version with random 96-bit nonces; the version is
    rotated long before AES-GCM's 2^32-invocation bound (``KODORI_TKV_MAX_WRAPS``).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="key_versions")
    kek = models.ForeignKey(TenantKey, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    # The provider's ciphertext of the 32-byte key; emptied when the version is destroyed.
    wrapped_key = models.BinaryField()
    status = models.CharField(max_length=16, choices=VersionStatus.choices, default=VersionStatus.ACTIVE)
    wrap_count = models.BigIntegerField(default=0)
    # How many data keys this version wrapped when the counters were last folded; what it wraps now is this
    # plus its pending ``DataKeyCountDelta`` rows (``encryption.counters``, migration 0005).
    data_key_count = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "tenant_key_versions"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "version"], name="tkv_unique_version_per_tenant"),
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(status=VersionStatus.ACTIVE),
                name="tkv_one_active_per_tenant",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in VersionStatus]), name="tkv_status_valid"
            ),
            # A destroyed version keeps its row (audit trail) but no key material.
            models.CheckConstraint(
                condition=~models.Q(status=VersionStatus.DESTROYED) | models.Q(wrapped_key=b""),
                name="tkv_destroyed_is_empty",
            ),
            models.CheckConstraint(
                condition=models.Q(data_key_count__gte=0), name="tkv_data_key_count_valid"
            ),
        ]
        ordering = ["tenant", "-version"]

    def __str__(self) -> str:
        return f"{self.tenant.slug} key version {self.version} ({self.status})"


class DataKey(models.Model):
    """A blob's data-encryption key, wrapped by a TKV. The blob row points here; encryption owns the row.

    ``wrapped_dek`` is nonce ‖ ciphertext ‖ tag (60 bytes); its associated data binds the tenant, the blob id,
    the TKV id and the blob format version (``keyring.dek_aad``), so a wrapped DEK copied to another row,
    blob, tenant or version does not open.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="data_keys")
    blob_id = models.UUIDField(unique=True)
    # No single-column index: ``data_keys_tkv_id`` (tkv, id) serves the foreign key, the walk and the counts.
    tkv = models.ForeignKey(
        TenantKeyVersion, on_delete=models.PROTECT, related_name="data_keys", db_index=False
    )
    wrapped_dek = models.BinaryField()
    format_version = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "data_keys"
        indexes = [models.Index(fields=["tkv", "id"], name="data_keys_tkv_id")]

    def __str__(self) -> str:
        return f"data key of blob {self.blob_id}"


class DataKeyCountDelta(models.Model):
    """Data keys one statement added (+) or removed (-) under a key version, not yet folded into
    ``TenantKeyVersion.data_key_count``. Written only by the triggers on ``data_keys``; no foreign key, so
    appending one never waits for a lock."""

    tkv_id = models.BigIntegerField(db_index=True)
    n = models.BigIntegerField()

    class Meta:
        db_table = "data_key_count_deltas"

    def __str__(self) -> str:
        return f"{self.n:+d} data keys under key version {self.tkv_id}"


class RewrapStatus(models.TextChoices):
    """Where a re-wrap walk stands. ``running`` and ``paused`` are live: at most one live job per tenant."""

    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    CANCELLED = "cancelled", "Cancelled"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


LIVE_REWRAP_STATUSES = (RewrapStatus.RUNNING, RewrapStatus.PAUSED)


class RewrapTrigger(models.TextChoices):
    MANUAL = "manual", "Started by an owner or admin"
    ROTATION = "rotation", "Started automatically after a rotation"


class RewrapJob(models.Model):
    """One walk that moves a tenant's data keys from older key versions to ``target_tkv`` (the active one).

    The row is the walk's checkpoint: ``cursor_tkv_id``/``cursor_id`` say where the next batch starts, and
    ``done`` and the per-version counts in ``versions`` change in the same transaction as the data keys they
    count, so after a crash they are exactly what the table holds. ``updated_at`` is the heartbeat a watchdog
    uses to resume a walk whose worker died.

    ``versions`` maps a source TKV id (as text) to ``{"version", "kek", "total", "done"}``.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="rewrap_jobs")
    status = models.CharField(max_length=16, choices=RewrapStatus.choices, default=RewrapStatus.RUNNING)
    trigger = models.CharField(max_length=16, choices=RewrapTrigger.choices, default=RewrapTrigger.MANUAL)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_tkv = models.ForeignKey(TenantKeyVersion, on_delete=models.PROTECT, related_name="+")
    total = models.BigIntegerField(default=0)
    done = models.BigIntegerField(default=0)
    # Wrapped DEKs that do not authenticate under their own version: left in place and reported.
    unreadable = models.BigIntegerField(default=0)
    versions = models.JSONField(default=dict, blank=True)
    cursor_tkv_id = models.BigIntegerField(null=True, blank=True)
    cursor_id = models.BigIntegerField(default=0)
    rate = models.FloatField(default=0.0)  # data keys per second, smoothed over recent batches
    last_error = models.TextField(blank=True)
    destroyed_versions = models.JSONField(default=list, blank=True)
    unreferenced_keys = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "rewrap_jobs"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(status__in=[s.value for s in LIVE_REWRAP_STATUSES]),
                name="rewrap_one_live_job_per_tenant",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in RewrapStatus]), name="rewrap_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(done__gte=0, unreadable__gte=0, total__gte=0), name="rewrap_counts_valid"
            ),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"re-wrap #{self.pk} of {self.tenant_id} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_REWRAP_STATUSES

    @property
    def remaining(self) -> int:
        return max(self.total - self.done - self.unreadable, 0)

    @property
    def percent(self) -> int:
        return 100 if self.total == 0 else min(100, int(100 * (self.done + self.unreadable) / self.total))

    @property
    def eta_seconds(self) -> int | None:
        if self.status != RewrapStatus.RUNNING or self.rate <= 0:
            return None
        return int(self.remaining / self.rate + 0.5)

    @property
    def eta_display(self) -> str:
        seconds = self.eta_seconds
        if seconds is None:
            return ""
        if seconds < 90:
            return f"{seconds} s"
        if seconds < 5400:
            return f"{round(seconds / 60)} min"
        return f"{seconds / 3600:.1f} h"

    @property
    def version_rows(self) -> list[dict[str, Any]]:
        """The per-version counts, oldest version first, each with what is left to move."""
        rows = [
            {**entry, "tkv_id": int(pk), "left": max(entry.get("total", 0) - entry.get("done", 0), 0)}
            for pk, entry in self.versions.items()
        ]
        return sorted(rows, key=lambda row: row.get("version", 0))
