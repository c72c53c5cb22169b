"""The key hierarchy: TKVs under a KEK, DEKs under a TKV, the cache, rotation and the database's
invariants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings

from encryption import keyring
from encryption.format.envelope import FORMAT_VERSION as FORMAT_V1
from encryption.models import DataKey, KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod
from encryption.providers import ProviderError
from encryption.providers.local import GlobalKeyProvider
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    keyring.cache.clear()
    yield
    keyring.cache.clear()


@pytest.fixture
def unwraps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls that reach the provider's unwrap (the real one still runs)."""
    calls: list[int] = []
    real = GlobalKeyProvider.unwrap

    def counting(self: GlobalKeyProvider, ciphertext: bytes, context: Any) -> bytes:
        calls.append(context.key_version)
        return real(self, ciphertext, context)

    monkeypatch.setattr(GlobalKeyProvider, "unwrap", counting)
    return calls


def new_key(tenant: Tenant) -> tuple[uuid.UUID, bytes]:
    blob_id = uuid.uuid4()
    dek, _row = keyring.new_data_key(tenant, blob_id, FORMAT_V1)
    return blob_id, dek


def test_it_provisions_a_kodori_managed_key_on_first_use(tenant: Tenant) -> None:
    blob_id, dek = new_key(tenant)
    kek = TenantKey.objects.get(tenant=tenant)
    assert kek.wrap_method == WrapMethod.GLOBAL and kek.status == KeyStatus.ACTIVE
    tkv = TenantKeyVersion.objects.get(tenant=tenant)
    assert tkv.version == 1 and tkv.status == VersionStatus.ACTIVE and tkv.wrap_count == 1
    assert keyring.open_data_key(tenant, blob_id) == dek
    assert len(dek) == 32 and len(bytes(DataKey.objects.get(blob_id=blob_id).wrapped_dek)) == 60


def test_every_blob_gets_a_different_dek(tenant: Tenant) -> None:
    deks = {new_key(tenant)[1] for _ in range(50)}
    assert len(deks) == 50


def test_a_cached_tkv_makes_no_provider_call(tenant: Tenant, unwraps: list[int]) -> None:
    keyring.active_tkv(tenant)
    keyring.cache.clear()
    for _ in range(20):
        blob_id, dek = new_key(tenant)
        assert keyring.open_data_key(tenant, blob_id) == dek
    assert unwraps == [1]


def test_an_expired_entry_is_unwrapped_again(tenant: Tenant, unwraps: list[int]) -> None:
    blob_id, _ = new_key(tenant)
    keyring.cache.clear()
    with override_settings(KODORI_TKV_CACHE_TTL_DEFAULT=0.0):
        keyring.open_data_key(tenant, blob_id)
        keyring.open_data_key(tenant, blob_id)
    assert unwraps == [1, 1]


def test_a_failure_is_never_cached(tenant: Tenant, unwraps: list[int]) -> None:
    blob_id, dek = new_key(tenant)
    keyring.cache.clear()
    with (
        override_settings(AUTH_SECRET="another-secret-entirely-0123456789abcdef"),
        pytest.raises(ProviderError),
    ):
        keyring.open_data_key(tenant, blob_id)
    assert len(keyring.cache) == 0
    assert keyring.open_data_key(tenant, blob_id) == dek
    assert len(unwraps) == 2


def test_the_cache_is_bounded() -> None:
    small = keyring.TKVCache(max_entries=3)
    for i in range(10):
        small.put(i, bytes(32), ttl=60)
    assert len(small) == 3
    assert small.get(0) is None and small.get(9) is not None


def test_disabling_the_key_takes_effect_at_once_despite_the_cache(tenant: Tenant, unwraps: list[int]) -> None:
    blob_id, _ = new_key(tenant)
    TenantKey.objects.filter(tenant=tenant).update(status=KeyStatus.DISABLED)
    with pytest.raises(keyring.KeyUnavailable, match="disabled"):
        keyring.open_data_key(tenant, blob_id)
    assert unwraps == []


def test_rotation_is_additive(tenant: Tenant) -> None:
    old_blob, old_dek = new_key(tenant)
    v2 = keyring.add_key_version(tenant)
    new_blob, new_dek = new_key(tenant)
    assert v2.version == 2
    assert DataKey.objects.get(blob_id=new_blob).tkv_id == v2.pk
    assert DataKey.objects.get(blob_id=old_blob).tkv.status == VersionStatus.RETIRED
    keyring.cache.clear()
    assert keyring.open_data_key(tenant, old_blob) == old_dek
    assert keyring.open_data_key(tenant, new_blob) == new_dek


@override_settings(KODORI_TKV_MAX_WRAPS=3)
def test_a_tkv_is_rotated_before_its_wrap_limit(tenant: Tenant) -> None:
    blobs = [new_key(tenant) for _ in range(7)]
    versions = [DataKey.objects.get(blob_id=b).tkv.version for b, _ in blobs]
    assert versions == [1, 1, 1, 2, 2, 2, 3]
    assert all(t.wrap_count <= 3 for t in TenantKeyVersion.objects.filter(tenant=tenant))
    for blob_id, dek in blobs:
        assert keyring.open_data_key(tenant, blob_id) == dek


def test_the_database_allows_one_active_tkv_per_tenant(tenant: Tenant) -> None:
    tkv = keyring.active_tkv(tenant)
    with pytest.raises(IntegrityError), transaction.atomic():
        TenantKeyVersion.objects.create(tenant=tenant, kek=tkv.kek, version=99, wrapped_key=b"x")


def test_the_database_allows_one_active_kek_per_tenant(tenant: Tenant) -> None:
    keyring.active_tkv(tenant)
    with pytest.raises(IntegrityError), transaction.atomic():
        TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.ACTIVE)


def test_a_destroyed_version_keeps_no_key_material(tenant: Tenant) -> None:
    tkv = keyring.active_tkv(tenant)
    with pytest.raises(IntegrityError), transaction.atomic():
        TenantKeyVersion.objects.filter(pk=tkv.pk).update(status=VersionStatus.DESTROYED)


def test_a_destroyed_version_refuses_to_open(tenant: Tenant) -> None:
    blob_id, _ = new_key(tenant)
    keyring.add_key_version(tenant)
    TenantKeyVersion.objects.filter(version=1).update(status=VersionStatus.DESTROYED, wrapped_key=b"")
    with pytest.raises(keyring.KeyUnavailable, match="destroyed"):
        keyring.open_data_key(tenant, blob_id)


def test_another_tenants_blob_has_no_data_key_here(tenant: Tenant, other_tenant: Tenant) -> None:
    blob_id, _ = new_key(other_tenant)
    with pytest.raises(DataKey.DoesNotExist):
        keyring.open_data_key(tenant, blob_id)


def test_no_plaintext_key_reaches_the_database(tenant: Tenant) -> None:
    from django.db import connection

    secrets: list[bytes] = []
    for _ in range(5):
        secrets.append(new_key(tenant)[1])
    secrets.extend(keyring.tkv_key(t) for t in TenantKeyVersion.objects.select_related("kek"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT string_agg(t::text, '') FROM (SELECT * FROM data_keys) t "
            "UNION ALL SELECT string_agg(t::text, '') FROM (SELECT * FROM tenant_key_versions) t "
            "UNION ALL SELECT string_agg(t::text, '') FROM (SELECT * FROM tenant_kms_keys) t"
        )
        dump = "".join(row[0] or "" for row in cursor.fetchall())
    assert "\\x" in dump  # bytea columns are in the dump, as hex
    for secret in secrets:
        assert secret.hex() not in dump


def test_exception_reports_hide_keys(tenant: Tenant) -> None:
    import sys

    from django.views.debug import ExceptionReporter

    blob_id, _ = new_key(tenant)
    key = keyring.tkv_key(keyring.active_tkv(tenant))
    DataKey.objects.filter(blob_id=blob_id).update(wrapped_dek=b"\x00" * 60)
    try:
        keyring.open_data_key(tenant, blob_id)
    except ProviderError:
        report = ExceptionReporter(None, *sys.exc_info()).get_traceback_text()
    else:
        raise AssertionError("a tampered wrapped DEK opened")
    assert "open_data_key" in report and "********" in report
    assert repr(key) not in report and key.hex() not in report


def test_deleting_a_data_key_makes_its_blob_unreadable(tenant: Tenant, other_tenant: Tenant) -> None:
    blob_id, _ = new_key(tenant)
    keyring.delete_data_key(other_tenant, blob_id)  # another tenant cannot delete it
    assert DataKey.objects.filter(blob_id=blob_id).exists()
    keyring.delete_data_key(tenant, blob_id)
    with pytest.raises(DataKey.DoesNotExist):
        keyring.open_data_key(tenant, blob_id)


def test_concurrent_cache_misses_unwrap_once(
    tenant: Tenant, unwraps: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    counting = GlobalKeyProvider.unwrap

    def slow(self: GlobalKeyProvider, ciphertext: bytes, context: Any) -> bytes:
        time.sleep(0.2)  # a KMS round trip: long enough for every thread to miss the cache
        return counting(self, ciphertext, context)

    monkeypatch.setattr(GlobalKeyProvider, "unwrap", slow)
    tkv = keyring.active_tkv(tenant)
    keyring.cache.clear()
    unwraps.clear()
    start = threading.Barrier(8)
    results: list[bytes] = []

    def use() -> None:
        start.wait()
        results.append(keyring.tkv_key(tkv))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 8
    assert unwraps == [1]
