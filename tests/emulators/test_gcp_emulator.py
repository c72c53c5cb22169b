"""The GCP Cloud KMS emulator, driven through the real google-cloud-kms client and google-auth federation.

Every client here is built the way Kodori's ``customer_kms_gcp`` provider builds it
(``support.gcp.make_client``, documented in ``docs/emulators.md``): ``identity_pool.Credentials`` from an
``external_account`` config whose ``token_url`` is the emulator's STS, and a ``KeyManagementServiceClient``
whose gRPC transport uses local channel credentials. A guard fails any test that tries to resolve or connect
to anything but loopback.
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

# The GCP SDKs are development dependencies; without them this module is skipped rather than broken.
pytest.importorskip("google.cloud.kms_v1", reason="google-cloud-kms is not installed")
pytest.importorskip("google_crc32c", reason="google-crc32c is not installed")

import grpc
import requests
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth import exceptions as auth_exceptions
from google.auth import identity_pool
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import Request as AuthRequest
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)

from emulators.gcp_kms import EMULATOR_UNIVERSE, KMS_SCOPE, GcpKmsEmulator
from emulators.gcp_sts import WorkloadIdentityIssuer
from tests.emulators.support.gcp import MintingSupplier, crc, decrypt, encrypt, federated, make_client
from tests.emulators.support.loopback import refuse_non_loopback


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """No DNS lookup or connection beyond 127.0.0.1, and no ambient Google credentials."""
    attempts = refuse_non_loopback(monkeypatch)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "GOOGLE_API_USE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "kodori-dev")
    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")
    yield attempts
    time.sleep(0.05)  # let google-auth's background threads, if any, make their move before we look
    assert attempts == [], f"something tried to leave loopback: {attempts}"


@pytest.fixture
def emulator() -> Iterator[GcpKmsEmulator]:
    with GcpKmsEmulator() as emu:
        yield emu


@pytest.fixture
def key(emulator: GcpKmsEmulator) -> str:
    return emulator.create_key("kodori", "kek")


@pytest.fixture
def kms(emulator: GcpKmsEmulator, tmp_path: Path) -> kms_v1.KeyManagementServiceClient:
    return make_client(emulator.endpoint, federated(emulator, tmp_path))


def test_it_round_trips_with_aad_and_integrity_fields(kms: Any, key: str) -> None:
    response = encrypt(kms, key, b"tenant key version", b"tenant=acme;v=1")
    assert response.name == key + "/cryptoKeyVersions/1"
    assert response.verified_plaintext_crc32c and response.verified_additional_authenticated_data_crc32c
    assert response.ciphertext_crc32c == crc(response.ciphertext)
    assert b"tenant key version" not in response.ciphertext

    plain = decrypt(kms, key, response.ciphertext, b"tenant=acme;v=1")
    assert plain.plaintext == b"tenant key version"
    assert plain.plaintext_crc32c == crc(b"tenant key version")
    assert plain.used_primary


def test_it_refuses_wrong_aad(kms: Any, key: str) -> None:
    ciphertext = encrypt(kms, key, b"secret", b"tenant=acme").ciphertext
    with pytest.raises(gexc.InvalidArgument, match=r"Decryption failed: the ciphertext is invalid\."):
        decrypt(kms, key, ciphertext, b"tenant=globex")
    with pytest.raises(gexc.InvalidArgument, match="the ciphertext is invalid"):
        decrypt(kms, key, ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]), b"tenant=acme")


def test_it_refuses_a_ciphertext_of_another_key(emulator: GcpKmsEmulator, kms: Any, key: str) -> None:
    other = emulator.create_key("kodori", "other")
    ciphertext = encrypt(kms, key, b"secret", b"").ciphertext
    with pytest.raises(gexc.InvalidArgument, match="verify that 'name' refers to the correct CryptoKey"):
        decrypt(kms, other, ciphertext, b"")


def test_it_detects_crc32c_mismatches_and_treats_zero_as_a_value(kms: Any, key: str) -> None:
    for field in ("plaintext_crc32c", "additional_authenticated_data_crc32c"):
        request = {"name": key, "plaintext": b"abc", "additional_authenticated_data": b"ctx", field: 0}
        with pytest.raises(gexc.InvalidArgument, match=f"checksum in field {field}"):
            kms.encrypt(request=request)
    ciphertext = encrypt(kms, key, b"abc", b"ctx").ciphertext
    with pytest.raises(gexc.InvalidArgument, match="checksum in field ciphertext_crc32c"):
        kms.decrypt(request={"name": key, "ciphertext": ciphertext, "additional_authenticated_data": b"ctx",
                             "ciphertext_crc32c": crc(ciphertext) ^ 1})  # fmt: skip


def test_it_reports_unverified_when_no_checksum_was_sent(kms: Any, key: str) -> None:
    response = kms.encrypt(request={"name": key, "plaintext": b"abc"})
    assert not response.verified_plaintext_crc32c
    assert not response.verified_additional_authenticated_data_crc32c


def test_it_decrypts_with_the_version_the_ciphertext_names(
    emulator: GcpKmsEmulator, kms: Any, key: str
) -> None:
    old = encrypt(kms, key, b"old", b"").ciphertext
    emulator.create_version(key, make_primary=True)
    new = encrypt(kms, key, b"new", b"")
    assert new.name.endswith("/cryptoKeyVersions/2")
    result = decrypt(kms, key, old, b"")
    assert result.plaintext == b"old" and not result.used_primary
    # Encrypt on an explicit version path uses that version, primary or not.
    assert encrypt(kms, key + "/cryptoKeyVersions/1", b"x", b"").name.endswith("/cryptoKeyVersions/1")


def test_it_refuses_a_disabled_version_until_it_is_enabled_again(
    emulator: GcpKmsEmulator, kms: Any, key: str
) -> None:
    ciphertext = encrypt(kms, key, b"secret", b"").ciphertext
    emulator.set_version_state(key + "/cryptoKeyVersions/1", "DISABLED")
    with pytest.raises(
        gexc.FailedPrecondition, match=r"cryptoKeyVersions/1 is not enabled, current state is: DISABLED"
    ):
        encrypt(kms, key, b"secret", b"")
    with pytest.raises(gexc.FailedPrecondition, match="DISABLED"):
        decrypt(kms, key, ciphertext, b"")
    emulator.set_version_state(key + "/cryptoKeyVersions/1", "ENABLED")
    assert decrypt(kms, key, ciphertext, b"").plaintext == b"secret"


@pytest.mark.parametrize("state", ["DISABLED", "DESTROY_SCHEDULED", "DESTROYED"])
def test_it_refuses_encrypt_with_an_unusable_primary_while_an_older_version_still_decrypts(
    emulator: GcpKmsEmulator, kms: Any, key: str, state: str
) -> None:
    old = encrypt(kms, key, b"old", b"").ciphertext
    emulator.create_version(key, make_primary=True)
    emulator.set_version_state(key + "/cryptoKeyVersions/2", state)
    # As on Cloud KMS: Encrypt on the CryptoKey uses the primary and never falls back to another version.
    with pytest.raises(
        gexc.FailedPrecondition, match=rf"cryptoKeyVersions/2 is not enabled, current state is: {state}\."
    ):
        encrypt(kms, key, b"new", b"")
    assert decrypt(kms, key, old, b"").plaintext == b"old"
    emulator.grant(key, role="roles/cloudkms.viewer")
    primary = kms.get_crypto_key(request={"name": key}).primary
    assert primary.name == key + "/cryptoKeyVersions/2" and primary.state.name == state


def test_it_refuses_encrypt_on_a_key_without_a_primary(emulator: GcpKmsEmulator, kms: Any) -> None:
    ring = emulator.create_key_ring("bare")
    key = emulator.create_crypto_key(ring, "kek", with_version=False)
    emulator.grant(key)
    emulator.grant(key, role="roles/cloudkms.viewer")
    with pytest.raises(gexc.FailedPrecondition, match="has no primary"):
        encrypt(kms, key, b"x", b"")
    assert "primary" not in kms.get_crypto_key(request={"name": key})


@pytest.mark.parametrize("state", ["DESTROY_SCHEDULED", "DESTROYED"])
def test_it_refuses_destroyed_versions(emulator: GcpKmsEmulator, kms: Any, key: str, state: str) -> None:
    ciphertext = encrypt(kms, key, b"secret", b"").ciphertext
    emulator.set_version_state(key + "/cryptoKeyVersions/1", state)
    with pytest.raises(gexc.FailedPrecondition, match=f"current state is: {state}"):
        decrypt(kms, key, ciphertext, b"")
    with pytest.raises(gexc.FailedPrecondition):
        encrypt(kms, key, b"secret", b"")


def test_it_denies_a_principal_whose_role_was_revoked(emulator: GcpKmsEmulator, kms: Any, key: str) -> None:
    ciphertext = encrypt(kms, key, b"secret", b"").ciphertext
    assert emulator.revoke(key) == 1
    with pytest.raises(
        gexc.PermissionDenied,
        match=f"Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '{key}'",
    ):
        decrypt(kms, key, ciphertext, b"")
    with pytest.raises(gexc.PermissionDenied, match="useToEncrypt"):
        encrypt(kms, key, b"secret", b"")
    emulator.grant(key)
    assert decrypt(kms, key, ciphertext, b"").plaintext == b"secret"


def test_it_hides_a_missing_key_unless_the_caller_may_see_it(
    emulator: GcpKmsEmulator, kms: Any, key: str
) -> None:
    ring = key.rsplit("/cryptoKeys/", 1)[0]
    with pytest.raises(gexc.PermissionDenied, match="or it may not exist"):
        encrypt(kms, ring + "/cryptoKeys/missing", b"x", b"")
    emulator.grant(ring)  # a binding on the key ring covers keys that do not exist (yet)
    with pytest.raises(gexc.NotFound, match="cryptoKeys/missing not found"):
        encrypt(kms, ring + "/cryptoKeys/missing", b"x", b"")


def test_it_needs_the_viewer_role_for_get_crypto_key(emulator: GcpKmsEmulator, kms: Any, key: str) -> None:
    with pytest.raises(gexc.PermissionDenied, match=r"cloudkms\.cryptoKeys\.get"):
        kms.get_crypto_key(name=key)
    emulator.grant(key, role="roles/cloudkms.viewer")
    assert kms.get_crypto_key(name=key).primary.state == kms_v1.CryptoKeyVersion.CryptoKeyVersionState.ENABLED
    emulator.set_version_state(key + "/cryptoKeyVersions/1", "DISABLED")
    version = kms.get_crypto_key_version(name=key + "/cryptoKeyVersions/1")
    assert version.state == kms_v1.CryptoKeyVersion.CryptoKeyVersionState.DISABLED


def test_it_creates_key_rings_and_keys_through_the_api(emulator: GcpKmsEmulator, kms: Any) -> None:
    emulator.grant("projects/kodori-dev", role="roles/cloudkms.admin")
    emulator.grant("projects/kodori-dev")
    ring = kms.create_key_ring(parent="projects/kodori-dev/locations/global", key_ring_id="api", key_ring={})
    created = kms.create_crypto_key(
        parent=ring.name,
        crypto_key_id="k",
        crypto_key={"purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT},
    )
    assert created.primary.name == ring.name + "/cryptoKeys/k/cryptoKeyVersions/1"
    assert decrypt(kms, created.name, encrypt(kms, created.name, b"x", b"").ciphertext, b"").plaintext == b"x"


def test_it_refuses_unauthenticated_calls(emulator: GcpKmsEmulator, key: str) -> None:
    channel = grpc.insecure_channel(emulator.endpoint)
    anonymous = kms_v1.KeyManagementServiceClient(
        transport=KeyManagementServiceGrpcTransport(channel=channel, credentials=AnonymousCredentials())
    )
    with pytest.raises(gexc.Unauthenticated, match="missing required authentication credential"):
        anonymous.encrypt(request={"name": key, "plaintext": b"x"})
    forged = grpc.intercept_channel(channel)
    stub = forged.unary_unary(
        "/google.cloud.kms.v1.KeyManagementService/Encrypt",
        request_serializer=kms_v1.EncryptRequest.serialize,
        response_deserializer=kms_v1.EncryptResponse.deserialize,
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub(
            kms_v1.EncryptRequest(name=key, plaintext=b"x"),
            metadata=[("authorization", "Bearer ya29.forged")],
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda emu: WorkloadIdentityIssuer(emu.issuer.issuer).mint("kodori-web", "x"), id="unknown-key"
        ),
        pytest.param(
            lambda emu: emu.mint_subject_token(audience="https://elsewhere.example"), id="wrong-audience"
        ),
        pytest.param(lambda emu: emu.mint_subject_token(lifetime=-3600), id="expired"),
        pytest.param(lambda emu: emu.mint_subject_token(iss="https://evil.example"), id="wrong-issuer"),
        pytest.param(lambda emu: "not-a-jwt", id="garbage"),
    ],
)
def test_it_refuses_bad_subject_tokens_at_the_sts(
    emulator: GcpKmsEmulator, key: str, tmp_path: Path, make_token: Any
) -> None:
    creds = federated(emulator, tmp_path, token=make_token(emulator))
    # Refreshing first is how Kodori sees the refusal as what it is: an OAuthError naming the STS error code.
    with pytest.raises(auth_exceptions.OAuthError, match="invalid_grant"):
        creds.refresh(AuthRequest())
    # Through the client the same refusal arrives disguised as UNAVAILABLE, which the default retry would
    # retry for up to 60 s: hence the explicit refresh, and retry=None or a retry of Kodori's own.
    with pytest.raises(gexc.ServiceUnavailable, match="Getting metadata from plugin failed"):
        make_client(emulator.endpoint, creds).encrypt(request={"name": key, "plaintext": b"x"}, retry=None)
    assert emulator.counts() == {}  # refused before any KMS call


def test_it_refuses_a_disabled_provider(emulator: GcpKmsEmulator, tmp_path: Path) -> None:
    emulator.set_provider_enabled(False)
    with pytest.raises(auth_exceptions.OAuthError, match="invalid_target"):
        federated(emulator, tmp_path).refresh(AuthRequest())


def test_it_supports_service_account_impersonation(
    emulator: GcpKmsEmulator, key: str, tmp_path: Path
) -> None:
    email = "kodori@kodori-dev.iam.gserviceaccount.com"
    emulator.create_service_account(email)
    emulator.grant(key, f"serviceAccount:{email}")
    emulator.revoke(key)  # only the service account may use the key, not the federated principal itself
    impersonation_url = emulator.credential_config("unused", service_account=email)[
        "service_account_impersonation_url"
    ]
    with pytest.raises(auth_exceptions.RefreshError, match="getAccessToken"):
        federated(emulator, tmp_path, service_account_impersonation_url=impersonation_url).refresh(
            AuthRequest()
        )
    emulator.allow_impersonation(email)
    creds = federated(emulator, tmp_path, service_account_impersonation_url=impersonation_url)
    kms = make_client(emulator.endpoint, creds)
    assert decrypt(kms, key, encrypt(kms, key, b"x", b"").ciphertext, b"").plaintext == b"x"
    assert creds.service_account_email == email
    assert {c["principal"] for c in emulator.calls()} == {f"serviceAccount:{email}"}


def test_it_accepts_a_subject_token_supplier(emulator: GcpKmsEmulator, key: str) -> None:
    supplier = MintingSupplier(emulator)
    creds = identity_pool.Credentials(
        audience=emulator.default_audience,
        subject_token_type="urn:ietf:params:oauth:token-type:jwt",
        token_url=emulator.sts_url,
        subject_token_supplier=supplier,
        universe_domain=EMULATOR_UNIVERSE,
        scopes=[KMS_SCOPE],
    )
    kms = make_client(emulator.endpoint, creds)
    assert decrypt(kms, key, encrypt(kms, key, b"x", b"").ciphertext, b"").plaintext == b"x"
    assert supplier.calls == 1  # one exchange, then the federated token is reused until it expires


def test_it_throttles_then_succeeds_with_a_short_retry(emulator: GcpKmsEmulator, kms: Any, key: str) -> None:
    emulator.throttle(count=2, operations=["Encrypt"])
    with pytest.raises(gexc.ResourceExhausted, match="Quota exceeded"):
        encrypt(kms, key, b"x", b"", retry=None)
    short = gretry.Retry(
        predicate=gretry.if_exception_type(gexc.ResourceExhausted), initial=0.01, maximum=0.05, timeout=5
    )
    assert encrypt(kms, key, b"x", b"", retry=short).name.endswith("/cryptoKeyVersions/1")
    assert emulator.counts() == {"Encrypt": 3}
    assert emulator.outcome_counts() == {"Encrypt:RESOURCE_EXHAUSTED": 2, "Encrypt:ok": 1}


def test_it_throttles_a_ratio_of_chosen_operations(emulator: GcpKmsEmulator, kms: Any, key: str) -> None:
    ciphertext = encrypt(kms, key, b"x", b"").ciphertext
    emulator.throttle(ratio=1.0, operations=["Decrypt"])
    for _ in range(3):
        with pytest.raises(gexc.ResourceExhausted):
            decrypt(kms, key, ciphertext, b"", retry=None)
    encrypt(kms, key, b"x", b"")
    emulator.clear_faults()
    assert decrypt(kms, key, ciphertext, b"").plaintext == b"x"


def test_it_injects_unavailable_which_the_client_retries_by_default(
    emulator: GcpKmsEmulator, kms: Any, key: str
) -> None:
    emulator.unavailable(count=1)
    with pytest.raises(gexc.ServiceUnavailable):
        encrypt(kms, key, b"x", b"", retry=None)
    emulator.unavailable(count=1)
    assert encrypt(kms, key, b"x", b"").name  # google-cloud-kms's default retry covers UNAVAILABLE
    assert emulator.outcome_counts()["Encrypt:UNAVAILABLE"] == 2


def test_it_adds_latency(emulator: GcpKmsEmulator, kms: Any, key: str) -> None:
    encrypt(kms, key, b"x", b"")  # token exchange and channel set-up out of the way
    emulator.set_latency(150)
    started = time.monotonic()
    encrypt(kms, key, b"x", b"")
    assert time.monotonic() - started >= 0.15
    emulator.set_latency(0)


def test_it_serves_the_admin_api_over_http(emulator: GcpKmsEmulator, tmp_path: Path) -> None:
    admin = emulator.admin_url
    key = requests.post(
        f"{admin}/create_key", json={"key_ring_id": "http", "crypto_key_id": "k"}, timeout=5
    ).json()["result"]
    token = requests.post(f"{admin}/mint_subject_token", json={}, timeout=5).json()["result"]
    kms = make_client(emulator.endpoint, federated(emulator, tmp_path, token=token))
    ciphertext = encrypt(kms, key, b"x", b"").ciphertext
    requests.post(
        f"{admin}/set_version_state",
        json={"version": key + "/cryptoKeyVersions/1", "state": "DISABLED"},
        timeout=5,
    )
    with pytest.raises(gexc.FailedPrecondition):
        decrypt(kms, key, ciphertext, b"")
    assert requests.get(f"{admin}/counts", timeout=5).json()["result"] == {"Encrypt": 1, "Decrypt": 1}
    assert requests.post(f"{admin}/no_such_thing", json={}, timeout=5).status_code == 404


def test_it_keeps_keys_and_bindings_across_restarts_with_a_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with GcpKmsEmulator(state_dir=str(state)) as first:
        key = first.create_key("kodori", "kek")
        first.create_version(key, make_primary=True)
        first.set_version_state(key + "/cryptoKeyVersions/1", "DISABLED")
        kms = make_client(first.endpoint, federated(first, tmp_path))
        ciphertext = encrypt(kms, key, b"survives", b"ctx").ciphertext
    assert (state / "gcp-kms-state.json").stat().st_mode & 0o077 == 0  # key material: owner-only
    with GcpKmsEmulator(state_dir=str(state)) as second:
        kms = make_client(second.endpoint, federated(second, tmp_path))
        assert decrypt(kms, key, ciphertext, b"ctx").plaintext == b"survives"
        assert second.store.get_key(key).versions[1].state.value == "DISABLED"


def test_it_runs_as_a_program_and_prints_its_settings(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "emulators.gcp_kms", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0 and "--subject-token-file" in help_text.stdout
    settings_file, token_file = tmp_path / "settings.json", tmp_path / "token.jwt"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.gcp_kms", "--port", "0", "--sts-port", "0", "--key", "kodori/kek",
         "--subject-token-file", str(token_file), "--settings-file", str(settings_file)],
        stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not settings_file.exists() or not settings_file.read_text().strip().endswith("}"):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        settings = json.loads(settings_file.read_text())
        creds = identity_pool.Credentials.from_info(settings["GCP_CREDENTIAL_CONFIG"], scopes=[KMS_SCOPE])
        kms = make_client(settings["GCP_KMS_ENDPOINT"], creds)
        name = "projects/kodori-dev/locations/global/keyRings/kodori/cryptoKeys/kek"
        assert decrypt(kms, name, encrypt(kms, name, b"x", b"a").ciphertext, b"a").plaintext == b"x"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
