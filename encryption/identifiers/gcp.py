"""GCP Cloud KMS CryptoKey (and CryptoKeyVersion) resource names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .common import _check_text, _refuse

# --- GCP ----------------------------------------------------------------------------------------------------

_PROJECT_ID = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_DOMAIN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
_PROJECT = re.compile(rf"(?:{_DOMAIN}:)?{_PROJECT_ID}")
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,62}")
_KMS_ID = re.compile(r"[A-Za-z0-9_-]{1,63}")
_VERSION_ID = re.compile(r"[1-9][0-9]{0,17}")
GCP_HOST = "cloudkms.googleapis.com"

GCP_KEY_ACCEPTED = (
    "Kodori accepts a CryptoKey resource name, projects/<project>/locations/<location>/keyRings/<ring>/"
    "cryptoKeys/<key>, optionally followed by /cryptoKeyVersions/<n> (e.g. projects/my-project/locations/"
    "europe-west1/keyRings/kodori/cryptoKeys/tenant-kek). The project is its ID (6-30 lowercase letters, "
    "digits, hyphens, or example.com:my-project); ring and key ids are 1-63 letters, digits, '_' or '-'"
)


@dataclass(frozen=True)
class GcpCryptoKey:
    """A Cloud KMS CryptoKey, or one of its versions when ``version`` is set; ``name`` is the full name."""

    project: str
    location: str
    key_ring: str
    crypto_key: str
    version: int | None
    name: str


def parse_gcp_crypto_key(value: object) -> GcpCryptoKey:
    """Parse ``projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>[/cryptoKeyVersions/<n>]``."""
    ok = GCP_KEY_ACCEPTED
    text = _check_text(value, "The CryptoKey name", ok)
    if "://" in text or text.startswith("//"):
        raise _refuse("Give the resource name, not a URL", ok)
    if ".." in text or "?" in text or "#" in text:
        raise _refuse("The CryptoKey name contains '..', '?' or '#'", ok)
    parts = text.split("/")
    if len(parts) not in (8, 10):
        raise _refuse("The CryptoKey name has the wrong number of '/'-separated parts", ok)
    collections = parts[0::2]
    expected = ["projects", "locations", "keyRings", "cryptoKeys", "cryptoKeyVersions"][: len(collections)]
    if collections != expected:
        raise _refuse(f"The CryptoKey name must read {'/<...>/'.join(expected)}/<...> (case matters)", ok)
    project, location, ring, key = parts[1], parts[3], parts[5], parts[7]
    if project.isdigit():
        raise _refuse("Give the project ID, not the project number", ok)
    if not _PROJECT.fullmatch(project) or project.endswith("-"):
        raise _refuse("The project ID is not valid", ok)
    if not _LOCATION.fullmatch(location):
        raise _refuse(
            "The location must be lowercase letters, digits and hyphens (e.g. global, us-east1)", ok
        )
    if not _KMS_ID.fullmatch(ring) or not _KMS_ID.fullmatch(key):
        raise _refuse("Key ring and key ids must be 1-63 letters, digits, '_' or '-'", ok)
    version = None
    if len(parts) == 10:
        if not _VERSION_ID.fullmatch(parts[9]):
            raise _refuse("The key version must be a positive whole number without leading zeros", ok)
        version = int(parts[9])
    return GcpCryptoKey(project, location, ring, key, version, text)
