"""A walk whose target version fills up (``KODORI_TKV_MAX_WRAPS``) gets a new version of the same key and goes
on; it ends, every data key opens, and versions of the active key are never walked: a walk moves data keys
only off versions whose key is retired."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from audit.models import AuditEvent
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, rewrap, services
from encryption.format.envelope import FORMAT_VERSION
from encryption.models import DataKey, KeyStatus, RewrapStatus, TenantKey, TenantKeyVersion, VersionStatus
from encryption.rewrap import walk
from tenants.models import Tenant
from tests.encryption.rewrap.support import finish
from tests.encryption.support import (
    active_azure_key,
    enable_cloud_kms,
    rotate_kek,
    seed_data_keys,
    under,
    unopenable,
)

pytestmark = pytest.mark.django_db

N = 100
BATCH = 10
MAX_WRAPS = 40


@pytest.fixture
def small(settings: Any) -> None:
    settings.KODORI_REWRAP_BATCH_SIZE = BATCH
    settings.KODORI_TKV_MAX_WRAPS = MAX_WRAPS
    settings.KODORI_REWRAP_AFTER_ROTATION = False
    keyring.cache.clear()


def test_a_walk_whose_target_fills_up_moves_on_to_new_versions_of_the_same_key_and_ends(
    tenant: Tenant, owner: Any, small: None
) -> None:
    old = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, N, old)
    first_target = rotate_kek(tenant)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None and job.total == N and job.target_tkv_id == first_target.pk

    outcomes = finish(job, max_batches=60)
    assert outcomes[-1] == walk.Outcome.FINISHED
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == job.total == N and job.unreadable == 0
    assert list(job.versions) == [str(old.pk)]  # the only source: the version under the retired key

    active_kek = first_target.kek
    assert active_kek.status == KeyStatus.ACTIVE
    targets = list(TenantKeyVersion.objects.filter(tenant=tenant, kek=active_kek).order_by("version"))
    assert len(targets) == 3  # 40 + 40 + 20: the walk itself filled two versions
    assert [t.wrap_count for t in targets] == [40, 40, 20]
    assert [under(t) for t in targets] == [40, 40, 20]  # filled versions were never walked again
    assert all(t.wrap_count <= MAX_WRAPS for t in targets)
    assert [t.status for t in targets] == [VersionStatus.RETIRED, VersionStatus.RETIRED, VersionStatus.ACTIVE]
    assert job.target_tkv_id == targets[-1].pk

    old.refresh_from_db()
    assert old.kek.status == KeyStatus.RETIRED
    assert under(old) == 0 and old.status == VersionStatus.DESTROYED and bytes(old.wrapped_key) == b""
    assert not DataKey.objects.filter(tenant=tenant, tkv__kek=old.kek).exists()
    assert job.destroyed_versions == [old.version] and job.unreferenced_keys == [old.kek_id]
    assert unopenable(tenant, keys, through_keyring=20) == []
    (completed,) = AuditEvent.objects.filter(tenant=tenant, type="rewrap.completed")
    assert completed.payload["rewrapped"] == N and completed.payload["destroyedVersions"] == [old.version]


def test_a_second_walk_after_a_filled_one_finds_nothing_to_move(
    tenant: Tenant, owner: Any, small: None
) -> None:
    seed_data_keys(tenant, N // 2, keyring.active_tkv(tenant))
    rotate_kek(tenant)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    finish(job, max_batches=40)
    assert job.status == RewrapStatus.COMPLETED and job.done == N // 2
    with pytest.raises(rewrap.RewrapError, match="Nothing to re-wrap"):
        rewrap.start_rewrap(tenant, actor=owner)


def test_a_walk_never_moves_data_keys_between_versions_of_the_active_key(tenant: Tenant, owner: Any) -> None:
    first = keyring.active_tkv(tenant)
    seed_data_keys(tenant, 30, first)
    second = keyring.add_key_version(tenant)
    first.refresh_from_db()
    assert second.kek_id == first.kek_id and first.status == VersionStatus.RETIRED
    before = list(DataKey.objects.filter(tenant=tenant).values_list("pk", "tkv_id", "wrapped_dek"))

    with pytest.raises(rewrap.RewrapError, match="Nothing to re-wrap"):
        rewrap.start_rewrap(tenant, actor=owner)
    assert list(DataKey.objects.filter(tenant=tenant).values_list("pk", "tkv_id", "wrapped_dek")) == before
    assert not AuditEvent.objects.filter(tenant=tenant, type="rewrap.started").exists()
    first.refresh_from_db()
    assert first.status == VersionStatus.RETIRED and under(first) == 30


def test_versions_of_the_active_key_stay_put_while_a_retired_keys_versions_move(
    tenant: Tenant, owner: Any, small: None
) -> None:
    """Two versions under the old key, two under the new one, each with data keys: only the old key's move."""
    v1 = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, 15, v1)
    v2 = keyring.add_key_version(tenant)
    keys |= seed_data_keys(tenant, 15, v2)
    v3 = rotate_kek(tenant)
    keys |= seed_data_keys(tenant, 12, v3)
    v4 = keyring.add_key_version(tenant)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None and job.total == 30
    assert set(job.versions) == {str(v1.pk), str(v2.pk)}

    finish(job, max_batches=40)
    assert job.status == RewrapStatus.COMPLETED and job.done == 30
    assert under(v3) == 12  # a version of the active key, never a source
    assert under(v4) == 30
    v3.refresh_from_db()
    assert v3.status == VersionStatus.RETIRED  # not destroyed: it still wraps data keys
    assert sorted(job.destroyed_versions) == [v1.version, v2.version]
    assert unopenable(tenant, keys) == []


def test_a_full_version_of_a_disabled_key_never_gets_a_kodori_managed_successor(
    tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, settings: Any
) -> None:
    """Upload.begin checks the seal on the request's tenant, read when the request started; a key disabled
    after that must still stop the upload. When its version is also full, filling it must not fall back to
    a Kodori-managed key: new files would be wrapped under a key the customer never chose, which would then
    be the tenant's active key (and re-enabling the customer's key would only make it retired)."""
    settings.KODORI_TKV_MAX_WRAPS = 5
    enable_cloud_kms(tenant)
    key = active_azure_key(tenant, vault, "own", owner)
    seed_data_keys(tenant, 5)  # the customer key's version is full
    stale = Tenant.objects.get(pk=tenant.pk)  # what the request saw: not sealed
    services.disable_key(key, actor=owner)
    versions = list(TenantKeyVersion.objects.filter(tenant=tenant).values_list("pk", "kek_id", "status"))
    keys = list(TenantKey.objects.filter(tenant=tenant).values_list("pk", "wrap_method", "status"))

    with pytest.raises(keyring.KeyUnavailable):
        keyring.new_data_key(stale, uuid.uuid4(), FORMAT_VERSION)
    assert list(TenantKey.objects.filter(tenant=tenant).values_list("pk", "wrap_method", "status")) == keys
    assert (
        list(TenantKeyVersion.objects.filter(tenant=tenant).values_list("pk", "kek_id", "status")) == versions
    )
