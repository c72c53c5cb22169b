"""Real concurrency on PostgreSQL: two activations racing for one tenant never both win."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connection

from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, services
from encryption.format import envelope
from encryption.models import KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod
from tenants.models import Tenant
from tests.encryption.conftest import customer_key_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TRIALS = 200


def _race(*keys: TenantKey) -> list[BaseException]:
    start = threading.Barrier(len(keys))
    errors: list[BaseException] = []

    def activate(key: TenantKey) -> None:
        try:
            start.wait()
            services.activate_key(key)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection; give it back

    threads = [threading.Thread(target=activate, args=(key,)) for key in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_activations_never_leave_two_active_keys(
    tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    keyring.cache.clear()
    url = customer_key_url(vault, "race")
    blobs: list[tuple[uuid.UUID, bytes]] = []
    double_active = 0
    for _trial in range(TRIALS):
        pending = [
            TenantKey.objects.create(
                tenant=tenant,
                wrap_method=WrapMethod.CUSTOMER_KMS_AZURE,
                key_id=url,
                config={"directory_id": vault.directory_id},
            )
            for _ in range(2)
        ]
        assert _race(*pending) == []
        active_keys = TenantKey.objects.filter(tenant=tenant, status=KeyStatus.ACTIVE).count()
        active_versions = TenantKeyVersion.objects.filter(tenant=tenant, status=VersionStatus.ACTIVE).count()
        double_active += active_keys != 1 or active_versions != 1
        statuses = sorted(
            TenantKey.objects.filter(pk__in=[k.pk for k in pending]).values_list("status", flat=True)
        )
        assert statuses == [KeyStatus.ACTIVE, KeyStatus.RETIRED]
        blob_id = uuid.uuid4()
        dek, _ = keyring.new_data_key(tenant, blob_id, envelope.FORMAT_VERSION)
        blobs.append((blob_id, dek))
    assert double_active == 0
    # 2 activations per trial, each a new version; versions are dense and unique per tenant.
    versions = list(
        TenantKeyVersion.objects.filter(tenant=tenant).order_by("version").values_list("version", flat=True)
    )
    assert versions == list(range(1, 2 * TRIALS + 1))
    keyring.cache.clear()
    assert all(keyring.open_data_key(tenant, blob_id) == dek for blob_id, dek in blobs)
