"""Failure paths of registration leave everything as it was: the tenant keeps its key, no version is added."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from emulators.dev import DevEmulators
from encryption import keyring, services
from encryption.models import KeyStatus, TenantKey, TenantKeyVersion, WrapMethod
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _snapshot(tenant: Tenant) -> tuple[list[Any], list[Any]]:
    keys = list(TenantKey.objects.filter(tenant=tenant).order_by("pk").values_list("pk", "status"))
    versions = list(TenantKeyVersion.objects.filter(tenant=tenant).order_by("pk").values_list("pk", "status"))
    return keys, versions


@pytest.mark.parametrize("failure", ["disabled key", "wrong ExternalId", "role without KMS permission"])
def test_a_failed_aws_registration_changes_nothing_else(
    clouds: DevEmulators, tenant: Tenant, owner: Any, failure: str
) -> None:
    assert clouds.aws is not None
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.active_tkv(tenant)
    before = _snapshot(tenant)
    key_arn = clouds.aws.create_key(alias=f"alias/{failure.replace(' ', '-')}")
    external_id = services.external_id_for(tenant) if failure != "wrong ExternalId" else "someone-elses-id"
    role_arn = clouds.aws.create_tenant_role(failure.replace(" ", "-"), external_id, key_arn)
    if failure == "disabled key":
        clouds.aws.disable_key(key_arn)
    elif failure == "role without KMS permission":
        clouds.aws.revoke_role_access(failure.replace(" ", "-"))

    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    key = services.verify_key(key.pk)

    assert key.status == KeyStatus.FAILED and key.last_verify_error
    keys, versions = _snapshot(tenant)
    assert (keys[:-1], versions) == before  # only the failed registration was added
    assert list(AuditEvent.objects.filter(tenant=tenant).values_list("type", flat=True)) == [
        "tenant-kms.verify-failed"
    ]
    tenant.refresh_from_db()
    assert not tenant.is_sealed
