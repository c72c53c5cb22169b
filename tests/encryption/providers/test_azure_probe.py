"""The Azure probe reads the key's attributes, through the real azure-keyvault-keys SDK against the emulator.

``CryptographyClient.wrap_key`` with an RSA key runs locally with the public key the SDK fetched once, and for
a key given by URL the SDK checks no dates, so wrap alone succeeds for a disabled, expired or not yet valid
key; unwrap of existing data even keeps working for an expired one (Key Vault allows it, so that data stays
recoverable). The probe therefore GETs the key and checks ``enabled``, ``exp`` and ``nbf`` before it wraps and
unwraps. Fixtures (``vault``, ``kodori_app``) come from ``tests/encryption/conftest.py``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption.providers import FailureKind, KeyContext, ProviderError
from encryption.providers.azure import AzureKeyProvider
from tests.encryption.conftest import customer_key_url

TENANT = 7
CTX = KeyContext(tenant_id=TENANT, key_version=1)


def provider(vault: AzureKeyVaultEmulator, name: str) -> AzureKeyProvider:
    return AzureKeyProvider(customer_key_url(vault, name), vault.directory_id)


def refused(call: Any, *args: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(*args)
    return caught.value


def test_a_disabled_key_is_refused_from_its_attributes(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "disabled")
    p.wrap(os.urandom(32), CTX)  # the SDK now holds the public key
    vault.disable_key("disabled")
    p.wrap(os.urandom(32), CTX)  # and keeps wrapping locally: wrap proves nothing
    vault.clear_calls()
    error = refused(p.probe, TENANT)
    assert error.kind == FailureKind.DISABLED and error.seals
    assert "enabled attribute is false" in str(error) and "Enable the key in your vault" in str(error)
    assert "…" + p.key_url[-12:] in str(error)
    assert vault.call_count("getKey", status=200) == 1 and vault.call_count("unwrapKey") == 0


def test_an_expired_key_is_refused_although_unwrap_still_works(
    vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    p = provider(vault, "expired")
    wrapped = p.wrap(os.urandom(32), CTX)
    vault.set_key_validity("expired", expires_on=time.time() - 60)
    assert len(p.unwrap(wrapped, CTX)) == 32  # Key Vault still unwraps with an expired key
    p.wrap(os.urandom(32), CTX)  # the SDK still wraps locally
    error = refused(p.probe, TENANT)
    assert error.kind == FailureKind.DISABLED and error.seals
    assert "expired on" in str(error) and "attribute exp" in str(error)
    assert "Set a later expiration date, or remove it, in your vault" in str(error)


def test_a_key_not_yet_valid_is_refused(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "later")
    vault.set_key_validity("later", not_before=time.time() + 3600)
    error = refused(p.probe, TENANT)
    assert error.kind == FailureKind.DISABLED and error.seals
    assert "is not valid until" in str(error) and "attribute nbf" in str(error)
    assert "Remove the activation date, or set it in the past" in str(error)


def test_a_key_inside_its_validity_window_passes_and_is_unwrapped(
    vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    p = provider(vault, "window")
    now = time.time()
    vault.set_key_validity("window", expires_on=now + 3600, not_before=now - 3600)
    p.probe(TENANT)
    assert vault.call_count("getKey", status=200) >= 1
    assert vault.call_count("unwrapKey", status=200) == 1  # unwrap is still what proves access


def test_re_enabling_the_key_makes_the_probe_pass_again(
    vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    p = provider(vault, "toggle")
    vault.disable_key("toggle")
    refused(p.probe, TENANT)
    vault.enable_key("toggle")
    p.probe(TENANT)


def test_without_the_get_permission_the_probe_is_denied_naming_it(
    vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    p = provider(vault, "no-get")
    vault.revoke(kodori_app.client_id, ["get"])
    error = refused(p.probe, TENANT)
    assert error.kind == FailureKind.DENIED and "denied get to Kodori's application" in str(error)


def test_a_busy_vault_while_reading_the_key_is_retried(vault: AzureKeyVaultEmulator, kodori_app: Any) -> None:
    p = provider(vault, "busy-get")
    vault.set_faults(throttle_next=2, retry_after=0.01)
    p.probe(TENANT)
    assert vault.call_count("getKey", status=429) == 2


def test_a_wrap_the_vault_refuses_outside_the_validity_window_seals(
    vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    # Without "get" the SDK wraps at the vault, which refuses an expired key (403 with an inner code).
    p = provider(vault, "remote-wrap")
    vault.revoke(kodori_app.client_id, ["get"])
    vault.set_key_validity("remote-wrap", expires_on=time.time() - 60)
    error = refused(p.wrap, os.urandom(32), CTX)
    assert error.kind == FailureKind.DISABLED and "outside its validity period" in str(error)
