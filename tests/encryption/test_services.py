"""Key custody: register, verify, activate, rotate, disable, seal, unseal, with a real Azure vault."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from audit.models import AuditEvent
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import health, keyring, services
from encryption.format import envelope
from encryption.models import KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod
from tenants.models import Tenant
from tests.encryption.support import enable_cloud_kms, register_azure

pytestmark = pytest.mark.django_db


register = register_azure


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    return enable_cloud_kms(tenant)


def events(tenant: Tenant) -> list[str]:
    return list(AuditEvent.objects.filter(tenant=tenant).order_by("seq").values_list("type", flat=True))


def blob(tenant: Tenant) -> tuple[uuid.UUID, bytes]:
    blob_id = uuid.uuid4()
    dek, _ = keyring.new_data_key(tenant, blob_id, envelope.FORMAT_VERSION)
    return blob_id, dek


def test_registration_needs_cloud_kms_switched_on(
    tenant: Tenant, vault: AzureKeyVaultEmulator, owner: Any
) -> None:
    with pytest.raises(services.KeyCustodyError, match="support"):
        register(tenant, vault, "k", owner)
    assert not TenantKey.objects.filter(tenant=tenant).exists()


def test_a_verified_key_becomes_active_and_protects_new_blobs(
    cloud_tenant: Tenant,
    vault: AzureKeyVaultEmulator,
    kodori_app: Any,
    owner: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    old_blob, old_dek = blob(cloud_tenant)
    with django_capture_on_commit_callbacks() as callbacks:
        key = register(cloud_tenant, vault, "first", owner)
    assert key.status == KeyStatus.PENDING and len(callbacks) == 1  # the probe is queued after commit
    key = services.verify_key(key.pk)
    assert key.status == KeyStatus.ACTIVE and key.last_verified_at is not None
    assert (
        TenantKey.objects.get(tenant=cloud_tenant, wrap_method=WrapMethod.GLOBAL).status == KeyStatus.RETIRED
    )
    active = TenantKeyVersion.objects.get(tenant=cloud_tenant, status=VersionStatus.ACTIVE)
    assert active.kek_id == key.pk and active.version == 2
    new_blob, new_dek = blob(cloud_tenant)
    keyring.cache.clear()
    assert keyring.open_data_key(cloud_tenant, new_blob) == new_dek
    assert keyring.open_data_key(cloud_tenant, old_blob) == old_dek  # rotation is additive
    assert events(cloud_tenant) == ["tenant-kms.registered", "tenant-kms.rotated"]
    assert services.verify_key(key.pk).status == KeyStatus.ACTIVE  # a redelivered task changes nothing
    assert events(cloud_tenant) == ["tenant-kms.registered", "tenant-kms.rotated"]


def test_a_failed_probe_changes_nothing_else(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    keyring.active_tkv(cloud_tenant)
    before = list(TenantKeyVersion.objects.values_list("pk", "status"))
    key = register(cloud_tenant, vault, "no-access", owner)
    vault.revoke(kodori_app.client_id)
    key = services.verify_key(key.pk)
    assert key.status == KeyStatus.FAILED
    assert "Crypto Service Encryption User" in key.last_verify_error
    assert list(TenantKeyVersion.objects.values_list("pk", "status")) == before
    assert (
        TenantKey.objects.get(tenant=cloud_tenant, status=KeyStatus.ACTIVE).wrap_method == WrapMethod.GLOBAL
    )
    assert events(cloud_tenant) == ["tenant-kms.verify-failed"]
    payload = AuditEvent.objects.get(tenant=cloud_tenant).payload
    assert payload["keyIdSuffix"] == key.key_id[-12:] and key.key_id not in str(payload)


def test_rotating_between_customer_keys_records_the_chip(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    first = services.verify_key(register(cloud_tenant, vault, "one", owner).pk)
    first_blob, first_dek = blob(cloud_tenant)
    second = services.verify_key(register(cloud_tenant, vault, "two", owner).pk)
    first.refresh_from_db()
    assert first.status == KeyStatus.RETIRED and second.status == KeyStatus.ACTIVE
    rotated = (
        AuditEvent.objects.filter(tenant=cloud_tenant, type="tenant-kms.rotated").order_by("-seq").first()
    )
    assert rotated is not None
    assert rotated.payload["fromProvider"] == "azure-kv" and rotated.payload["toProvider"] == "azure-kv"
    assert rotated.payload["fromKeyIdSuffix"] == first.key_id[-12:]
    assert rotated.payload["toKeyIdSuffix"] == second.key_id[-12:]
    keyring.cache.clear()
    assert keyring.open_data_key(cloud_tenant, first_blob) == first_dek


def test_disabling_a_retired_key_stops_it_at_once(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    first = services.verify_key(register(cloud_tenant, vault, "old", owner).pk)
    old_blob, _ = blob(cloud_tenant)
    services.verify_key(register(cloud_tenant, vault, "new", owner).pk)
    keyring.open_data_key(cloud_tenant, old_blob)  # cached now
    services.disable_key(TenantKey.objects.get(pk=first.pk), actor=owner)
    with pytest.raises(keyring.KeyUnavailable):
        keyring.open_data_key(cloud_tenant, old_blob)
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed
    disabled = AuditEvent.objects.get(tenant=cloud_tenant, type="tenant-kms.disabled")
    assert disabled.payload["keyRowId"] == first.pk and disabled.payload["previousStatus"] == "retired"


def test_disabling_the_active_key_seals_the_tenant(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    key = services.verify_key(register(cloud_tenant, vault, "only", owner).pk)
    services.disable_key(key, actor=owner)
    cloud_tenant.refresh_from_db()
    assert cloud_tenant.is_sealed and "disabled in Kodori" in cloud_tenant.seal_reason
    assert events(cloud_tenant)[-2:] == ["tenant-kms.disabled", "tenant.sealed"]


def test_revocation_at_the_vault_seals_and_restoring_access_unseals(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    key = services.verify_key(register(cloud_tenant, vault, "revocable", owner).pk)
    assert health.keys_to_reverify() == [key.pk]
    vault.revoke(kodori_app.client_id)
    assert services.reverify_tenant(cloud_tenant) is False
    cloud_tenant.refresh_from_db()
    assert cloud_tenant.is_sealed and "denied" in cloud_tenant.seal_reason
    assert services.reverify_tenant(cloud_tenant) is False  # still refused: no second sealed event
    vault.grant(kodori_app.client_id, ("get", "wrapKey", "unwrapKey"))
    assert services.reverify_tenant(cloud_tenant) is True
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed
    assert events(cloud_tenant)[-4:] == [
        "tenant-kms.unreachable",
        "tenant.sealed",
        "tenant-kms.reachable",
        "tenant.unsealed",
    ]
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE


def test_a_throttled_probe_neither_seals_nor_unseals(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    services.verify_key(register(cloud_tenant, vault, "busy", owner).pk)
    vault.set_faults(throttle_ratio=1.0, retry_after=0.01)
    from django.test import override_settings

    with override_settings(KODORI_KMS_MAX_ATTEMPTS=2):
        assert services.reverify_tenant(cloud_tenant) is False
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed


def test_a_busy_kms_leaves_the_registration_pending_until_retries_run_out(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    from django.test import override_settings

    from encryption.providers import ProviderError

    key = register(cloud_tenant, vault, "busy-at-first", owner)
    vault.set_faults(throttle_ratio=1.0, retry_after=0.01)
    with override_settings(KODORI_KMS_MAX_ATTEMPTS=2), pytest.raises(ProviderError):
        services.verify_key(key.pk)
    key.refresh_from_db()
    assert key.status == KeyStatus.PENDING and events(cloud_tenant) == []
    failed = services.fail_verification(key.pk, "the vault stayed busy")
    assert failed.status == KeyStatus.FAILED and events(cloud_tenant) == ["tenant-kms.verify-failed"]


def test_the_probe_carries_the_tenants_own_context(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, monkeypatch: Any
) -> None:
    from encryption.providers.azure import AzureKeyProvider

    seen: list[int] = []
    real = AzureKeyProvider.wrap

    def spy(self: AzureKeyProvider, plaintext: bytes, context: Any) -> bytes:
        seen.append(context.tenant_id)
        return real(self, plaintext, context)

    monkeypatch.setattr(AzureKeyProvider, "wrap", spy)
    services.verify_key(register(cloud_tenant, vault, "ctx", owner).pk)
    assert seen and set(seen) == {cloud_tenant.pk}
