"""An upload that passed its check before the deletion was scheduled, or before the keys were destroyed, can
neither reserve its file nor bring key material back afterwards: the reservation re-reads the tenant under
its lock, and no key version is ever provisioned for a tenant that is not active."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blobs.errors import KeyNotUsable, TenantReadOnly
from blobs.models import Blob
from blobs.uploads import Upload
from encryption import keyring
from encryption.models import DataKey, TenantKey, TenantKeyVersion, VersionStatus
from offboarding import erasure
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob, pattern
from tests.offboarding.erasure_support import schedule_due

pytestmark = pytest.mark.django_db


def test_an_upload_holding_a_stale_tenant_cannot_reserve_once_the_deletion_is_scheduled(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path
) -> None:
    make_blob(member, b"before", name="before.txt")
    stale = Tenant.objects.get(pk=tenant.pk)  # what a request loaded before the owner scheduled
    schedule_due(tenant, owner)
    keys_before = DataKey.objects.for_tenant(tenant).count()

    with pytest.raises(TenantReadOnly, match="scheduled for deletion"):
        Upload.begin(stale, member, "late.txt", "text/plain", declared_size=4)

    assert not Blob.objects.filter(name="late.txt").exists()
    assert DataKey.objects.for_tenant(tenant).count() == keys_before  # its data key went with the refusal


def test_no_key_version_is_made_for_a_tenant_whose_keys_were_destroyed(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path
) -> None:
    make_blob(member, pattern(1000), name="a.bin")
    stale = Tenant.objects.get(pk=tenant.pk)
    assert erasure.destroy_keys(schedule_due(tenant, owner))
    versions = set(TenantKeyVersion.objects.for_tenant(tenant).values_list("pk", "status"))
    assert {status for _, status in versions} == {VersionStatus.DESTROYED}
    keks = TenantKey.objects.for_tenant(tenant).count()

    for provision in (keyring.active_tkv, keyring.add_key_version):
        with pytest.raises(keyring.KeyUnavailable, match="no new key can be made"):
            provision(stale)
    # The upload path, with the state it loaded before the erasure: refused when it asks for a data key.
    with pytest.raises(KeyNotUsable, match="being erased: no new key can be made"):
        Upload.begin(stale, member, "late.bin", "application/octet-stream", declared_size=3)

    assert set(TenantKeyVersion.objects.for_tenant(tenant).values_list("pk", "status")) == versions
    assert TenantKey.objects.for_tenant(tenant).count() == keks
    assert not DataKey.objects.for_tenant(tenant).exclude(wrapped_dek=b"").exists()
    assert Tenant.objects.get(pk=tenant.pk).state == TenantState.ERASING


def test_an_active_tenant_still_gets_its_first_key_on_first_use(tenant: Tenant, member: Any) -> None:
    """The guard refuses only non-active tenants: a new tenant's first upload provisions as before."""
    assert not TenantKeyVersion.objects.for_tenant(tenant).exists()
    tkv = keyring.active_tkv(tenant)
    assert tkv.status == VersionStatus.ACTIVE and tkv.tenant_id == tenant.pk
