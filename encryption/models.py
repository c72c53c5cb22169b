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

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "tenant_kms_keys"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(status="active"),
                name="tenant_key_one_active_per_tenant",
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
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "tenant_key_versions"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "version"], name="tkv_unique_version_per_tenant"),
            models.UniqueConstraint(
                fields=["tenant"], condition=models.Q(status="active"), name="tkv_one_active_per_tenant"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in VersionStatus]), name="tkv_status_valid"
            ),
            # A destroyed version keeps its row (audit trail) but no key material.
            models.CheckConstraint(
                condition=~models.Q(status="destroyed") | models.Q(wrapped_key=b""),
                name="tkv_destroyed_is_empty",
            ),
        ]
        ordering = ["tenant", "-version"]

    def __str__(self) -> str:
        return f"{self.tenant.slug} key version {self.version} ({self.status})"


class DataKey(models.Model):
    """A blob's data-encryption key, wrapped by a TKV. The blob row points here; encryption owns the row.

    ``wrapped_dek`` is nonce ‖ ciphertext ‖ tag (60 bytes); its associated data binds the tenant, the blob id,
    the TKV id and the blob format version (``keyring.dek_aad``), so a wrapped DEK copied to another row,
    blob,
    tenant or version does not open.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="data_keys")
    blob_id = models.UUIDField(unique=True)
    tkv = models.ForeignKey(TenantKeyVersion, on_delete=models.PROTECT, related_name="data_keys")
    wrapped_dek = models.BinaryField()
    format_version = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "data_keys"
        indexes = [models.Index(fields=["tkv", "id"], name="data_keys_tkv_id")]

    def __str__(self) -> str:
        return f"data key of blob {self.blob_id}"
