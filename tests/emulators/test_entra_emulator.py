"""The Entra ID emulator's federated credentials, and the Azure emulators' TLS, persistence and command line.

Driven by the real azure-identity credentials: a wrong assertion or a client secret must fail in the
credential, before any vault call. No test opens a connection beyond 127.0.0.1 (see ``loopback_only``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# The Azure SDKs are development dependencies; without them this module is skipped rather than broken.
pytest.importorskip("azure.keyvault.keys", reason="azure-keyvault-keys is not installed")
pytest.importorskip("azure.identity", reason="azure-identity is not installed")

import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, ClientSecretCredential, WorkloadIdentityCredential
from azure.keyvault.keys.crypto import CryptographyClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from emulators.azure_keyvault import AzureKeyVaultEmulator, ClientSettings
from emulators.entra import EntraEmulator
from emulators.tls import ensure_tls_material

from .support import azure as support
from .support.azure import OAEP256, VAULT_SCOPE, credential_for, crypto_for

# The shared fixtures, bound in this module so that pytest finds them without a conftest (the suite also runs
# with --noconftest) and so that module-scoped ones start one emulator per test module.
app, entra, key_name, vault = support.app, support.entra, support.key_name, support.vault
loopback_only, no_faults = support.loopback_only, support.no_faults

REPO = Path(__file__).resolve().parents[2]


# -- federated credentials -----------------------------------------------------------------------------------


def _assertion(entra: EntraEmulator, app: ClientSettings, case: str) -> str:
    if case == "wrong_subject":
        return entra.mint_assertion("system:serviceaccount:other:intruder")
    if case == "wrong_audience":
        return entra.mint_assertion(app.subject, audience="api://SomethingElse")
    if case == "expired":
        return entra.mint_assertion(app.subject, lifetime=-600)
    if case == "unknown_issuer":
        rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return entra.mint_assertion(app.subject, issuer="https://rogue.example", signing_key=rogue)
    if case == "trusted_issuer_not_on_app":
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        entra.register_issuer("https://other-issuer.example", other_key.public_key())
        return entra.mint_assertion(app.subject, issuer="https://other-issuer.example", signing_key=other_key)
    if case == "forged_signature":
        rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return entra.mint_assertion(app.subject, signing_key=rogue)
    if case == "unsigned":
        payload = entra.mint_assertion(app.subject).split(".")[1]
        return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + payload + "."  # {"alg":"none"}
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong_subject", "AADSTS700213"),
        ("wrong_audience", "AADSTS700212"),
        ("expired", "AADSTS700024"),
        ("unknown_issuer", "AADSTS700027"),
        ("trusted_issuer_not_on_app", "AADSTS700211"),
        ("forged_signature", "AADSTS700027"),
        ("unsigned", "AADSTS50027"),
    ],
)
def test_it_refuses_a_bad_federated_assertion(
    entra: EntraEmulator,
    vault: AzureKeyVaultEmulator,
    app: ClientSettings,
    key_name: str,
    case: str,
    code: str,
) -> None:
    credential = credential_for(app, assertion=_assertion(entra, app, case))

    with pytest.raises(ClientAuthenticationError) as excinfo:
        credential.get_token(VAULT_SCOPE)
    assert code in excinfo.value.message

    # Through the vault client the same failure surfaces as an authentication error, never as data.
    with pytest.raises(ClientAuthenticationError):
        crypto_for(vault, app, key_name, credential=credential).unwrap_key(OAEP256, b"\0" * 256)


def test_it_refuses_an_app_the_directory_never_consented(
    entra: EntraEmulator, vault: AzureKeyVaultEmulator
) -> None:
    client_id = entra.register_application()  # federated credential exists, but no service principal here
    credential = ClientAssertionCredential(
        vault.directory_id,
        client_id,
        entra.mint_assertion,
        authority=entra.url,
        connection_verify=str(entra.ca_path),
    )

    with pytest.raises(ClientAuthenticationError) as excinfo:
        credential.get_token(VAULT_SCOPE)
    assert "AADSTS700016" in excinfo.value.message


def test_it_refuses_client_secrets(
    entra: EntraEmulator, vault: AzureKeyVaultEmulator, app: ClientSettings
) -> None:
    credential = ClientSecretCredential(
        vault.directory_id,
        app.client_id,
        "a-client-secret",
        authority=entra.url,
        disable_instance_discovery=True,  # or MSAL asks login.microsoftonline.com about the authority
        connection_verify=app.ca_path,
    )
    with pytest.raises(ClientAuthenticationError) as excinfo:
        credential.get_token(VAULT_SCOPE)
    assert "client secrets are not accepted" in str(excinfo.value).lower()

    response = requests.post(
        f"{entra.url}/{vault.directory_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": "x",
            "scope": VAULT_SCOPE,
        },
        verify=app.ca_path,
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_codes"] == [7000215]


def test_it_keeps_a_kept_alive_connection_usable_after_a_refusal(
    entra: EntraEmulator, app: ClientSettings
) -> None:
    session = requests.Session()
    refused = session.post(f"{entra.url}/nowhere", data={"x": "y" * 1000}, verify=app.ca_path, timeout=5)
    minted = session.post(f"{entra.url}/_emulator/assertion", json={}, verify=app.ca_path, timeout=5)

    assert refused.status_code == 404
    assert minted.status_code == 200 and minted.json()["assertion"].count(".") == 2


def test_it_accepts_a_workload_identity_token_file(
    entra: EntraEmulator, vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str, tmp_path: Path
) -> None:
    token_file = entra.write_assertion_file(tmp_path / "federated-token", app.subject)
    credential = WorkloadIdentityCredential(
        tenant_id=app.directory_id,
        client_id=app.client_id,
        token_file_path=str(token_file),
        authority=app.authority,
        connection_verify=app.ca_path,
    )
    client = crypto_for(vault, app, key_name, credential=credential)

    assert client.unwrap_key(OAEP256, client.wrap_key(OAEP256, b"w" * 32).encrypted_key).key == b"w" * 32


# -- state, TLS and the command line -------------------------------------------------------------------------


def test_it_keeps_persisted_keys_across_restarts(tmp_path: Path) -> None:
    with AzureKeyVaultEmulator(tmp_path, persist=True) as first:
        app = first.register_client()
        kid = first.create_key("durable")
        client = CryptographyClient(kid, credential_for(app), **app.client_kwargs())
        wrapped = client.wrap_key(OAEP256, b"p" * 32).encrypted_key
        directory_id = first.directory_id

    with AzureKeyVaultEmulator(tmp_path, persist=True) as second:
        app = second.register_client()
        version = kid.rsplit("/", 1)[1]
        client = CryptographyClient(
            second.key_id("durable", version), credential_for(app), **app.client_kwargs()
        )

        assert second.directory_id == directory_id
        assert client.unwrap_key(OAEP256, wrapped).key == b"p" * 32


def test_it_issues_a_server_certificate_for_loopback_and_reuses_it(tmp_path: Path) -> None:
    first = ensure_tls_material(tmp_path)
    second = ensure_tls_material(tmp_path)
    cert = x509.load_pem_x509_certificates(first.cert.read_bytes())[0]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert first.ca.read_bytes() == second.ca.read_bytes()
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert oct(first.key.stat().st_mode & 0o777) == "0o600"


def test_it_runs_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "emulators.azure_keyvault", "--state-dir", str(tmp_path)]
    help_text = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "--vault-port" in help_text

    process = subprocess.Popen(
        [*command, "--vault-port", "0", "--entra-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(10)]
        settings_file = tmp_path / "settings.json"
        assert settings_file.exists(), "".join(lines)
        settings = json.loads(settings_file.read_text())
        response = requests.get(f"{settings['control_api']}/keys", verify=settings["ca_path"], timeout=5)
        assert [k["name"] for k in response.json()["keys"]] == ["kodori-demo"]
        assert any(settings["key_id"] in line for line in lines)
        assert Path(settings["federated_token_file"]).read_text().count(".") == 2
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_it_cannot_reach_beyond_loopback() -> None:
    # The safety net itself: a credential that fell back to the public cloud would fail here, not call out.
    with pytest.raises(OSError, match="only loopback"):
        socket.getaddrinfo("login.microsoftonline.com", 443)
    assert socket.getaddrinfo("127.0.0.1", 443)
