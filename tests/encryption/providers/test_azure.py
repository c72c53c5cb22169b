"""Kodori's Azure provider through the real azure-keyvault-keys / azure-identity SDKs against the emulator."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.test import override_settings

from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption.providers import FailureKind, KeyContext, ProviderError
from encryption.providers import azure as azure_provider
from encryption.providers.azure import AzureKeyProvider
from tests.encryption.conftest import customer_key_url

CTX = KeyContext(tenant_id=7, key_version=1)


def provider(vault: AzureKeyVaultEmulator, name: str = "tenant-key") -> AzureKeyProvider:
    return AzureKeyProvider(customer_key_url(vault, name), vault.directory_id)


def test_it_round_trips_through_the_vault(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault)
    secret = os.urandom(32)
    wrapped = p.wrap(secret, CTX)
    assert secret not in wrapped and len(wrapped) == 256
    assert p.unwrap(wrapped, CTX) == secret
    assert vault.call_count(operation="unwrapKey", status=200) == 1


def test_the_probe_unwraps_at_the_vault(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    provider(vault).probe(CTX.tenant_id)
    assert vault.call_count(operation="unwrapKey", status=200) == 1


@pytest.mark.parametrize(
    "other",
    [KeyContext(tenant_id=8, key_version=1), KeyContext(tenant_id=7, key_version=2)],
    ids=["tenant", "version"],
)
def test_a_wrapped_key_moved_to_another_context_fails(
    vault: AzureKeyVaultEmulator, kodori_app: Any, other: KeyContext
) -> None:
    p = provider(vault)
    wrapped = p.wrap(os.urandom(32), CTX)
    with pytest.raises(ProviderError) as caught:
        p.unwrap(wrapped, other)
    assert caught.value.kind == FailureKind.INTEGRITY


def test_a_disabled_key_seals(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "to-disable")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.disable_key("to-disable")
    with pytest.raises(ProviderError) as caught:
        p.unwrap(wrapped, CTX)
    assert caught.value.kind == FailureKind.DISABLED and caught.value.seals
    assert "…" + p.key_url[-12:] in str(caught.value) and "disabled" in str(caught.value)
    with pytest.raises(ProviderError):
        p.probe(CTX.tenant_id)


def test_revoking_kodoris_access_seals_without_retry_loops(
    vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    p = provider(vault, "to-revoke")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.revoke(kodori_app.client_id)
    vault.clear_calls()
    with pytest.raises(ProviderError) as caught:
        p.unwrap(wrapped, CTX)
    assert caught.value.kind == FailureKind.DENIED and caught.value.seals
    assert "Crypto Service Encryption User" in str(caught.value)
    assert vault.call_count(operation="unwrapKey") == 1  # denied once, not retried


def test_removed_consent_seals(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "consent")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.entra.remove_service_principal(vault.directory_id, kodori_app.client_id)
    azure_provider.reset_clients()  # a fresh process has no token cached
    with pytest.raises(ProviderError) as caught:
        p.unwrap(wrapped, CTX)
    assert caught.value.kind == FailureKind.DENIED


def test_a_missing_key_is_not_found(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "to-delete")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.delete_key("to-delete", purge=True)
    with pytest.raises(ProviderError) as caught:
        p.unwrap(wrapped, CTX)
    assert caught.value.kind == FailureKind.NOT_FOUND


def test_throttling_recovers_within_the_deadline(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "busy")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.set_faults(throttle_next=2, retry_after=0.01)
    assert len(p.unwrap(wrapped, CTX)) == 32
    assert vault.call_count(operation="unwrapKey", status=429) == 2


def test_persistent_throttling_fails_as_transient(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "overloaded")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.set_faults(throttle_ratio=1.0, retry_after=0.01)
    with override_settings(KODORI_KMS_MAX_ATTEMPTS=3), pytest.raises(ProviderError) as caught:
        p.unwrap(wrapped, CTX)
    assert caught.value.kind == FailureKind.TRANSIENT and not caught.value.seals
    assert vault.call_count(operation="unwrapKey", status=429) == 3


def test_a_tampered_wrapped_value_is_refused(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "tamper")
    wrapped = bytearray(p.wrap(os.urandom(32), CTX))
    wrapped[10] ^= 1
    with pytest.raises(ProviderError) as caught:
        p.unwrap(bytes(wrapped), CTX)
    assert caught.value.kind == FailureKind.INTEGRITY


@pytest.mark.parametrize(
    ("host", "login"),
    [
        ("contoso.vault.azure.net", "https://login.microsoftonline.com"),
        ("contoso.vault.azure.cn", "https://login.chinacloudapi.cn"),
        ("contoso.vault.usgovcloudapi.net", "https://login.microsoftonline.us"),
    ],
)
def test_kodori_signs_in_to_the_keys_own_cloud(host: str, login: str) -> None:
    url = f"https://{host}/keys/k/0123456789abcdef0123456789abcdef"
    with override_settings(KODORI_AZURE_AUTHORITY_HOST=""):
        assert azure_provider._authority(url) == login
