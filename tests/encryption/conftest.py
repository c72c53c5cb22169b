"""Fixtures for encryption tests: the Azure Key Vault emulator with Kodori's settings pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import override_settings

from emulators.azure_keyvault import AzureKeyVaultEmulator
from emulators.entra import EntraEmulator
from encryption.providers import azure as azure_provider


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureKeyVaultEmulator]:
    state = tmp_path_factory.mktemp("azure")
    entra = EntraEmulator(state).start()
    emulator = AzureKeyVaultEmulator(state, entra=entra).start()
    yield emulator
    emulator.stop()
    entra.stop()


@pytest.fixture
def kodori_app(vault: AzureKeyVaultEmulator, tmp_path: Path) -> Iterator[Any]:
    """Kodori's application, consented in the customer's directory, with a federated token on disk."""
    vault.reset()
    client = vault.register_client()
    token_file = vault.entra.write_assertion_file(tmp_path / "federated-token", client.subject, 3600)
    with override_settings(
        KODORI_AZURE_CLIENT_ID=client.client_id,
        KODORI_AZURE_FEDERATED_TOKEN_FILE=str(token_file),
        KODORI_AZURE_VAULT_ENDPOINT=vault.url,
        KODORI_AZURE_AUTHORITY_HOST=vault.authority,
        KODORI_AZURE_CA_BUNDLE=str(vault.ca_path),
        KODORI_KMS_BACKOFF_BASE=0.01,
        KODORI_KMS_BACKOFF_MAX=0.05,
    ):
        azure_provider.reset_clients()
        yield client
    azure_provider.reset_clients()


def customer_key_url(vault: AzureKeyVaultEmulator, name: str) -> str:
    """What the tenant registers: a real vault host; the emulator endpoint comes from deployment settings."""
    return "https://contoso-keys.vault.azure.net" + urlsplit(vault.create_key(name)).path
