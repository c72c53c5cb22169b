"""The Azure Key Vault emulator, driven by the real azure-keyvault-keys and azure-identity SDKs.

These tests pin down what Kodori's Azure provider may rely on: the bearer challenge, key state, per-principal
access, error shapes and status codes, and the fault injection that Kodori's retry tests use. No test opens a
connection beyond 127.0.0.1 (see ``loopback_only``). Federated credentials, TLS and the command line are in
``test_entra_emulator.py``.
"""

from __future__ import annotations

import datetime
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

# The Azure SDKs are development dependencies; without them this module is skipped rather than broken.
pytest.importorskip("azure.keyvault.keys", reason="azure-keyvault-keys is not installed")
pytest.importorskip("azure.identity", reason="azure-identity is not installed")

import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from emulators.azure_keyvault import AzureKeyVaultEmulator, ClientSettings
from emulators.entra import EntraEmulator

from .support import azure as support
from .support.azure import OAEP256, StaticToken, credential_for, crypto_for

# The shared fixtures, bound in this module so that pytest finds them without a conftest (the suite also runs
# with --noconftest) and so that module-scoped ones start one emulator per test module.
app, entra, key_name, vault = support.app, support.entra, support.key_name, support.vault
loopback_only, no_faults = support.loopback_only, support.no_faults

# -- wrap / unwrap -------------------------------------------------------------------------------------------


def test_it_round_trips_wrap_and_unwrap_with_rsa_oaep_256(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name)
    secret = secrets.token_bytes(32)

    wrapped = client.wrap_key(OAEP256, secret)
    unwrapped = client.unwrap_key(OAEP256, wrapped.encrypted_key)

    assert unwrapped.key == secret
    assert len(wrapped.encrypted_key) == 256
    assert wrapped.encrypted_key != client.wrap_key(OAEP256, secret).encrypted_key  # OAEP is randomized
    assert vault.call_count("unwrapKey", key=key_name, status=200, principal=app.client_id) == 1


def test_it_unwraps_rsa_oaep_with_sha1_too(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = client.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32)

    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key).key == b"k" * 32
    with pytest.raises(HttpResponseError) as excinfo:
        client.unwrap_key(OAEP256, wrapped.encrypted_key)
    assert excinfo.value.status_code == 400


def test_it_serves_the_public_key_bundle(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    key = KeyClient(vault.url, credential_for(app), **app.client_kwargs()).get_key(key_name)

    assert key.id == vault.key_id(key_name)
    assert key.key_type == "RSA"
    assert key.properties.enabled is True
    assert set(key.key_operations) >= {"wrapKey", "unwrapKey"}
    jwk: Any = key.key  # JsonWebKey sets its fields dynamically
    assert int.from_bytes(jwk.n, "big").bit_length() == 2048
    assert jwk.d is None  # the private half never leaves the vault


def test_it_creates_hsm_keys_of_other_sizes(vault: AzureKeyVaultEmulator, app: ClientSettings) -> None:
    vault.create_key("hsm-3072", kty="RSA-HSM", size=3072)
    key = KeyClient(vault.url, credential_for(app), **app.client_kwargs()).get_key("hsm-3072")
    client = crypto_for(vault, app, "hsm-3072")

    assert key.key_type == "RSA-HSM"
    jwk: Any = key.key
    assert int.from_bytes(jwk.n, "big").bit_length() == 3072
    assert client.unwrap_key(OAEP256, client.wrap_key(OAEP256, b"h" * 32).encrypted_key).key == b"h" * 32


def test_it_rejects_a_tampered_wrapped_key(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = bytearray(client.wrap_key(OAEP256, b"t" * 32).encrypted_key)
    wrapped[17] ^= 0x01

    with pytest.raises(HttpResponseError) as excinfo:
        client.unwrap_key(OAEP256, bytes(wrapped))

    assert excinfo.value.status_code == 400
    assert excinfo.value.error is not None and excinfo.value.error.code == "BadParameter"


# -- key state -----------------------------------------------------------------------------------------------


def test_it_refuses_unwrap_once_the_key_is_disabled(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = client.wrap_key(OAEP256, b"d" * 32).encrypted_key
    vault.disable_key(key_name)

    # Wrapping still works: the SDK wraps locally with the public key it fetched. Only unwrap proves access.
    client.wrap_key(OAEP256, b"d" * 32)
    with pytest.raises(HttpResponseError) as excinfo:
        client.unwrap_key(OAEP256, wrapped)

    assert excinfo.value.status_code == 403
    assert excinfo.value.error is not None and excinfo.value.error.code == "Forbidden"
    assert "not allowed on a disabled key" in excinfo.value.message
    assert vault.calls("unwrapKey", key=key_name)[-1].error == "KeyDisabled"
    assert vault.call_count("unwrapKey", key=key_name, status=403) == 1  # a denial is final: no retries

    vault.enable_key(key_name)
    assert client.unwrap_key(OAEP256, wrapped).key == b"d" * 32


def test_it_disables_one_version_without_the_others(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    old_id = vault.key_id(key_name)
    new_id = vault.create_key(key_name)  # a rotation in the customer's vault: a new current version
    old = CryptographyClient(old_id, credential_for(app), **app.client_kwargs())
    new = CryptographyClient(new_id, credential_for(app), **app.client_kwargs())
    old_wrapped = old.wrap_key(OAEP256, b"o" * 32).encrypted_key
    new_wrapped = new.wrap_key(OAEP256, b"n" * 32).encrypted_key

    vault.disable_key(key_name, version=old_id.rsplit("/", 1)[1])

    with pytest.raises(HttpResponseError) as excinfo:
        old.unwrap_key(OAEP256, old_wrapped)
    assert excinfo.value.status_code == 403
    assert new.unwrap_key(OAEP256, new_wrapped).key == b"n" * 32


def test_it_answers_404_for_a_missing_key(vault: AzureKeyVaultEmulator, app: ClientSettings) -> None:
    client = CryptographyClient(
        f"{vault.url}/keys/no-such-key/{'0' * 32}", credential_for(app), **app.client_kwargs()
    )

    with pytest.raises(ResourceNotFoundError) as excinfo:
        client.unwrap_key(OAEP256, b"\0" * 256)

    assert excinfo.value.status_code == 404
    assert excinfo.value.error is not None and excinfo.value.error.code == "KeyNotFound"
    with pytest.raises(ResourceNotFoundError):
        KeyClient(vault.url, credential_for(app), **app.client_kwargs()).get_key("no-such-key")


def test_it_hides_soft_deleted_and_purged_keys(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = client.wrap_key(OAEP256, b"s" * 32).encrypted_key

    vault.delete_key(key_name)
    with pytest.raises(ResourceNotFoundError):
        client.unwrap_key(OAEP256, wrapped)
    vault.recover_key(key_name)
    assert client.unwrap_key(OAEP256, wrapped).key == b"s" * 32
    vault.delete_key(key_name, purge=True)
    with pytest.raises(ResourceNotFoundError):
        client.unwrap_key(OAEP256, wrapped)


# -- access: principals and directories ----------------------------------------------------------------------


def test_it_refuses_unwrap_once_the_principal_is_revoked(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = client.wrap_key(OAEP256, b"r" * 32).encrypted_key
    vault.revoke(app.client_id, ["unwrapKey"])

    with pytest.raises(HttpResponseError) as excinfo:
        client.unwrap_key(OAEP256, wrapped)

    assert excinfo.value.status_code == 403
    assert f"appid={app.client_id}" in excinfo.value.message
    assert "does not have keys unwrapKey permission on key vault" in excinfo.value.message
    assert vault.calls("unwrapKey", principal=app.client_id)[-1].error == "AccessDenied"

    vault.grant(app.client_id, ["unwrapKey"])
    assert client.unwrap_key(OAEP256, wrapped).key == b"r" * 32


def test_it_limits_a_per_key_grant_to_that_key(vault: AzureKeyVaultEmulator, key_name: str) -> None:
    app = vault.register_client(permissions=["get", "wrapKey", "unwrapKey"], key=key_name)
    other = f"{key_name}-other"
    vault.create_key(other)
    mine, theirs = crypto_for(vault, app, key_name), crypto_for(vault, app, other)

    assert mine.unwrap_key(OAEP256, mine.wrap_key(OAEP256, b"m" * 32).encrypted_key).key == b"m" * 32
    with pytest.raises(HttpResponseError) as excinfo:
        theirs.unwrap_key(OAEP256, b"\0" * 256)
    assert excinfo.value.status_code == 403


def test_it_refuses_a_consented_principal_without_a_grant(
    vault: AzureKeyVaultEmulator, key_name: str
) -> None:
    stranger = vault.register_client(permissions=[])

    with pytest.raises(HttpResponseError) as excinfo:
        crypto_for(vault, stranger, key_name).unwrap_key(OAEP256, b"\0" * 256)

    assert excinfo.value.status_code == 403
    assert excinfo.value.error is not None and excinfo.value.error.code == "Forbidden"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other_directory", "AKV10032: Invalid issuer"),
        ("expired", "Token is expired"),
        ("other_audience", "AKV10022: Invalid audience"),
        ("forged", "AKV10046"),
    ],
)
def test_it_answers_401_to_a_token_it_must_not_accept(
    vault: AzureKeyVaultEmulator,
    entra: EntraEmulator,
    app: ClientSettings,
    key_name: str,
    case: str,
    message: str,
) -> None:
    if case == "other_directory":
        other = entra.add_directory()
        entra.add_service_principal(other, app.client_id)
        token = entra.issue_token(other, app.client_id)
    elif case == "expired":
        token = entra.issue_token(vault.directory_id, app.client_id, lifetime=-10)
    elif case == "other_audience":
        token = entra.issue_token(vault.directory_id, app.client_id, resource="https://management.azure.com")
    else:
        forger = EntraEmulator(entra.tls.ca.parent)  # same shape of token, another signing key
        token = forger.issue_token(vault.directory_id, app.client_id)
    client = crypto_for(vault, app, key_name, credential=StaticToken(token))

    with pytest.raises(ClientAuthenticationError) as excinfo:
        client.unwrap_key(OAEP256, b"\0" * 256)

    assert excinfo.value.status_code == 401
    assert message in excinfo.value.message
    assert vault.calls("unwrapKey", key=key_name)[-1].status == 401


def test_it_keeps_two_customer_directories_apart(
    entra: EntraEmulator, tmp_path: Path, app: ClientSettings
) -> None:
    # Kodori's one multi-tenant app, consented by two customers, each with a vault in its own directory.
    with (
        AzureKeyVaultEmulator(tmp_path / "a", entra=entra) as vault_a,
        AzureKeyVaultEmulator(tmp_path / "b", entra=entra) as vault_b,
    ):
        app_a = vault_a.register_client(app.client_id)
        app_b = vault_b.register_client(app.client_id)
        vault_a.create_key("kek")
        vault_b.create_key("kek")
        client_a = crypto_for(vault_a, app_a, "kek")
        client_b = crypto_for(vault_b, app_b, "kek")
        wrapped_a = client_a.wrap_key(OAEP256, b"a" * 32).encrypted_key

        assert client_a.unwrap_key(OAEP256, wrapped_a).key == b"a" * 32
        with pytest.raises(HttpResponseError):
            client_b.unwrap_key(OAEP256, wrapped_a)  # another customer's key cannot open it
        # A credential bound to directory A refuses directory B's challenge before it asks for any token.
        cross = CryptographyClient(vault_b.key_id("kek"), credential_for(app_a), **app_b.client_kwargs())
        with pytest.raises(ClientAuthenticationError):
            cross.unwrap_key(OAEP256, b"\0" * 256)
        assert {c.directory_id for c in vault_b.calls(status=200)} == {vault_b.directory_id}


# -- faults --------------------------------------------------------------------------------------------------

FAST_RETRIES = {"retry_total": 3, "retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}


def test_it_throttles_and_the_sdk_retry_policy_recovers(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name, **FAST_RETRIES)
    wrapped = client.wrap_key(OAEP256, b"q" * 32).encrypted_key
    vault.set_faults(throttle_next=2, retry_after=0.05)

    assert client.unwrap_key(OAEP256, wrapped).key == b"q" * 32
    assert [c.status for c in vault.calls("unwrapKey", key=key_name)] == [429, 429, 200]


def test_it_throttles_until_the_sdk_gives_up(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name, **FAST_RETRIES)
    client.wrap_key(OAEP256, b"q" * 32)  # fetch the key before the vault starts refusing
    vault.set_faults(throttle_ratio=1.0, retry_after=0.01)

    with pytest.raises(HttpResponseError) as excinfo:
        client.unwrap_key(OAEP256, b"\0" * 256)

    assert excinfo.value.status_code == 429
    response: Any = excinfo.value.response
    assert response.headers["Retry-After"] == "0.01"
    assert vault.call_count("unwrapKey", key=key_name, status=429) == 1 + FAST_RETRIES["retry_total"]


def test_it_fails_with_503_and_the_sdk_retries(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str
) -> None:
    client = crypto_for(vault, app, key_name, **FAST_RETRIES)
    wrapped = client.wrap_key(OAEP256, b"u" * 32).encrypted_key
    vault.set_faults(error_next=1)

    assert client.unwrap_key(OAEP256, wrapped).key == b"u" * 32
    assert [c.status for c in vault.calls("unwrapKey", key=key_name)] == [503, 200]


def test_it_adds_latency(vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = client.wrap_key(OAEP256, b"l" * 32).encrypted_key

    def timed_unwrap() -> float:
        started = time.perf_counter()
        client.unwrap_key(OAEP256, wrapped)
        return time.perf_counter() - started

    baseline = min(timed_unwrap() for _ in range(3))
    vault.set_faults(latency_ms=200)
    slowed = timed_unwrap()

    assert baseline < 0.1
    assert slowed >= 0.2
    assert slowed - baseline >= 0.15


# -- the challenge and the control API over HTTP -------------------------------------------------------------


def test_it_challenges_a_request_without_a_bearer_token(vault: AzureKeyVaultEmulator, key_name: str) -> None:
    response = requests.post(
        f"{vault.url}/keys/{key_name}//unwrapkey?api-version=7.6", verify=str(vault.ca_path), timeout=5
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{vault.authority}/{vault.directory_id}", resource="https://vault.azure.net"'
    )
    assert response.json()["error"]["code"] == "Unauthorized"


def test_it_is_controlled_over_http(vault: AzureKeyVaultEmulator) -> None:
    def admin(method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{vault.url}/_emulator{path}"
        return requests.request(method, url, verify=str(vault.ca_path), timeout=5, **kwargs)

    name = f"http-{uuid.uuid4().hex[:6]}"
    created = admin("POST", "/keys", json={"name": name})
    client = admin("POST", "/clients", json={"permissions": ["get", "unwrapKey"], "key": name})
    admin("POST", f"/keys/{name}/disable", json={}).raise_for_status()
    listed = admin("GET", "/keys").json()["keys"]
    faults = admin("POST", "/faults", json={"throttle_next": 1}).json()["faults"]
    admin("DELETE", "/faults").raise_for_status()
    unknown = admin("POST", f"/keys/{name}/explode", json={})

    assert created.status_code == 201 and created.json()["kid"].startswith(f"{vault.url}/keys/{name}/")
    assert client.status_code == 201 and client.json()["assertion"].count(".") == 2
    assert vault.store.grants()[name][client.json()["client_id"]] == ["get", "unwrapKey"]
    assert [v["enabled"] for k in listed if k["name"] == name for v in k["versions"]] == [False]
    assert faults["throttle_next"] == 1 and vault.faults.snapshot().throttle_next == 0
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NotFound"


def test_it_counts_calls_for_tests(vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str) -> None:
    client = crypto_for(vault, app, key_name)
    wrapped = client.wrap_key(OAEP256, b"c" * 32).encrypted_key
    for _ in range(3):
        client.unwrap_key(OAEP256, wrapped)

    response = requests.get(
        f"{vault.url}/_emulator/calls",
        params={"operation": "unwrapKey", "key": key_name, "status": "200"},
        verify=str(vault.ca_path),
        timeout=5,
    )

    assert (
        response.json()["count"] == 3 == vault.call_count("unwrapKey", key=key_name, principal=app.client_id)
    )
    assert {c["principal"] for c in response.json()["calls"]} == {app.client_id}


# -- validity dates (nbf / exp) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "starts_in", "inner"),
    [(-60, None, "KeyExpired"), (None, 3600, "KeyNotYetValid")],
    ids=["expired", "not-yet-valid"],
)
def test_it_refuses_wrap_outside_the_validity_dates_but_still_unwraps(
    vault: AzureKeyVaultEmulator, key_name: str, expires_in: int | None, starts_in: int | None, inner: str
) -> None:
    # Without "get" the SDK cannot fetch the public key, so it wraps at the vault: the server-side rule shows.
    remote = vault.register_client(permissions=["wrapKey", "unwrapKey"])
    client = crypto_for(vault, remote, key_name)
    wrapped = client.wrap_key(OAEP256, b"v" * 32).encrypted_key
    now = time.time()
    vault.set_key_validity(
        key_name,
        expires_on=None if expires_in is None else now + expires_in,
        not_before=None if starts_in is None else now + starts_in,
    )

    with pytest.raises(HttpResponseError) as excinfo:
        client.wrap_key(OAEP256, b"v" * 32)
    assert excinfo.value.status_code == 403
    assert vault.calls("wrapKey", key=key_name)[-1].error == inner
    # Data wrapped while the key was valid stays recoverable, as on the real service.
    assert client.unwrap_key(OAEP256, wrapped).key == b"v" * 32

    vault.set_key_validity(key_name)  # both dates cleared
    assert client.unwrap_key(OAEP256, client.wrap_key(OAEP256, b"w" * 32).encrypted_key).key == b"w" * 32


def test_it_serves_and_updates_the_validity_dates_through_the_key_client(
    vault: AzureKeyVaultEmulator, key_name: str
) -> None:
    admin = vault.register_client(permissions=["get", "update"])
    keys = KeyClient(vault.url, credential_for(admin), **admin.client_kwargs())
    assert keys.get_key(key_name).properties.expires_on is None

    expires = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    starts = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    keys.update_key_properties(key_name, expires_on=expires, not_before=starts)
    properties = keys.get_key(key_name).properties
    assert (properties.expires_on, properties.not_before) == (expires, starts)

    requests.post(
        f"{vault.url}/_emulator/keys/{key_name}/validity",
        json={"expires_on": 1_700_000_000},
        verify=str(vault.ca_path),
        timeout=5,
    ).raise_for_status()
    properties = keys.get_key(key_name).properties
    assert properties.expires_on == datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC)
    assert properties.not_before is None
