"""Helpers of the key custody tests: a tenant on cloud KMS, Azure keys registered and verified through the
real services, the audit story of a tenant, and downloads through the real blob view.

Not a conftest: each test module imports what it uses. The Azure vault emulator and Kodori's settings for it
come from ``tests/encryption/conftest.py`` (``vault``, ``kodori_app``).
"""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from blobs.models import Blob
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, services
from encryption.models import TenantKey, WrapMethod
from tenants.models import Tenant
from tests.encryption.conftest import customer_key_url


def enable_cloud_kms(tenant: Tenant) -> Tenant:
    """Switch cloud KMS on for ``tenant`` (support's job) and start from an empty key cache."""
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.cache.clear()
    return tenant


def register_azure(tenant: Tenant, vault: AzureKeyVaultEmulator, name: str, actor: Any) -> TenantKey:
    """Create key ``name`` in the vault and register its versioned URL for ``tenant`` (pending)."""
    return services.register_key(
        tenant,
        WrapMethod.CUSTOMER_KMS_AZURE,
        customer_key_url(vault, name),
        {"directory_id": vault.directory_id},
        actor=actor,
    )


def verified(key: TenantKey) -> TenantKey:
    """Run the probe the verify task runs, and return the key as it is now."""
    services.verify_key(key.pk)
    return TenantKey.objects.get(pk=key.pk)


def active_azure_key(tenant: Tenant, vault: AzureKeyVaultEmulator, name: str, actor: Any) -> TenantKey:
    """Register and verify an Azure key: it is the tenant's active key afterwards."""
    return verified(register_azure(tenant, vault, name, actor))


def fresh(key: TenantKey) -> TenantKey:
    return TenantKey.objects.get(pk=key.pk)


def story(tenant: Tenant, after: int = 0) -> list[AuditEvent]:
    """The tenant's audit events after sequence number ``after``, in order."""
    return list(AuditEvent.objects.filter(tenant=tenant, seq__gt=after).order_by("seq"))


def types(events: list[AuditEvent]) -> list[str]:
    return [event.type for event in events]


def last_seq(tenant: Tenant) -> int:
    event = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").first()
    return event.seq if event is not None else 0


def download(client: Client, blob: Blob) -> tuple[int, bytes]:
    """GET the blob through the real download page; (status, body), the stream read to its end."""
    keyring.cache.clear()  # every download unwraps its key version through the provider again
    response = client.get(reverse("blobs:download", args=[blob.pk]))
    if response.streaming:
        return response.status_code, b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return response.status_code, response.content
