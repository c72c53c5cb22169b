from __future__ import annotations

import uuid

import pytest
from django.test import override_settings

from encryption import keyring, rewrap, walk
from encryption.envelope import FORMAT_VERSION
from encryption.models import DataKey, RewrapStatus, TenantKeyVersion, VersionStatus

pytestmark = pytest.mark.django_db(transaction=True)


def test_smoke(tenant):
    keys = {}
    for _ in range(2500):
        b = uuid.uuid4()
        keys[b], _ = keyring.new_data_key(tenant, b, FORMAT_VERSION)
    old = keyring.active_tkv(tenant)
    keyring.rotate_tkv(tenant)
    job = rewrap.start_rewrap(tenant)
    assert job.total == 2500
    with override_settings(KODORI_REWRAP_BATCH_SIZE=1000):
        assert walk.walk(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == 2500
    assert DataKey.objects.filter(tkv=old).count() == 0
    assert TenantKeyVersion.objects.get(pk=old.pk).status == VersionStatus.DESTROYED
    keyring.cache.clear()
    for b, dek in keys.items():
        assert keyring.open_data_key(tenant, b) == dek
    print(job.rate, job.versions, job.destroyed_versions)
