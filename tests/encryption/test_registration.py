"""Registration refuses static credentials and hostile identifiers, stores nothing, owns the ExternalId."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import connection

from encryption import services
from encryption.credentials import StaticCredentialRefused
from encryption.identifiers import InvalidKeyIdentifier
from encryption.models import TenantKey, WrapMethod
from tenants.models import Tenant
from tests.encryption.support import AWS_KEY, AWS_ROLE, AZURE_KEY, DIRECTORY, GCP_KEY

pytestmark = pytest.mark.django_db

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "-----END RSA PRIVATE KEY-----"
)

# (wrap method, key id, config): each carries one static credential somewhere.
STATIC_CREDENTIALS = [
    (
        WrapMethod.CUSTOMER_KMS_AWS,
        AWS_KEY,
        {"role_arn": AWS_ROLE, "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"},
    ),
    (WrapMethod.CUSTOMER_KMS_AWS, AWS_KEY, {"role_arn": AWS_ROLE, "note": "ASIAY34FZKBOKMUTVV7A"}),
    (
        WrapMethod.CUSTOMER_KMS_AWS,
        AWS_KEY,
        {"role_arn": AWS_ROLE, "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
    ),
    (
        WrapMethod.CUSTOMER_KMS_AWS,
        AWS_KEY,
        {"role_arn": AWS_ROLE, "session_token": "FwoGZXIvYXdzEBYaDE" + "x" * 80},
    ),
    (
        WrapMethod.CUSTOMER_KMS_AZURE,
        AZURE_KEY,
        {"directory_id": DIRECTORY, "client_secret": "abc8Q~" + "Zy1" * 11 + "a"},
    ),
    (
        WrapMethod.CUSTOMER_KMS_AZURE,
        AZURE_KEY,
        {"directory_id": DIRECTORY, "clientSecret": "s3cr3t-value-123"},
    ),
    (WrapMethod.CUSTOMER_KMS_AZURE, AZURE_KEY, {"directory_id": DIRECTORY, "certificate": PEM}),
    (
        WrapMethod.CUSTOMER_KMS_GCP,
        GCP_KEY,
        {"credentials": {"type": "service_account", "private_key_id": "abc", "private_key": PEM}},
    ),
    (
        WrapMethod.CUSTOMER_KMS_GCP,
        GCP_KEY,
        {"credentials": '{"type": "service_account", "client_email": "x@p.iam.gserviceaccount.com"}'},
    ),
    (WrapMethod.CUSTOMER_KMS_GCP, GCP_KEY, {"private_key": PEM}),
    (WrapMethod.CUSTOMER_KMS_GCP, GCP_KEY, {"password": "hunter2-but-longer"}),
    (WrapMethod.CUSTOMER_KMS_AWS, "AKIAIOSFODNN7EXAMPLE", {"role_arn": AWS_ROLE}),
]


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    return tenant


def _secret_values(config: dict[str, Any], key_id: str) -> list[str]:
    values = [key_id] if key_id.startswith(("AKIA", "ASIA")) else []
    for value in config.values():
        text = value if isinstance(value, str) else str(value)
        if text not in (AWS_ROLE, DIRECTORY):
            values.append(text)
    return values


@pytest.mark.parametrize(("method", "key_id", "config"), STATIC_CREDENTIALS)
def test_it_refuses_static_credentials_and_keeps_no_trace(
    cloud_tenant: Tenant,
    owner: Any,
    method: WrapMethod,
    key_id: str,
    config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StaticCredentialRefused) as caught:
        services.register_key(cloud_tenant, method, key_id, config, actor=owner)
    message = str(caught.value)
    assert not TenantKey.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(string_agg(t::text, ''), '') FROM (SELECT * FROM tenant_kms_keys) t")
        dump = cursor.fetchone()[0]
    for secret in _secret_values(config, key_id):
        probe = secret[:12] if len(secret) > 12 else secret
        assert probe not in message
        assert probe not in caplog.text
        assert probe not in dump


@pytest.mark.parametrize(
    ("method", "key_id", "config"),
    [
        (
            WrapMethod.CUSTOMER_KMS_AZURE,
            "https://169.254.169.254/keys/k/0123456789abcdef0123456789abcdef",
            {"directory_id": DIRECTORY},
        ),
        (
            WrapMethod.CUSTOMER_KMS_AZURE,
            "https://contoso.vault.azure.net.evil.example/keys/k/0123456789abcdef0123456789abcdef",
            {"directory_id": DIRECTORY},
        ),
        (WrapMethod.CUSTOMER_KMS_AZURE, AZURE_KEY, {"directory_id": "not-a-guid"}),
        (WrapMethod.CUSTOMER_KMS_AWS, "arn:aws:kms:eu-west-1:1111:key/x", {"role_arn": AWS_ROLE}),
        (WrapMethod.CUSTOMER_KMS_AWS, AWS_KEY, {"role_arn": "arn:aws-cn:iam::111122223333:role/x"}),
        (WrapMethod.CUSTOMER_KMS_AWS, AWS_KEY, {"role_arn": AWS_ROLE, "region": "us-east-1"}),
        (WrapMethod.CUSTOMER_KMS_GCP, "https://cloudkms.googleapis.com/v1/" + GCP_KEY, {}),
    ],
)
def test_it_refuses_hostile_or_malformed_identifiers(
    cloud_tenant: Tenant, owner: Any, method: WrapMethod, key_id: str, config: dict[str, Any]
) -> None:
    with pytest.raises(InvalidKeyIdentifier):
        services.register_key(cloud_tenant, method, key_id, config, actor=owner)
    assert not TenantKey.objects.exists()


def test_kodori_owns_the_external_id(cloud_tenant: Tenant, other_tenant: Tenant, owner: Any) -> None:
    Tenant.objects.filter(pk=other_tenant.pk).update(cloud_kms_enabled=True)
    key = services.register_key(
        cloud_tenant,
        WrapMethod.CUSTOMER_KMS_AWS,
        AWS_KEY,
        {"role_arn": AWS_ROLE, "external_id": "chosen-by-the-tenant"},
        actor=owner,
    )
    assert key.config["external_id"] == services.external_id_for(cloud_tenant)
    assert key.config["external_id"] != "chosen-by-the-tenant"
    assert len(key.config["external_id"]) >= len("kodori-") + 32  # 192 random bits, URL-safe
    assert key.config["region"] == "eu-west-1" and key.config["role_arn"] == AWS_ROLE
    assert services.external_id_for(cloud_tenant) != services.external_id_for(other_tenant)
    assert services.external_id_for(cloud_tenant) == key.config["external_id"]  # stable


def test_only_the_fields_each_cloud_needs_are_stored(cloud_tenant: Tenant, owner: Any) -> None:
    key = services.register_key(
        cloud_tenant,
        WrapMethod.CUSTOMER_KMS_AZURE,
        AZURE_KEY,
        {"directory_id": DIRECTORY.upper(), "comment": "hello"},
        actor=owner,
    )
    assert key.config == {"directory_id": DIRECTORY}
