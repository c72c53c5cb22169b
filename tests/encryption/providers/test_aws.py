"""Kodori's AWS KMS provider through the real boto3 STS and KMS clients against the AWS emulator.

The emulator is moto behind an enforcing proxy (``emulators/aws.py``): trust policies with ExternalId, role
and key policies, key state, throttling. Kodori's deployment identity reaches boto3 through the default
credential chain (environment variables here, IRSA or an instance profile in production); AWS config files
are empty files and nothing may leave 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from emulators.aws import CUSTOMER_ACCOUNT, KODORI_ARN, AwsKmsEmulator
from encryption.models import TenantKey, WrapMethod
from encryption.providers import FailureKind, KeyContext, ProviderError, provider_for
from encryption.providers import aws as aws_provider
from encryption.providers.aws import AwsKeyProvider
from tests.emulators.support.aws import REGION, customer_root_client, isolate_from_real_aws
from tests.emulators.support.loopback import refuse_non_loopback

TENANT = 7
OTHER_TENANT = 8
CTX = KeyContext(tenant_id=TENANT, key_version=1)


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsKmsEmulator]:
    with AwsKmsEmulator(region=REGION) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def kodori(aws: AwsKmsEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Fresh emulator state; Kodori's identity in the environment; no real AWS config; loopback only."""
    isolate_from_real_aws(monkeypatch, tmp_path)
    attempts = refuse_non_loopback(monkeypatch)
    aws.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.kodori_credentials[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.kodori_credentials[1])
    with override_settings(
        KODORI_AWS_ENDPOINT_URL=aws.endpoint_url,
        KODORI_AWS_OPERATOR_KEY_ARN="",
        KODORI_KMS_BACKOFF_BASE=0.01,
        KODORI_KMS_BACKOFF_MAX=0.05,
    ):
        aws_provider.reset_clients()
        yield attempts
    aws_provider.reset_clients()
    assert attempts == [], f"something tried to leave loopback: {attempts}"


def customer_key(
    aws: AwsKmsEmulator, name: str = "acme", tenant_id: int = TENANT, *, alias: bool = False, **config: Any
) -> TenantKey:
    """What a tenant registers: its key, a role trusting Kodori with the tenant's ExternalId."""
    key_arn = aws.create_key(alias=f"alias/{name}")
    external_id = f"kodori-ext-{name}-0123456789abcdef"
    role_arn = aws.create_tenant_role(f"kodori-{name}", external_id, key_arn)
    key_id = key_arn.split(":key/")[0] + f":alias/{name}" if alias else key_arn
    return TenantKey(
        tenant_id=tenant_id,
        wrap_method=WrapMethod.CUSTOMER_KMS_AWS,
        key_id=key_id,
        config={"region": REGION, "role_arn": role_arn, "external_id": external_id, **config},
    )


def operator_key_arn(aws: AwsKmsEmulator) -> str:
    """A key whose policy lets Kodori's deployment identity use it directly."""
    arn = aws.create_key(alias="alias/kodori-operator")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{CUSTOMER_ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": KODORI_ARN},
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": "*",
            },
        ],
    }
    customer_root_client(aws, "kms").put_key_policy(
        KeyId=arn, PolicyName="default", Policy=json.dumps(policy)
    )
    return arn


def count(aws: AwsKmsEmulator, operation: str, outcome: str | None = None) -> int:
    if outcome is None:
        return aws.counts().get(operation, 0)
    return aws.outcome_counts().get(f"{operation}:{outcome}", 0)


def refused(call: Any, *args: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(*args)
    return caught.value


# -- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", [False, True], ids=["key-arn", "alias-arn"])
def test_it_round_trips_through_the_tenants_role(aws: AwsKmsEmulator, alias: bool) -> None:
    row = customer_key(aws, alias=alias)
    provider = provider_for(row)
    assert isinstance(provider, AwsKeyProvider)
    secret = os.urandom(32)
    wrapped = provider.wrap(secret, CTX)
    assert secret not in wrapped
    assert provider.unwrap(wrapped, CTX) == secret
    assert count(aws, "AssumeRole", "ok") == 1
    principals = {c["principal"] for c in aws.calls() if c["operation"] in ("Encrypt", "Decrypt")}
    assert principals == {f"arn:aws:sts::{CUSTOMER_ACCOUNT}:assumed-role/kodori-acme/kodori-tenant-{TENANT}"}


def test_it_round_trips_with_the_operator_key_and_kodoris_own_identity(aws: AwsKmsEmulator) -> None:
    arn = operator_key_arn(aws)
    row = TenantKey(tenant_id=TENANT, wrap_method=WrapMethod.OPERATOR_KMS_AWS, key_id="")
    with override_settings(KODORI_AWS_OPERATOR_KEY_ARN=arn):
        provider = provider_for(row)
        secret = os.urandom(32)
        assert provider.unwrap(provider.wrap(secret, CTX), CTX) == secret
    assert count(aws, "AssumeRole") == 0
    assert {c["principal"] for c in aws.calls() if c["operation"] == "Decrypt"} == {KODORI_ARN}


def test_an_operator_key_without_its_setting_is_a_configuration_error(aws: AwsKmsEmulator) -> None:
    row = TenantKey(tenant_id=TENANT, wrap_method=WrapMethod.OPERATOR_KMS_AWS, key_id="")
    error = refused(provider_for, row)
    assert error.kind == FailureKind.CONFIGURATION and "KODORI_AWS_OPERATOR_KEY_ARN" in str(error)


def test_the_operator_key_needs_a_deployment_identity(aws: AwsKmsEmulator, monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = AwsKeyProvider(operator_key_arn(aws))
    error = refused(provider.wrap, b"k" * 32, CTX)
    assert error.kind == FailureKind.CONFIGURATION and not error.seals


def test_the_probe_round_trips_at_kms(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    provider_for(row).probe(row.tenant_id)
    assert count(aws, "Encrypt", "ok") == 1 and count(aws, "Decrypt", "ok") == 1


# -- context binding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [KeyContext(tenant_id=OTHER_TENANT, key_version=1), KeyContext(tenant_id=TENANT, key_version=2)],
    ids=["tenant", "version"],
)
def test_a_wrapped_key_unwrapped_in_another_context_fails(aws: AwsKmsEmulator, other: KeyContext) -> None:
    provider = provider_for(customer_key(aws))
    wrapped = provider.wrap(os.urandom(32), CTX)
    error = refused(provider.unwrap, wrapped, other)
    assert error.kind == FailureKind.INTEGRITY and not error.seals
    assert count(aws, "Decrypt") == 1  # not retried


def test_a_wrapped_tkv_moved_to_another_tenant_fails(aws: AwsKmsEmulator) -> None:
    mine = provider_for(customer_key(aws, "acme", TENANT))
    theirs = provider_for(customer_key(aws, "globex", OTHER_TENANT))
    wrapped = mine.wrap(os.urandom(32), CTX)
    # Through the other tenant's key and role: KeyId is pinned, so KMS will not use acme's key for globex.
    error = refused(theirs.unwrap, wrapped, KeyContext(tenant_id=OTHER_TENANT, key_version=1))
    assert error.kind == FailureKind.INTEGRITY and not error.seals
    assert count(aws, "Decrypt") == 1  # an integrity failure is not retried
    # Under acme's context but through globex's provider, the pinned KeyId still refuses it.
    assert refused(theirs.unwrap, wrapped, CTX).kind == FailureKind.INTEGRITY
    assert len(mine.unwrap(wrapped, CTX)) == 32


def test_a_tampered_wrapped_key_is_refused(aws: AwsKmsEmulator) -> None:
    provider = provider_for(customer_key(aws))
    wrapped = bytearray(provider.wrap(os.urandom(32), CTX))
    wrapped[-5] ^= 1
    assert refused(provider.unwrap, bytes(wrapped), CTX).kind == FailureKind.INTEGRITY


# -- revocation and key state: seal, never retried -----------------------------------------------------------


def test_removing_the_roles_policy_seals_without_retry_loops(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    aws.revoke_role_access("kodori-acme")
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DENIED and error.seals
    assert "…" + row.key_id[-12:] in str(error)
    assert "denied Decrypt to Kodori's role" in str(error)
    assert count(aws, "Decrypt") == 1
    aws.restore_role_access("kodori-acme")
    assert len(provider.unwrap(wrapped, CTX)) == 32


def test_a_deny_in_the_key_policy_seals(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    aws.revoke_key_access(row.key_id, row.config["role_arn"])
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DENIED and count(aws, "Decrypt") == 1


def test_a_disabled_key_seals(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    aws.disable_key(row.key_id)
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DISABLED and error.seals and "is disabled" in str(error)
    assert count(aws, "Decrypt") == 1
    assert refused(lambda: provider.probe(1)).kind == FailureKind.DISABLED


def test_a_key_pending_deletion_seals_with_a_message_that_says_so(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    aws.schedule_key_deletion(row.key_id)
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DISABLED and error.seals
    assert "pending deletion" in str(error) and "Cancel the deletion" in str(error)
    assert count(aws, "Decrypt") == 1


def test_a_key_that_does_not_exist_is_not_found(aws: AwsKmsEmulator) -> None:
    real = aws.create_key()
    missing = real.rsplit("/", 1)[0] + "/0badc0de-0000-4000-8000-000000000000"
    role = aws.create_tenant_role("kodori-wide", "ext-wide-0123456789", f"arn:aws:kms:{REGION}:*:key/*")
    provider = AwsKeyProvider(missing, tenant_id=TENANT, role_arn=role, external_id="ext-wide-0123456789")
    error = refused(provider.wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.NOT_FOUND and error.seals


# -- the role and its ExternalId -----------------------------------------------------------------------------


def test_a_wrong_external_id_is_denied_naming_the_trust_policy(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    row.config["external_id"] = "kodori-ext-somebody-else-0000"
    error = refused(provider_for(row).wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.DENIED and error.seals
    assert "could not assume your role" in str(error) and "trust policy's ExternalId" in str(error)
    assert count(aws, "AssumeRole") == 1 and count(aws, "Encrypt") == 0  # refused once, not retried


def test_a_missing_external_id_is_never_sent_to_sts(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    del row.config["external_id"]
    error = refused(provider_for, row)
    assert error.kind == FailureKind.CONFIGURATION and "ExternalId" in str(error)
    assert count(aws, "AssumeRole") == 0


def test_a_customer_key_without_a_role_never_falls_back_to_kodoris_identity(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    del row.config["role_arn"]
    assert refused(provider_for, row).kind == FailureKind.CONFIGURATION


def test_a_role_that_does_not_trust_kodori_is_denied(aws: AwsKmsEmulator) -> None:
    key_arn = aws.create_key()
    role = aws.create_tenant_role(
        "other-vendor", "ext-0123456789", key_arn, trusted_principal="arn:aws:iam::999999999999:root"
    )
    provider = AwsKeyProvider(key_arn, tenant_id=TENANT, role_arn=role, external_id="ext-0123456789")
    assert refused(provider.wrap, os.urandom(32), CTX).kind == FailureKind.DENIED


def test_static_credentials_in_the_config_are_never_used(aws: AwsKmsEmulator) -> None:
    row = customer_key(
        aws, aws_access_key_id=aws.kodori_credentials[0], aws_secret_access_key=aws.kodori_credentials[1]
    )
    provider_for(row).probe(row.tenant_id)
    assert {c["principal"] for c in aws.calls() if c["operation"] == "Encrypt"} == {
        f"arn:aws:sts::{CUSTOMER_ACCOUNT}:assumed-role/kodori-acme/kodori-tenant-{TENANT}"
    }


def test_a_region_that_disagrees_with_the_arn_is_refused(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws, region="eu-west-1")
    assert refused(provider_for, row).kind == FailureKind.CONFIGURATION


# -- temporary credentials -----------------------------------------------------------------------------------


def test_the_role_session_is_assumed_once_for_many_calls(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    wrapped = [provider_for(row).wrap(os.urandom(32), CTX) for _ in range(10)]
    for blob in wrapped:
        provider_for(row).unwrap(blob, CTX)
    assert count(aws, "AssumeRole") == 1 and count(aws, "Decrypt", "ok") == 10


def test_an_expired_session_is_assumed_again_at_once(aws: AwsKmsEmulator) -> None:
    row = customer_key(aws)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    assert aws.expire_sessions(row.config["role_arn"]) == 1
    assert len(provider.unwrap(wrapped, CTX)) == 32
    assert count(aws, "Decrypt", "ExpiredTokenException") == 1
    assert count(aws, "AssumeRole", "ok") == 2


def test_a_session_close_to_expiry_is_renewed_before_use(
    aws: AwsKmsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = provider_for(customer_key(aws))
    provider.wrap(os.urandom(32), CTX)
    monkeypatch.setattr(aws_provider, "REFRESH_MARGIN_SECONDS", aws_provider.SESSION_SECONDS + 60)
    aws_provider.reset_clients()  # the margin applies to sessions assumed from now on
    provider.wrap(os.urandom(32), CTX)
    provider.wrap(os.urandom(32), CTX)
    assert count(aws, "AssumeRole", "ok") == 3
    assert count(aws, "Encrypt", "ExpiredTokenException") == 0


# -- transient failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "operation", "outcome"),
    [
        ("throttle", "Decrypt", "ThrottlingException"),
        ("unavailable", "Decrypt", "KMSInternalException"),
        ("throttle", "AssumeRole", "Throttling"),
    ],
)
def test_transient_failures_recover_within_the_deadline(
    aws: AwsKmsEmulator, fault: str, operation: str, outcome: str
) -> None:
    provider = provider_for(customer_key(aws))
    wrapped = provider.wrap(os.urandom(32), CTX) if operation == "Decrypt" else b""
    aws_provider.reset_clients()
    getattr(aws, fault)(count=2, operations=[operation])
    if operation == "Decrypt":
        assert len(provider.unwrap(wrapped, CTX)) == 32
    else:
        provider.wrap(os.urandom(32), CTX)
    assert count(aws, operation, outcome) == 2 and count(aws, operation, "ok") >= 1


def test_persistent_throttling_fails_as_transient_after_max_attempts(aws: AwsKmsEmulator) -> None:
    provider = provider_for(customer_key(aws))
    wrapped = provider.wrap(os.urandom(32), CTX)
    aws.throttle(ratio=1.0, operations=["Decrypt"])
    with override_settings(KODORI_KMS_MAX_ATTEMPTS=3):
        error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.TRANSIENT and not error.seals
    assert count(aws, "Decrypt", "ThrottlingException") == 3
