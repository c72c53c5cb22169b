"""A static credential pasted into the key registration form is refused, and the page that says so never shows
it again: not in the field, not in a snippet, not in a message (encryption/views.py, ``_shown_again``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from encryption.models import TenantKey
from tenants.models import Tenant
from tests.encryption.support import AWS_KEY, AWS_ROLE, AZURE_KEY, DIRECTORY, GCP_KEY

pytestmark = pytest.mark.django_db

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AZURE_SECRET = "Xy48Q~kodoriExampleSecretValue0123456789"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7exampleKeyMaterial" * 30
SERVICE_ACCOUNT = json.dumps(
    {
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n",
        "client_email": "kodori@acme-prod.iam.gserviceaccount.com",
    }
)

# (cloud, the form as submitted, the secrets it carries)
CASES = [
    pytest.param("aws", {"key_id": AWS_KEY_ID, "role_arn": AWS_ROLE}, [AWS_KEY_ID], id="aws-key-id-as-key"),
    pytest.param("aws", {"key_id": AWS_KEY, "role_arn": AWS_SECRET}, [AWS_SECRET], id="aws-secret-as-role"),
    pytest.param(
        "aws", {"key_id": AWS_KEY, "role_arn": AWS_ROLE, "region": AWS_KEY_ID}, [AWS_KEY_ID], id="aws-region"
    ),
    pytest.param(
        "aws",
        {"key_id": f"{AWS_KEY_ID}:{AWS_SECRET}", "role_arn": AWS_ROLE},
        [AWS_KEY_ID, AWS_SECRET],
        id="aws-pair-in-one-field",
    ),
    pytest.param(
        "aws",
        {"key_id": AWS_KEY, "role_arn": AWS_ROLE, "aws_secret_access_key": AWS_SECRET},
        [AWS_SECRET],
        id="aws-extra-field",
    ),
    pytest.param(
        "azure", {"key_id": AZURE_KEY, "directory_id": AZURE_SECRET}, [AZURE_SECRET], id="azure-secret"
    ),
    pytest.param(
        "azure",
        {"key_id": AZURE_KEY, "directory_id": DIRECTORY, "client_secret": AZURE_SECRET},
        [AZURE_SECRET],
        id="azure-extra-field",
    ),
    # Longer than the field's max_length: refused before the form's own checks, which would show it again.
    pytest.param("gcp", {"key_id": SERVICE_ACCOUNT}, [PEM_BODY[:40], "private_key_id"], id="gcp-sa-json"),
    pytest.param(
        "gcp", {"key_id": f"{GCP_KEY} {AWS_SECRET}"}, [AWS_SECRET], id="secret-shape-after-an-identifier"
    ),
]


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    tenant.cloud_kms_enabled = True
    tenant.save()
    return tenant


@pytest.mark.parametrize(("cloud", "data", "secrets"), CASES)
def test_a_refused_credential_is_never_echoed(
    as_user: Any, owner: Any, cloud_tenant: Tenant, cloud: str, data: dict[str, str], secrets: list[str]
) -> None:
    response = as_user(owner).post(f"/encryption/register/{cloud}", data)
    assert response.status_code == 400
    body = response.content.decode()
    for secret in secrets:
        assert secret not in body
        assert secret.replace("/", "&#x2F;") not in body
        assert secret[:12] not in body
    assert "Kodori never" in body  # the page says why
    assert not TenantKey.objects.for_tenant(cloud_tenant).exists()


def test_what_was_not_a_credential_stays_in_the_form(as_user: Any, owner: Any, cloud_tenant: Tenant) -> None:
    response = as_user(owner).post(
        "/encryption/register/aws", {"key_id": AWS_KEY, "role_arn": AWS_SECRET, "region": "eu-west-1"}
    )
    body = response.content.decode()
    assert AWS_KEY in body and 'value="eu-west-1"' in body
    assert AWS_SECRET not in body
    assert "Cleared: Kodori never keeps or shows static credentials" in body
