"""Kodori's GCP Cloud KMS provider through the real google-cloud-kms and google-auth clients, against the
emulator.

The emulator (``emulators/gcp_kms.py``) speaks KeyManagementService over gRPC and the STS token exchange and
IAM Credentials impersonation over HTTP, with IAM bindings, version states, CRC32C checks and faults. Kodori's
identity is workload identity federation from a subject token file, as in production; only the endpoints, the
STS URL and the universe domain come from emulator settings, and nothing may leave 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from google.api_core import exceptions as api_exceptions
from google.cloud import kms_v1

from emulators.gcp_kms import EMULATOR_UNIVERSE, GcpKmsEmulator
from encryption.models import TenantKey, WrapMethod
from encryption.providers import FailureKind, KeyContext, ProviderError, provider_for
from encryption.providers import gcp as gcp_provider
from encryption.providers.gcp import (
    ChecksumMismatch,
    GcpKeyProvider,
    crc32c,
    verify_decrypt_response,
    verify_encrypt_response,
)
from tests.emulators.support.loopback import refuse_non_loopback

TENANT = 7
OTHER_TENANT = 8
CTX = KeyContext(tenant_id=TENANT, key_version=1)
KEY_RING = "projects/kodori-dev/locations/global/keyRings"


@pytest.fixture(scope="module")
def gcp() -> Iterator[GcpKmsEmulator]:
    with GcpKmsEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def kodori(gcp: GcpKmsEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Fresh emulator state, Kodori's subject token on disk, emulator settings; loopback only."""
    attempts = refuse_non_loopback(monkeypatch)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "GOOGLE_API_USE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "kodori-dev")
    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")
    gcp.reset()
    token_file = gcp.write_subject_token_file(str(tmp_path / "subject-token.jwt"))
    with override_settings(
        KODORI_GCP_WIF_AUDIENCE=gcp.default_audience,
        KODORI_GCP_SUBJECT_TOKEN_FILE=token_file,
        KODORI_GCP_SERVICE_ACCOUNT="",
        KODORI_GCP_TENANT_SERVICE_ACCOUNT="",
        KODORI_GCP_OPERATOR_KEY="",
        KODORI_GCP_KMS_ENDPOINT=gcp.endpoint,
        KODORI_GCP_STS_URL=gcp.sts_url,
        KODORI_GCP_IAM_CREDENTIALS_URL=f"http://127.0.0.1:{gcp.sts_port}",
        KODORI_GCP_UNIVERSE_DOMAIN=EMULATOR_UNIVERSE,
        KODORI_KMS_BACKOFF_BASE=0.01,
        KODORI_KMS_BACKOFF_MAX=0.05,
    ):
        gcp_provider.reset_clients()
        yield attempts
    gcp_provider.reset_clients()
    time.sleep(0.05)  # google-auth background work, if any, gets its chance to trip the guard
    assert attempts == [], f"something tried to leave loopback: {attempts}"


def customer_key(gcp: GcpKmsEmulator, ring: str = "acme", tenant_id: int = TENANT, **grant: Any) -> TenantKey:
    """What a tenant registers: its CryptoKey, granted to Kodori's identity (or ``grant_to``)."""
    name = gcp.create_key(ring, "kek", **grant)
    return TenantKey(tenant_id=tenant_id, wrap_method=WrapMethod.CUSTOMER_KMS_GCP, key_id=name)


def outcomes(gcp: GcpKmsEmulator, operation: str, outcome: str) -> int:
    return gcp.outcome_counts().get(f"{operation}:{outcome}", 0)


def exchanges(gcp: GcpKmsEmulator) -> int:
    return sum(1 for e in gcp.sts_exchanges() if e["ok"])


def refused(call: Any, *args: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(*args)
    return caught.value


# -- round trips ---------------------------------------------------------------------------------------------


def test_it_round_trips_with_aad_and_checksums(gcp: GcpKmsEmulator) -> None:
    provider = provider_for(customer_key(gcp))
    assert isinstance(provider, GcpKeyProvider)
    secret = os.urandom(32)
    wrapped = provider.wrap(secret, CTX)
    assert secret not in wrapped
    assert provider.unwrap(wrapped, CTX) == secret
    assert gcp.counts() == {"Encrypt": 1, "Decrypt": 1}
    assert {c["principal"] for c in gcp.calls()} == {gcp.principal()}


def test_it_round_trips_with_the_operator_key(gcp: GcpKmsEmulator) -> None:
    name = gcp.create_key("kodori-operator", "kek")
    row = TenantKey(tenant_id=TENANT, wrap_method=WrapMethod.OPERATOR_KMS_GCP, key_id="")
    with override_settings(KODORI_GCP_OPERATOR_KEY=name):
        provider = provider_for(row)
        secret = os.urandom(32)
        assert provider.unwrap(provider.wrap(secret, CTX), CTX) == secret
    assert gcp.counts() == {"Encrypt": 1, "Decrypt": 1}


def test_an_operator_key_without_its_setting_is_a_configuration_error(gcp: GcpKmsEmulator) -> None:
    row = TenantKey(tenant_id=TENANT, wrap_method=WrapMethod.OPERATOR_KMS_GCP, key_id="")
    error = refused(provider_for, row)
    assert error.kind == FailureKind.CONFIGURATION and "KODORI_GCP_OPERATOR_KEY" in str(error)


def test_a_version_path_pins_encrypt_and_still_decrypts_by_key(gcp: GcpKmsEmulator) -> None:
    name = gcp.create_key("acme", "kek")
    gcp.create_version(name, make_primary=True)  # version 2 is primary; the tenant pinned version 1
    provider = GcpKeyProvider(name + "/cryptoKeyVersions/1", tenant_id=TENANT)
    secret = os.urandom(32)
    wrapped = provider.wrap(secret, CTX)
    gcp.set_version_state(name + "/cryptoKeyVersions/2", "DISABLED")
    assert provider.unwrap(wrapped, CTX) == secret


def test_the_probe_needs_only_encrypt_and_decrypt(gcp: GcpKmsEmulator) -> None:
    row = customer_key(gcp)
    provider_for(row).probe(row.tenant_id)
    # The probe tries GetCryptoKey (the primary's state), which the Encrypter/Decrypter role does not allow:
    # that refusal is not a failure, the Encrypt then proves the primary is enabled (test_gcp_probe.py).
    assert gcp.outcome_counts() == {"GetCryptoKey:PERMISSION_DENIED": 1, "Encrypt:ok": 1, "Decrypt:ok": 1}


def test_an_invalid_key_name_is_a_configuration_error(gcp: GcpKmsEmulator) -> None:
    row = TenantKey(tenant_id=TENANT, wrap_method=WrapMethod.CUSTOMER_KMS_GCP, key_id="projects/x/keys/y")
    assert refused(provider_for, row).kind == FailureKind.CONFIGURATION


def test_a_deployment_without_an_audience_is_a_configuration_error(gcp: GcpKmsEmulator) -> None:
    provider = provider_for(customer_key(gcp))
    with override_settings(KODORI_GCP_WIF_AUDIENCE=""):
        error = refused(provider.wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.CONFIGURATION and "KODORI_GCP_WIF_AUDIENCE" in str(error)


# -- context binding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [KeyContext(tenant_id=OTHER_TENANT, key_version=1), KeyContext(tenant_id=TENANT, key_version=2)],
    ids=["tenant", "version"],
)
def test_a_wrapped_key_unwrapped_in_another_context_fails(gcp: GcpKmsEmulator, other: KeyContext) -> None:
    provider = provider_for(customer_key(gcp))
    wrapped = provider.wrap(os.urandom(32), CTX)
    error = refused(provider.unwrap, wrapped, other)
    assert error.kind == FailureKind.INTEGRITY and not error.seals
    assert gcp.counts()["Decrypt"] == 1  # not retried


def test_a_wrapped_tkv_moved_to_another_tenant_fails(gcp: GcpKmsEmulator) -> None:
    mine = provider_for(customer_key(gcp, "acme", TENANT))
    theirs = provider_for(customer_key(gcp, "globex", OTHER_TENANT))
    wrapped = mine.wrap(os.urandom(32), CTX)
    for context in (KeyContext(tenant_id=OTHER_TENANT, key_version=1), CTX):
        assert refused(theirs.unwrap, wrapped, context).kind == FailureKind.INTEGRITY
    assert len(mine.unwrap(wrapped, CTX)) == 32


def test_a_tampered_wrapped_key_is_refused(gcp: GcpKmsEmulator) -> None:
    provider = provider_for(customer_key(gcp))
    wrapped = bytearray(provider.wrap(os.urandom(32), CTX))
    wrapped[-3] ^= 1
    assert refused(provider.unwrap, bytes(wrapped), CTX).kind == FailureKind.INTEGRITY


# -- revocation and key state: seal, never retried -----------------------------------------------------------


def test_revoking_kodoris_access_to_the_key_seals_without_retry_loops(gcp: GcpKmsEmulator) -> None:
    row = customer_key(gcp)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    assert gcp.revoke(row.key_id) == 1
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DENIED and error.seals
    assert "…" + row.key_id[-12:] in str(error) and "roles/cloudkms.cryptoKeyEncrypterDecrypter" in str(error)
    assert outcomes(gcp, "Decrypt", "PERMISSION_DENIED") == 1 and gcp.counts()["Decrypt"] == 1


def test_a_refused_token_exchange_seals_before_any_kms_call(gcp: GcpKmsEmulator) -> None:
    provider = provider_for(customer_key(gcp))
    gcp.set_provider_enabled(False)
    error = refused(provider.wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.DENIED and error.seals and "invalid_target" in str(error)
    assert gcp.counts() == {} and len(gcp.sts_exchanges()) == 1  # refused once, not retried


def test_revoking_the_principals_impersonation_seals(gcp: GcpKmsEmulator) -> None:
    email = "kodori-kms@kodori-dev.iam.gserviceaccount.com"
    member = gcp.create_service_account(email)
    gcp.allow_impersonation(email)
    row = customer_key(gcp, grant_to=member)
    with override_settings(KODORI_GCP_SERVICE_ACCOUNT=email):
        provider = provider_for(row)
        wrapped = provider.wrap(os.urandom(32), CTX)
        assert {c["principal"] for c in gcp.calls()} == {member}
        gcp.revoke(f"projects/-/serviceAccounts/{email}", role="roles/iam.workloadIdentityUser")
        gcp.revoke_tokens()  # the service account's token lapses; a new one is refused
        error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DENIED and error.seals and email in str(error)


def test_a_missing_subject_token_file_is_a_configuration_error(gcp: GcpKmsEmulator, tmp_path: Path) -> None:
    provider = provider_for(customer_key(gcp))
    with override_settings(KODORI_GCP_SUBJECT_TOKEN_FILE=str(tmp_path / "nowhere.jwt")):
        error = refused(provider.wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.CONFIGURATION and not error.seals


@pytest.mark.parametrize(
    ("state", "words"), [("DISABLED", "is disabled"), ("DESTROYED", "destroyed")], ids=str.lower
)
def test_a_disabled_or_destroyed_version_seals(gcp: GcpKmsEmulator, state: str, words: str) -> None:
    row = customer_key(gcp)
    provider = provider_for(row)
    wrapped = provider.wrap(os.urandom(32), CTX)
    gcp.set_version_state(row.key_id + "/cryptoKeyVersions/1", state)
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DISABLED and error.seals and words in str(error)
    assert gcp.counts()["Decrypt"] == 1
    assert refused(lambda: provider.probe(1)).kind == FailureKind.DISABLED


def test_a_key_that_does_not_exist_is_not_found(gcp: GcpKmsEmulator) -> None:
    ring = gcp.create_key_ring("acme")
    gcp.grant(ring)  # the caller may use keys in the ring, so it learns that this one is missing
    provider = GcpKeyProvider(f"{ring}/cryptoKeys/gone", tenant_id=TENANT)
    error = refused(provider.wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.NOT_FOUND and error.seals


# -- per-tenant service accounts (GCP's answer to the confused deputy) ---------------------------------------


def test_per_tenant_service_accounts_keep_a_tenant_off_another_tenants_key(gcp: GcpKmsEmulator) -> None:
    template = "kodori-t{tenant_id}@kodori-dev.iam.gserviceaccount.com"
    for tenant in (TENANT, OTHER_TENANT):
        email = template.format(tenant_id=tenant)
        gcp.create_service_account(email)
        gcp.allow_impersonation(email)  # Kodori's federated principal may act as each tenant's account
    acme = customer_key(gcp, grant_to=f"serviceAccount:{template.format(tenant_id=TENANT)}")
    with override_settings(KODORI_GCP_TENANT_SERVICE_ACCOUNT=template):
        provider_for(acme).probe(acme.tenant_id)
        # globex registers acme's key path: its calls act as globex's account, which acme never granted.
        stolen = TenantKey(
            tenant_id=OTHER_TENANT, wrap_method=WrapMethod.CUSTOMER_KMS_GCP, key_id=acme.key_id
        )
        error = refused(provider_for(stolen).wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.DENIED and "kodori-t8@" in str(error)


# -- tokens --------------------------------------------------------------------------------------------------


def test_the_access_token_is_exchanged_once_for_many_calls(gcp: GcpKmsEmulator) -> None:
    row = customer_key(gcp)
    wrapped = [provider_for(row).wrap(os.urandom(32), CTX) for _ in range(10)]
    for blob in wrapped:
        provider_for(row).unwrap(blob, CTX)
    assert exchanges(gcp) == 1 and gcp.counts() == {"Encrypt": 10, "Decrypt": 10}


def test_a_revoked_token_is_replaced_and_the_call_retried_once(gcp: GcpKmsEmulator) -> None:
    provider = provider_for(customer_key(gcp))
    wrapped = provider.wrap(os.urandom(32), CTX)
    gcp.revoke_tokens()
    assert len(provider.unwrap(wrapped, CTX)) == 32
    assert outcomes(gcp, "Decrypt", "UNAUTHENTICATED") == 1 and exchanges(gcp) == 2


def test_a_token_close_to_expiry_is_refreshed_before_use(
    gcp: GcpKmsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # google-auth renews a token 3 min 45 s (225 s) before it expires: a 227-second token is fresh for about
    # two seconds, then must be replaced before it is sent again.
    monkeypatch.setattr(gcp.store, "token_lifetime", 227)
    provider = provider_for(customer_key(gcp))
    provider.wrap(os.urandom(32), CTX)
    provider.wrap(os.urandom(32), CTX)
    assert exchanges(gcp) == 1
    time.sleep(2.2)
    provider.wrap(os.urandom(32), CTX)
    assert exchanges(gcp) == 2 and outcomes(gcp, "Encrypt", "UNAUTHENTICATED") == 0


# -- transient failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome"), [("throttle", "RESOURCE_EXHAUSTED"), ("unavailable", "UNAVAILABLE")]
)
def test_transient_failures_recover_within_the_deadline(
    gcp: GcpKmsEmulator, fault: str, outcome: str
) -> None:
    provider = provider_for(customer_key(gcp))
    wrapped = provider.wrap(os.urandom(32), CTX)
    getattr(gcp, fault)(count=2, operations=["Decrypt"])
    assert len(provider.unwrap(wrapped, CTX)) == 32
    assert outcomes(gcp, "Decrypt", outcome) == 2 and outcomes(gcp, "Decrypt", "ok") == 1


def test_persistent_throttling_fails_as_transient_after_max_attempts(gcp: GcpKmsEmulator) -> None:
    provider = provider_for(customer_key(gcp))
    wrapped = provider.wrap(os.urandom(32), CTX)
    gcp.throttle(ratio=1.0, operations=["Decrypt"])
    with override_settings(KODORI_KMS_MAX_ATTEMPTS=3):
        error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.TRANSIENT and not error.seals
    assert outcomes(gcp, "Decrypt", "RESOURCE_EXHAUSTED") == 3


# -- CRC32C integrity fields ---------------------------------------------------------------------------------

KEY = f"{KEY_RING}/acme/cryptoKeys/kek"


def encrypt_response(**overrides: Any) -> kms_v1.EncryptResponse:
    ciphertext = b"\x01wrapped-key-bytes"
    fields: dict[str, Any] = {
        "name": KEY + "/cryptoKeyVersions/1",
        "ciphertext": ciphertext,
        "ciphertext_crc32c": crc32c(ciphertext),
        "verified_plaintext_crc32c": True,
        "verified_additional_authenticated_data_crc32c": True,
    }
    return kms_v1.EncryptResponse(**{**fields, **overrides})


def test_an_intact_encrypt_response_passes() -> None:
    verify_encrypt_response(encrypt_response(), KEY)
    verify_decrypt_response(kms_v1.DecryptResponse(plaintext=b"k" * 32, plaintext_crc32c=crc32c(b"k" * 32)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"ciphertext_crc32c": crc32c(b"something else")},
        {"ciphertext_crc32c": None},
        {"verified_plaintext_crc32c": False},
        {"verified_additional_authenticated_data_crc32c": False},
        {"name": f"{KEY_RING}/acme/cryptoKeys/other/cryptoKeyVersions/1"},
    ],
    ids=["ciphertext-crc", "no-ciphertext-crc", "plaintext-unverified", "aad-unverified", "other-key"],
)
def test_a_damaged_encrypt_response_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ChecksumMismatch):
        verify_encrypt_response(encrypt_response(**overrides), KEY)


@pytest.mark.parametrize("checksum", [crc32c(b"x" * 32), None], ids=["wrong", "missing"])
def test_a_damaged_decrypt_response_is_refused(checksum: int | None) -> None:
    with pytest.raises(ChecksumMismatch):
        verify_decrypt_response(kms_v1.DecryptResponse(plaintext=b"k" * 32, plaintext_crc32c=checksum))


@pytest.mark.parametrize(
    "error",
    [
        ChecksumMismatch("the returned ciphertext does not match its checksum"),
        api_exceptions.InvalidArgument(
            "The checksum in field ciphertext_crc32c did not match the data in field ciphertext."
        ),
    ],
    ids=["response", "request"],
)
def test_a_checksum_mismatch_is_transient_and_retried(gcp: GcpKmsEmulator, error: Exception) -> None:
    provider = GcpKeyProvider(customer_key(gcp).key_id, tenant_id=TENANT)
    classified = provider._classify(error, "Decrypt")
    assert classified.kind == FailureKind.TRANSIENT and not classified.seals
