"""Fixtures and helpers shared by the Azure emulator test modules (imported by them, not a conftest).

The tests run with ``--noconftest`` too, so everything they need comes from this module: a module-scoped Entra
and vault emulator per test module, a fresh consented app and key per test, and ``loopback_only``, which
refuses to resolve any host but loopback so that no test can reach the internet.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.identity import ClientAssertionCredential
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from emulators.azure_keyvault import AzureKeyVaultEmulator, ClientSettings
from emulators.entra import EntraEmulator

OAEP256 = KeyWrapAlgorithm.rsa_oaep_256
VAULT_SCOPE = "https://vault.azure.net/.default"
_LOOPBACK_NAMES = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to resolve (and so to reach) a host other than loopback, and ignore ambient config."""
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK_NAMES:
            try:
                if not ipaddress.ip_address(name).is_loopback:
                    raise OSError(f"test tried to reach {name}; only loopback is allowed")
            except ValueError:
                raise OSError(f"test tried to resolve {name}; only loopback is allowed") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    # Trust in the emulator's CA must come from connection_verify/verify alone, never from the environment.
    ambient = {"https_proxy", "http_proxy", "all_proxy", "requests_ca_bundle", "curl_ca_bundle"}
    ambient.add("ssl_cert_file")
    for name in list(os.environ):
        if name.startswith("AZURE_") or name.lower() in ambient:
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EntraEmulator]:
    with EntraEmulator(tmp_path_factory.mktemp("entra")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def vault(entra: EntraEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureKeyVaultEmulator]:
    with AzureKeyVaultEmulator(tmp_path_factory.mktemp("vault"), entra=entra) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "vault" in request.fixturenames:
        request.getfixturevalue("vault").clear_faults()


@pytest.fixture
def app(vault: AzureKeyVaultEmulator) -> ClientSettings:
    """A fresh Kodori app, consented in the vault's directory, granted get/wrapKey/unwrapKey vault-wide."""
    return vault.register_client()


@pytest.fixture
def key_name(vault: AzureKeyVaultEmulator) -> str:
    name = f"k-{uuid.uuid4().hex[:8]}"
    vault.create_key(name)
    return name


def credential_for(app: ClientSettings, assertion: str | None = None) -> ClientAssertionCredential:
    return ClientAssertionCredential(
        func=(lambda: assertion) if assertion is not None else app.mint_assertion, **app.credential_kwargs()
    )


def crypto_for(
    vault: AzureKeyVaultEmulator, app: ClientSettings, key_name: str, credential: Any = None, **kwargs: Any
) -> CryptographyClient:
    return CryptographyClient(
        vault.key_id(key_name), credential or credential_for(app), **app.client_kwargs(), **kwargs
    )


class StaticToken:
    """A credential that presents a fixed token whatever the challenge asks for (to probe the server side)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)
