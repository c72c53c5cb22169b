"""The GCP probe refuses a key whose primary version is not ENABLED, through the real google-cloud-kms client.

Decrypt picks the version a ciphertext names, so an older ENABLED version keeps unwrapping existing tenant key
versions while the primary is disabled or scheduled for destruction. The probe reads the key (GetCryptoKey,
with ``roles/cloudkms.viewer``) and refuses it; without the viewer role, the probe's Encrypt, which Cloud KMS
(and the emulator) answers FAILED_PRECONDITION for such a primary, refuses it with the same message.

The emulator and the settings come from ``test_gcp.py``'s fixtures.
"""

from __future__ import annotations

import os

import pytest

from emulators.gcp_kms import GcpKmsEmulator
from encryption.providers import FailureKind, KeyContext, provider_for
from encryption.providers.gcp import GcpKeyProvider
from tests.encryption.providers import test_gcp as base
from tests.encryption.providers.test_gcp import customer_key, outcomes, refused

# The emulator fixtures of test_gcp.py, bound here so pytest finds them (one emulator per module).
gcp, kodori = base.gcp, base.kodori

TENANT = base.TENANT
CTX = KeyContext(tenant_id=TENANT, key_version=1)
FIX = "Enable the primary version, or make an enabled version primary, in Cloud KMS."
VIEWER = "roles/cloudkms.viewer"


def rotated_key(gcp: GcpKmsEmulator, state: str, *, viewer: bool) -> tuple[GcpKeyProvider, bytes]:
    """A key with data wrapped under version 1, then a new primary version 2 put in ``state``."""
    row = customer_key(gcp)
    if viewer:
        gcp.grant(row.key_id, role=VIEWER)
    provider = provider_for(row)
    assert isinstance(provider, GcpKeyProvider)
    wrapped = provider.wrap(os.urandom(32), CTX)
    gcp.create_version(row.key_id, make_primary=True)
    gcp.set_version_state(row.key_id + "/cryptoKeyVersions/2", state)
    return provider, wrapped


@pytest.mark.parametrize("state", ["DISABLED", "DESTROY_SCHEDULED", "DESTROYED"])
@pytest.mark.parametrize("viewer", [True, False], ids=["viewer", "encrypter-decrypter-only"])
def test_the_probe_refuses_an_unusable_primary_even_though_an_older_version_decrypts(
    gcp: GcpKmsEmulator, state: str, viewer: bool
) -> None:
    provider, wrapped = rotated_key(gcp, state, viewer=viewer)
    assert len(provider.unwrap(wrapped, CTX)) == 32  # version 1 still decrypts: this alone proves nothing
    error = refused(provider.probe, TENANT)
    assert error.kind == FailureKind.DISABLED and error.seals
    assert "primary version 2 " in str(error) and f"(state {state})" in str(error) and FIX in str(error)
    assert "…" + provider.key_name[-12:] in str(error)
    if viewer:
        assert outcomes(gcp, "GetCryptoKey", "ok") == 1
        assert outcomes(gcp, "Encrypt", "FAILED_PRECONDITION") == 0  # refused before any Encrypt
    else:
        assert outcomes(gcp, "GetCryptoKey", "PERMISSION_DENIED") == 1  # not a refusal by itself
        assert outcomes(gcp, "Encrypt", "FAILED_PRECONDITION") == 1  # Cloud KMS refuses the primary


def test_a_scheduled_destruction_says_to_restore_it(gcp: GcpKmsEmulator) -> None:
    provider, _ = rotated_key(gcp, "DESTROY_SCHEDULED", viewer=True)
    assert "Restore it before it is destroyed" in str(refused(provider.probe, TENANT))


@pytest.mark.parametrize("viewer", [True, False], ids=["viewer", "encrypter-decrypter-only"])
def test_the_probe_refuses_a_key_without_a_primary(gcp: GcpKmsEmulator, viewer: bool) -> None:
    ring = gcp.create_key_ring("bare")
    name = gcp.create_crypto_key(ring, "kek", with_version=False)
    gcp.grant(name)
    if viewer:
        gcp.grant(name, role=VIEWER)
    error = refused(GcpKeyProvider(name, tenant_id=TENANT).probe, TENANT)
    assert error.kind == FailureKind.DISABLED and "has no primary version" in str(error) and FIX in str(error)


@pytest.mark.parametrize("viewer", [True, False], ids=["viewer", "encrypter-decrypter-only"])
def test_a_healthy_key_passes_with_or_without_the_viewer_role(gcp: GcpKmsEmulator, viewer: bool) -> None:
    row = customer_key(gcp)
    if viewer:
        gcp.grant(row.key_id, role=VIEWER)
    provider_for(row).probe(TENANT)
    assert outcomes(gcp, "GetCryptoKey", "ok" if viewer else "PERMISSION_DENIED") == 1
    assert outcomes(gcp, "Encrypt", "ok") == 1 and outcomes(gcp, "Decrypt", "ok") == 1


def test_a_revoked_key_is_still_denied_when_get_crypto_key_is_not_allowed(gcp: GcpKmsEmulator) -> None:
    row = customer_key(gcp)
    gcp.revoke(row.key_id)
    error = refused(provider_for(row).probe, TENANT)
    assert error.kind == FailureKind.DENIED and "roles/cloudkms.cryptoKeyEncrypterDecrypter" in str(error)


def test_re_enabling_the_primary_makes_the_probe_pass_again(gcp: GcpKmsEmulator) -> None:
    provider, _ = rotated_key(gcp, "DISABLED", viewer=True)
    refused(provider.probe, TENANT)
    gcp.set_version_state(provider.key_name + "/cryptoKeyVersions/2", "ENABLED")
    provider.probe(TENANT)


def test_a_pinned_version_is_what_the_probe_checks(gcp: GcpKmsEmulator) -> None:
    row = customer_key(gcp)
    gcp.grant(row.key_id, role=VIEWER)
    gcp.create_version(row.key_id, make_primary=True)
    gcp.set_version_state(row.key_id + "/cryptoKeyVersions/2", "DISABLED")
    pinned = GcpKeyProvider(row.key_id + "/cryptoKeyVersions/1", tenant_id=TENANT)
    pinned.probe(TENANT)  # Kodori encrypts with version 1 only: the disabled primary does not matter
    gcp.set_version_state(row.key_id + "/cryptoKeyVersions/1", "DISABLED")
    error = refused(pinned.probe, TENANT)
    assert error.kind == FailureKind.DISABLED and "version 1, which Kodori's key id names" in str(error)
    assert outcomes(gcp, "GetCryptoKeyVersion", "ok") == 2 and outcomes(gcp, "Encrypt", "ok") == 1


def test_a_busy_get_crypto_key_is_retried(gcp: GcpKmsEmulator) -> None:
    row = customer_key(gcp)
    gcp.grant(row.key_id, role=VIEWER)
    gcp.throttle(count=2, operations=["GetCryptoKey"])
    provider_for(row).probe(TENANT)
    assert (
        outcomes(gcp, "GetCryptoKey", "RESOURCE_EXHAUSTED") == 2 and outcomes(gcp, "GetCryptoKey", "ok") == 1
    )


def test_a_disabled_old_version_names_itself_on_unwrap(gcp: GcpKmsEmulator) -> None:
    provider, wrapped = rotated_key(gcp, "ENABLED", viewer=False)
    gcp.set_version_state(provider.key_name + "/cryptoKeyVersions/1", "DISABLED")
    error = refused(provider.unwrap, wrapped, CTX)
    assert error.kind == FailureKind.DISABLED
    assert "version 1, which wrapped this key, is disabled (state DISABLED)" in str(error)
    provider.probe(TENANT)  # the primary (version 2) is fine: new keys can still be wrapped
