"""What the AWS provider proves at registration, through the real boto3 clients against the AWS emulator.

- ``check_registration``: the tenant's role must refuse an ExternalId other than the tenant's. The emulator
  evaluates trust-policy conditions like IAM does, so a role whose trust policy lacks the ``sts:ExternalId``
  condition really does let a random ExternalId in (``tests/emulators/test_aws_emulator.py`` pins that down),
  and the negative test here is real.
- ``describe_key_arn``: ``DescribeKey`` through the tenant's role resolves an alias ARN to its key ARN.

The emulator and the settings come from ``test_aws.py``'s fixtures.
"""

from __future__ import annotations

import os

import pytest
from django.test import override_settings

from emulators.aws import KODORI_KEY_ACTIONS, AwsKmsEmulator
from encryption.models import TenantKey, WrapMethod
from encryption.providers import FailureKind, KeyContext, provider_for
from encryption.providers.aws import AwsKeyProvider
from encryption.providers.local import GlobalKeyProvider
from tests.emulators.support.aws import REGION, customer_root_client
from tests.encryption.providers import test_aws as base
from tests.encryption.providers.test_aws import count, customer_key, operator_key_arn, refused

# The emulator fixtures of test_aws.py, bound here so pytest finds them (one emulator per module).
aws, kodori = base.aws, base.kodori

TENANT = base.TENANT
EXTERNAL_ID = "kodori-ext-acme-0123456789abcdef"  # what customer_key(aws) gives the "acme" tenant


def aws_provider(row: TenantKey) -> AwsKeyProvider:
    provider = provider_for(row)
    assert isinstance(provider, AwsKeyProvider)
    return provider


def careless_key(aws: AwsKmsEmulator, name: str = "careless") -> TenantKey:
    """A tenant whose role trusts Kodori without any sts:ExternalId condition."""
    key_arn = aws.create_key(alias=f"alias/{name}")
    role_arn = aws.create_tenant_role(f"kodori-{name}", None, key_arn)
    return TenantKey(
        tenant_id=TENANT,
        wrap_method=WrapMethod.CUSTOMER_KMS_AWS,
        key_id=key_arn,
        config={"region": REGION, "role_arn": role_arn, "external_id": EXTERNAL_ID},
    )


# -- check_registration: the role must insist on the tenant's ExternalId -------------------------------------


def test_a_role_that_checks_the_external_id_passes(aws: AwsKmsEmulator) -> None:
    provider = provider_for(customer_key(aws))
    provider.probe(TENANT)
    provider.check_registration()
    assert count(aws, "AssumeRole", "AccessDenied") == 1  # the decoy was refused
    assert count(aws, "AssumeRole", "ok") == 1  # the probe's session; the decoy got none


def test_a_role_without_the_external_id_condition_is_refused_with_the_line_to_add(
    aws: AwsKmsEmulator,
) -> None:
    row = careless_key(aws)
    provider = provider_for(row)
    provider.probe(TENANT)  # the probe alone cannot tell: the right ExternalId works as well
    error = refused(provider.check_registration)
    assert error.kind == FailureKind.DENIED and error.seals
    role_arn = row.config["role_arn"]
    assert (
        f'Add "Condition": {{"StringEquals": {{"sts:ExternalId": "{EXTERNAL_ID}"}}}} to the trust policy of '
        f"{role_arn}; Kodori refuses roles that any AWS customer could make it assume." in str(error)
    )
    assert count(aws, "AssumeRole", "ok") == 2  # the probe's session, and the decoy that should have failed


def test_the_decoy_session_is_never_used_for_kms(aws: AwsKmsEmulator) -> None:
    row = careless_key(aws)
    provider = provider_for(row)
    assert refused(provider.check_registration).kind == FailureKind.DENIED
    provider.wrap(os.urandom(32), KeyContext(tenant_id=TENANT, key_version=1))
    sessions = {c["principal"] for c in aws.calls() if c["operation"] == "Encrypt"}
    assert all(s.endswith(f"/kodori-tenant-{TENANT}") for s in sessions)  # never "-externalid-check"
    assert count(aws, "AssumeRole", "ok") == 2  # the decoy's credentials were not cached


def test_throttled_sts_during_the_check_is_retried(aws: AwsKmsEmulator) -> None:
    provider = provider_for(customer_key(aws))
    aws.throttle(count=2, operations=["AssumeRole"])
    provider.check_registration()
    assert count(aws, "AssumeRole", "Throttling") == 2 and count(aws, "AssumeRole", "AccessDenied") == 1


@pytest.mark.parametrize("fault", ["throttle", "unavailable"])
def test_sts_that_stays_unavailable_leaves_the_check_transient(aws: AwsKmsEmulator, fault: str) -> None:
    provider = provider_for(careless_key(aws))
    getattr(aws, fault)(ratio=1.0, operations=["AssumeRole"])
    with override_settings(KODORI_KMS_MAX_ATTEMPTS=2):
        error = refused(provider.check_registration)
    assert error.kind == FailureKind.TRANSIENT and not error.seals
    assert count(aws, "AssumeRole", "ok") == 0


def test_operator_keys_and_other_providers_have_nothing_to_check(aws: AwsKmsEmulator) -> None:
    AwsKeyProvider(operator_key_arn(aws)).check_registration()
    GlobalKeyProvider(TENANT).check_registration()
    assert count(aws, "AssumeRole") == 0


# -- describe_key_arn: alias ARN -> key ARN ------------------------------------------------------------------


def test_an_alias_arn_resolves_to_its_key_arn_through_the_role(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws, alias=True)
    assert ":alias/" in row.key_id
    key_arn = aws_provider(row).describe_key_arn()
    principals = {c["principal"] for c in aws.calls() if c["operation"] == "DescribeKey"}
    assert principals == {f"arn:aws:sts::123456789012:assumed-role/kodori-acme/kodori-tenant-{TENANT}"}
    assert key_arn.startswith(f"arn:aws:kms:{REGION}:") and ":key/" in key_arn
    assert key_arn == customer_root_client(aws, "kms").describe_key(KeyId=row.key_id)["KeyMetadata"]["Arn"]


def test_a_key_arn_describes_as_itself(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    assert aws_provider(row).describe_key_arn() == row.key_id


def test_a_disabled_key_still_resolves(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws, alias=True)
    aws.disable_key(row.key_id)
    assert ":key/" in aws_provider(row).describe_key_arn()


def test_a_role_without_describe_key_is_denied_naming_the_permission(aws: AwsKmsEmulator) -> None:
    key_arn = aws.create_key(alias="alias/narrow")
    actions = [a for a in KODORI_KEY_ACTIONS if a != "kms:DescribeKey"]
    role_arn = aws.create_tenant_role("kodori-narrow", EXTERNAL_ID, key_arn, actions=actions)
    alias_arn = key_arn.split(":key/")[0] + ":alias/narrow"
    provider = AwsKeyProvider(alias_arn, tenant_id=TENANT, role_arn=role_arn, external_id=EXTERNAL_ID)
    provider.probe(TENANT)  # Encrypt and Decrypt are allowed
    error = refused(provider.describe_key_arn)
    assert error.kind == FailureKind.DENIED
    assert "kms:DescribeKey" in str(error) and "the role's permission policy" in str(error)
    assert count(aws, "DescribeKey") == 1  # a denial is not retried


def test_an_alias_that_does_not_exist_is_not_found(aws: AwsKmsEmulator) -> None:
    key_arn = aws.create_key()
    role_arn = aws.create_tenant_role("kodori-wide", EXTERNAL_ID, f"arn:aws:kms:{REGION}:*:key/*")
    missing = key_arn.split(":key/")[0] + ":alias/nobody-made-this"
    provider = AwsKeyProvider(missing, tenant_id=TENANT, role_arn=role_arn, external_id=EXTERNAL_ID)
    assert refused(provider.describe_key_arn).kind == FailureKind.NOT_FOUND


def test_a_throttled_describe_key_is_retried_then_transient(aws: AwsKmsEmulator) -> None:
    provider = aws_provider(customer_key(aws, alias=True))
    aws.throttle(count=2, operations=["DescribeKey"])
    assert ":key/" in provider.describe_key_arn()
    aws.throttle(ratio=1.0, operations=["DescribeKey"])
    with override_settings(KODORI_KMS_MAX_ATTEMPTS=2):
        error = refused(provider.describe_key_arn)
    assert error.kind == FailureKind.TRANSIENT
