"""The AWS emulator (moto behind an enforcing proxy), driven through real boto3 STS and KMS clients.

Kodori's ``customer_kms_aws`` path is exercised as production runs it: the deployment identity (static keys
from the environment here, the default credential chain in production) calls ``sts:AssumeRole`` into the
tenant's role with the tenant's ExternalId, and a KMS client built from the temporary credentials wraps and
unwraps with an EncryptionContext. Config and credential files point at empty files, and a guard fails any
test that tries to reach anything but loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# boto3 and moto are development dependencies; without them this module is skipped rather than broken.
pytest.importorskip("moto.server", reason="moto[server] is not installed")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")

import requests  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from emulators.aws import KODORI_ARN, AwsKmsEmulator  # noqa: E402
from tests.emulators.support.aws import (  # noqa: E402
    NO_RETRIES,
    REGION,
    Tenant,
    customer_root_client,
    error_code,
    isolate_from_real_aws,
    sts_client,
    tenant_kms,
)
from tests.emulators.support.loopback import refuse_non_loopback  # noqa: E402

CONTEXT = {"tenant": "acme", "tkv": "1"}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Empty AWS config files, no ambient credentials, and no DNS lookup or connection beyond 127.0.0.1."""
    isolate_from_real_aws(monkeypatch, tmp_path)
    attempts = refuse_non_loopback(monkeypatch)
    yield attempts
    assert attempts == [], f"something tried to leave loopback: {attempts}"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsKmsEmulator]:
    with AwsKmsEmulator(region=REGION) as emu:
        # Kodori's deployment identity, found by boto3's default credential chain as in production.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", emu.kodori_credentials[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emu.kodori_credentials[1])
        yield emu


@pytest.fixture
def tenant(emulator: AwsKmsEmulator) -> Tenant:
    key_arn = emulator.create_key(alias="alias/acme-kek")
    role_arn = emulator.create_tenant_role("kodori-acme", "kodori-ext-3f9a1c", key_arn)
    return Tenant(key_arn, role_arn, "kodori-acme", "kodori-ext-3f9a1c")


@pytest.fixture
def kms(emulator: AwsKmsEmulator, tenant: Tenant) -> Any:
    return tenant_kms(emulator.endpoint_url, tenant)


def test_it_round_trips_with_assumed_role_credentials(kms: Any, tenant: Tenant) -> None:
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"tenant key version", EncryptionContext=CONTEXT)
    assert blob["KeyId"] == tenant.key_arn
    plain = kms.decrypt(
        CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=CONTEXT, KeyId=tenant.key_arn
    )
    assert plain["Plaintext"] == b"tenant key version"
    alias_arn = tenant.key_arn.split(":key/")[0] + ":alias/acme-kek"
    assert kms.encrypt(KeyId=alias_arn, Plaintext=b"x", EncryptionContext=CONTEXT)["KeyId"] == tenant.key_arn


def test_it_refuses_a_wrong_encryption_context(kms: Any, tenant: Tenant) -> None:
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={**CONTEXT, "tenant": "globex"})
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob)


def test_it_maps_a_mismatched_key_id_to_incorrect_key(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    other = emulator.create_key()
    emulator.create_tenant_role(
        "kodori-other", None, other
    )  # irrelevant role; the tenant role has no grant on it
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")["CiphertextBlob"]
    root = customer_root_client(emulator, "kms")
    with pytest.raises(root.exceptions.IncorrectKeyException):
        root.decrypt(CiphertextBlob=blob, KeyId=other)


@pytest.mark.parametrize("external_id", ["wrong-external-id", None], ids=["wrong", "missing"])
def test_it_refuses_a_wrong_or_missing_external_id(
    emulator: AwsKmsEmulator, tenant: Tenant, external_id: Any
) -> None:
    extra = {"ExternalId": external_id} if external_id else {}
    with pytest.raises(ClientError) as caught:
        sts_client(emulator.endpoint_url).assume_role(
            RoleArn=tenant.role_arn, RoleSessionName="kodori", **extra
        )
    assert error_code(caught) == "AccessDenied"
    assert f"User: {KODORI_ARN} is not authorized to perform: sts:AssumeRole" in str(caught.value)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize("external_id", ["any-random-value", None], ids=["any", "none"])
def test_it_lets_any_external_id_through_a_trust_policy_without_the_condition(
    emulator: AwsKmsEmulator, external_id: Any
) -> None:
    # What Kodori's registration check relies on: such a role is assumable with a decoy ExternalId.
    key = emulator.create_key()
    role = emulator.create_tenant_role("careless", None, key)
    extra = {"ExternalId": external_id} if external_id else {}
    answer = sts_client(emulator.endpoint_url).assume_role(RoleArn=role, RoleSessionName="kodori", **extra)
    assert answer["AssumedRoleUser"]["Arn"].endswith(":assumed-role/careless/kodori")


def test_it_describes_a_key_by_alias_arn_through_the_role(emulator: AwsKmsEmulator, tenant: Tenant) -> None:
    alias_arn = tenant.key_arn.split(":key/")[0] + ":alias/acme-kek"
    described = tenant_kms(emulator.endpoint_url, tenant).describe_key(KeyId=alias_arn)["KeyMetadata"]
    assert described["Arn"] == tenant.key_arn
    # A role whose permission policy lacks kms:DescribeKey is refused, as KMS refuses it.
    narrow_role = emulator.create_tenant_role(
        "kodori-narrow", "ext-narrow", tenant.key_arn, actions=["kms:Encrypt", "kms:Decrypt"]
    )
    narrow = Tenant(tenant.key_arn, narrow_role, "kodori-narrow", "ext-narrow")
    with pytest.raises(ClientError) as caught:
        tenant_kms(emulator.endpoint_url, narrow).describe_key(KeyId=alias_arn)
    assert error_code(caught) == "AccessDeniedException"
    assert "kms:DescribeKey" in str(caught.value)


def test_it_refuses_a_role_that_does_not_exist(emulator: AwsKmsEmulator) -> None:
    with pytest.raises(ClientError) as caught:
        sts_client(emulator.endpoint_url).assume_role(
            RoleArn="arn:aws:iam::123456789012:role/no-such-role",
            RoleSessionName="kodori",
            ExternalId="ext-1",
        )
    assert error_code(caught) == "AccessDenied"


def test_it_refuses_a_caller_the_trust_policy_does_not_name(emulator: AwsKmsEmulator) -> None:
    key = emulator.create_key()
    role = emulator.create_tenant_role(
        "other-vendor", "ext", key, trusted_principal="arn:aws:iam::999999999999:root"
    )
    with pytest.raises(ClientError) as caught:
        sts_client(emulator.endpoint_url).assume_role(
            RoleArn=role, RoleSessionName="kodori", ExternalId="ext"
        )
    assert error_code(caught) == "AccessDenied"


def test_it_refuses_kodoris_own_identity_on_a_customer_key(emulator: AwsKmsEmulator, tenant: Tenant) -> None:
    own = boto3.session.Session(region_name=REGION).client(
        "kms", endpoint_url=emulator.endpoint_url, config=NO_RETRIES
    )
    with pytest.raises(ClientError, match="no resource-based policy allows") as caught:
        own.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "AccessDeniedException"


def test_it_refuses_a_disabled_key_until_it_is_enabled(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
    emulator.disable_key(tenant.key_arn)
    with pytest.raises(kms.exceptions.DisabledException, match="is disabled"):
        kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x", EncryptionContext=CONTEXT)
    with pytest.raises(kms.exceptions.DisabledException):
        kms.decrypt(
            CiphertextBlob=blob, EncryptionContext=CONTEXT
        )  # no KeyId: the key is learnt from the blob
    emulator.enable_key(tenant.key_arn)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == b"x"


def test_it_refuses_a_key_pending_deletion(emulator: AwsKmsEmulator, kms: Any, tenant: Tenant) -> None:
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
    emulator.schedule_key_deletion(tenant.key_arn)
    with pytest.raises(kms.exceptions.KMSInvalidStateException, match="pending deletion"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.generate_data_key(KeyId=tenant.key_arn, KeySpec="AES_256")
    emulator.cancel_key_deletion(tenant.key_arn)  # lands in Disabled, as on AWS
    with pytest.raises(kms.exceptions.DisabledException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)


def test_it_denies_a_role_whose_policy_was_revoked(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x", EncryptionContext=CONTEXT)["CiphertextBlob"]
    emulator.revoke_role_access(tenant.role_name)
    with pytest.raises(ClientError, match="assumed-role/kodori-acme") as caught:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    assert error_code(caught) == "AccessDeniedException"
    emulator.restore_role_access(tenant.role_name)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == b"x"


def test_it_denies_a_principal_revoked_on_the_key_policy(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    emulator.revoke_key_access(tenant.key_arn, tenant.role_arn)
    with pytest.raises(ClientError, match="explicit deny") as caught:
        kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "AccessDeniedException"
    emulator.restore_key_access(tenant.key_arn)
    kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")


def test_it_sees_iam_changes_made_by_the_customer_through_boto3(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")  # warms the proxy's policy cache
    iam = customer_root_client(emulator, "iam")
    iam.delete_role_policy(RoleName=tenant.role_name, PolicyName="kodori-kms")
    with pytest.raises(ClientError) as caught:
        kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "AccessDeniedException"


def test_it_refuses_unknown_forged_and_expired_credentials(emulator: AwsKmsEmulator, tenant: Tenant) -> None:
    def client(key: str, secret: str, token: str | None = None) -> Any:
        return boto3.client(
            "kms",
            region_name=REGION,
            endpoint_url=emulator.endpoint_url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=NO_RETRIES,
        )

    with pytest.raises(ClientError) as caught:
        client("AKIAUNKNOWNKEY000000", "secret").encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as caught:
        client(emulator.kodori_credentials[0], "not-the-secret").encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "InvalidSignatureException"
    creds = sts_client(emulator.endpoint_url).assume_role(
        RoleArn=tenant.role_arn, RoleSessionName="kodori", ExternalId=tenant.external_id
    )["Credentials"]
    with pytest.raises(ClientError) as caught:  # a session key without its session token
        client(creds["AccessKeyId"], creds["SecretAccessKey"]).encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "UnrecognizedClientException"
    assert emulator.expire_sessions(tenant.role_arn) == 1
    with pytest.raises(ClientError) as caught:
        client(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).encrypt(
            KeyId=tenant.key_arn, Plaintext=b"x"
        )
    assert error_code(caught) == "ExpiredTokenException"


def test_it_answers_get_caller_identity_for_the_signer(emulator: AwsKmsEmulator, tenant: Tenant) -> None:
    sts = sts_client(emulator.endpoint_url)
    assert sts.get_caller_identity()["Arn"] == KODORI_ARN
    creds = sts.assume_role(RoleArn=tenant.role_arn, RoleSessionName="probe", ExternalId=tenant.external_id)
    assert creds["AssumedRoleUser"]["Arn"] == "arn:aws:sts::123456789012:assumed-role/kodori-acme/probe"


def test_it_throttles_then_succeeds_with_a_short_retry(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    emulator.throttle(count=2, operations=["Encrypt"])
    with pytest.raises(ClientError) as caught:
        kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert error_code(caught) == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    result = None
    for delay in (0.01, 0.02, 0.04):  # a short jittered backoff stands in for Kodori's
        try:
            result = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
            break
        except ClientError as err:
            assert err.response["Error"]["Code"] == "ThrottlingException"
            time.sleep(delay)
    assert result is not None
    assert emulator.counts()["Encrypt"] == 3
    assert emulator.outcome_counts()["Encrypt:ThrottlingException"] == 2


def test_it_throttles_a_ratio_of_chosen_operations(
    emulator: AwsKmsEmulator, kms: Any, tenant: Tenant
) -> None:
    blob = kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")["CiphertextBlob"]
    emulator.throttle(ratio=1.0, operations=["Decrypt"])
    for _ in range(3):
        with pytest.raises(ClientError, match="ThrottlingException"):
            kms.decrypt(CiphertextBlob=blob)
    kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    emulator.clear_faults()
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_it_injects_server_errors_that_boto3_retries(emulator: AwsKmsEmulator, tenant: Tenant) -> None:
    emulator.unavailable(count=1, operations=["Encrypt"])
    with pytest.raises(ClientError) as caught:
        tenant_kms(emulator.endpoint_url, tenant).encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    emulator.unavailable(count=1, operations=["Encrypt"])
    retrying = tenant_kms(
        emulator.endpoint_url, tenant, config=Config(retries={"mode": "standard", "total_max_attempts": 3})
    )
    assert retrying.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")["KeyId"] == tenant.key_arn
    assert emulator.outcome_counts()["Encrypt:KMSInternalException"] == 2


def test_it_throttles_assume_role_too(emulator: AwsKmsEmulator, tenant: Tenant) -> None:
    emulator.throttle(count=1, operations=["AssumeRole"])
    with pytest.raises(ClientError) as caught:
        sts_client(emulator.endpoint_url, NO_RETRIES).assume_role(
            RoleArn=tenant.role_arn, RoleSessionName="kodori", ExternalId=tenant.external_id
        )
    assert error_code(caught) == "Throttling"


def test_it_adds_latency(emulator: AwsKmsEmulator, kms: Any, tenant: Tenant) -> None:
    kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    emulator.set_latency(150)
    started = time.monotonic()
    kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    assert time.monotonic() - started >= 0.15


def test_it_honours_aws_endpoint_url_from_the_environment(
    emulator: AwsKmsEmulator, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint_url)
    sts = boto3.session.Session(region_name=REGION).client("sts")
    assert sts.get_caller_identity()["Arn"] == KODORI_ARN


def test_it_serves_the_admin_api_over_http(emulator: AwsKmsEmulator) -> None:
    admin = emulator.admin_url
    key = requests.post(f"{admin}/create_key", json={"alias": "alias/http"}, timeout=5).json()["result"]
    role = requests.post(
        f"{admin}/create_tenant_role",
        json={"role_name": "http-role", "external_id": "ext-e", "key_arn": key},
        timeout=5,
    ).json()["result"]
    kms = tenant_kms(emulator.endpoint_url, Tenant(key, role, "http-role", "ext-e"))
    kms.encrypt(KeyId=key, Plaintext=b"x")
    requests.post(f"{admin}/disable_key", json={"key_id": key}, timeout=5).raise_for_status()
    with pytest.raises(kms.exceptions.DisabledException):
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert requests.get(f"{admin}/counts", timeout=5).json()["result"] == {"AssumeRole": 1, "Encrypt": 2}
    assert requests.post(f"{admin}/no_such_thing", json={}, timeout=5).status_code == 404


def test_it_resets_to_a_clean_slate(emulator: AwsKmsEmulator, kms: Any, tenant: Tenant) -> None:
    kms.encrypt(KeyId=tenant.key_arn, Plaintext=b"x")
    emulator.reset()
    assert emulator.counts() == {}
    with pytest.raises(ClientError) as caught:
        sts_client(emulator.endpoint_url).assume_role(
            RoleArn=tenant.role_arn, RoleSessionName="kodori", ExternalId=tenant.external_id
        )
    assert error_code(caught) == "AccessDenied"  # the role went with moto's state


def test_it_runs_as_a_program_and_prints_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "emulators.aws", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0 and "--tenant" in help_text.stdout
    settings_file = tmp_path / "settings.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.aws", "--port", "0", "--tenant", "kodori-acme:ext-1",
         "--settings-file", str(settings_file)],
        stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not settings_file.exists() or not settings_file.read_text().strip().endswith("}"):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        settings = json.loads(settings_file.read_text())
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", settings["AWS_ACCESS_KEY_ID"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", settings["AWS_SECRET_ACCESS_KEY"])
        entry = settings["tenants"][0]
        kms = tenant_kms(
            settings["AWS_ENDPOINT_URL"], Tenant(entry["key_arn"], entry["role_arn"], "kodori-acme", "ext-1")
        )
        assert kms.decrypt(
            CiphertextBlob=kms.encrypt(KeyId=entry["key_arn"], Plaintext=b"x")["CiphertextBlob"]
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
