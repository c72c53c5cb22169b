"""In-memory state of the GCP Cloud KMS emulator: key rings, keys, versions, IAM bindings, identities, tokens.

Everything the gRPC service (``gcp_kms_service``) and the STS/IAM HTTP server (``gcp_sts``) share lives here
behind one lock, so both servers and the admin API see one consistent world.

Ciphertext layout (the real service's is opaque; ours only has to name the key version and bind the AAD)::

    b"KE" | format 0x01 | key uid (8 bytes) | version number (uint32 BE) | nonce (12) | AES-256-GCM ct || tag
    (16)

The AES-GCM associated data is the 15-byte header followed by the caller's additional authenticated data, so a
changed header, a changed AAD or a ciphertext of another key all fail authentication. The key uid is random
per CryptoKey (like the real service's internal id), which is how Decrypt tells "wrong key" from "wrong AAD".

IAM is modelled as bindings ``(resource, role, member)``: a binding on a project, key ring or key path covers
everything under it, as IAM inheritance does. Roles expand to the permissions the real predefined roles carry;
notably ``roles/cloudkms.cryptoKeyEncrypterDecrypter`` does NOT include ``cloudkms.cryptoKeys.get``, so
GetCryptoKey needs ``roles/cloudkms.viewer`` as on GCP.
"""

from __future__ import annotations

import importlib
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _fast_crc32c() -> Callable[[bytes], int] | None:
    # google-crc32c (C, the library Google's samples use) when installed; the table below keeps us free of it.
    try:
        module = importlib.import_module("google_crc32c")
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return module.value


_FAST_CRC32C = _fast_crc32c()


def _make_crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), the checksum Cloud KMS uses for its integrity fields."""
    if _FAST_CRC32C is not None:
        return int(_FAST_CRC32C(data))
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


class VersionState(StrEnum):
    """The CryptoKeyVersion states Kodori can meet (names match the proto enum)."""

    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    DESTROY_SCHEDULED = "DESTROY_SCHEDULED"
    DESTROYED = "DESTROYED"


ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/cloudkms.cryptoKeyEncrypterDecrypter": frozenset(
        {"cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt"}
    ),
    "roles/cloudkms.cryptoKeyEncrypter": frozenset({"cloudkms.cryptoKeyVersions.useToEncrypt"}),
    "roles/cloudkms.cryptoKeyDecrypter": frozenset({"cloudkms.cryptoKeyVersions.useToDecrypt"}),
    "roles/cloudkms.viewer": frozenset(
        {"cloudkms.cryptoKeys.get", "cloudkms.cryptoKeyVersions.get", "cloudkms.keyRings.get"}
    ),
    "roles/cloudkms.admin": frozenset(
        {
            "cloudkms.cryptoKeys.get",
            "cloudkms.cryptoKeyVersions.get",
            "cloudkms.keyRings.get",
            "cloudkms.keyRings.create",
            "cloudkms.cryptoKeys.create",
        }
    ),
    # Service account impersonation (generateAccessToken) from a workload identity pool principal.
    "roles/iam.workloadIdentityUser": frozenset({"iam.serviceAccounts.getAccessToken"}),
    "roles/iam.serviceAccountTokenCreator": frozenset({"iam.serviceAccounts.getAccessToken"}),
}

HEADER_MAGIC = b"KE\x01"
HEADER_LEN = len(HEADER_MAGIC) + 8 + 4
NONCE_LEN = 12
MAX_PAYLOAD = 64 * 1024  # Cloud KMS caps plaintext and AAD at 64 KiB.


class KmsError(Exception):
    """A refusal with the gRPC status name the real service would use."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class KeyVersion:
    number: int
    material: bytes
    state: VersionState = VersionState.ENABLED
    create_time: float = field(default_factory=time.time)
    destroy_time: float | None = None


@dataclass
class CryptoKey:
    name: str
    uid: bytes
    versions: dict[int, KeyVersion] = field(default_factory=dict)
    primary: int | None = None
    create_time: float = field(default_factory=time.time)

    def version_name(self, number: int) -> str:
        return f"{self.name}/cryptoKeyVersions/{number}"


@dataclass
class TokenGrant:
    """An access token the emulator issued: who it stands for and until when."""

    principal: str
    expires_at: float
    scopes: tuple[str, ...] = ()


def split_version_name(name: str) -> tuple[str, int | None]:
    """``…/cryptoKeys/k/cryptoKeyVersions/3`` → (key name, 3); a key name → (key name, None)."""
    marker = "/cryptoKeyVersions/"
    if marker in name:
        key_name, _, number = name.partition(marker)
        if not number.isdigit():
            raise KmsError("INVALID_ARGUMENT", f"Invalid CryptoKeyVersion name: {name}")
        return key_name, int(number)
    return name, None


def _check_key_name(name: str) -> None:
    parts = name.split("/")
    if len(parts) != 8 or parts[0::2] != ["projects", "locations", "keyRings", "cryptoKeys"] or "" in parts:
        raise KmsError("INVALID_ARGUMENT", f"Resource name [{name}] does not match any known type.")


class KmsStore:
    """All emulator state. Public methods take the lock; names are full resource paths as in the API."""

    def __init__(self, token_lifetime: int = 3600) -> None:
        self.lock = threading.RLock()
        self.key_rings: dict[str, float] = {}
        self.keys: dict[str, CryptoKey] = {}
        self.bindings: set[tuple[str, str, str]] = set()
        self.tokens: dict[str, TokenGrant] = {}
        self.token_lifetime = token_lifetime
        # Called after every change to keys or bindings, so a state file can follow (see gcp_persist).
        self.on_change: Callable[[], None] | None = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def reset(self) -> None:
        with self.lock:
            self.key_rings.clear()
            self.keys.clear()
            self.bindings.clear()
            self.tokens.clear()
        self.changed()

    # -- resources -------------------------------------------------------------------------------------------

    def create_key_ring(self, project: str, location: str, key_ring_id: str) -> str:
        name = f"projects/{project}/locations/{location}/keyRings/{key_ring_id}"
        with self.lock:
            if name in self.key_rings:
                raise KmsError("ALREADY_EXISTS", f"KeyRing {name} already exists.")
            self.key_rings[name] = time.time()
        self.changed()
        return name

    def create_crypto_key(self, key_ring: str, crypto_key_id: str, with_version: bool = True) -> str:
        name = f"{key_ring}/cryptoKeys/{crypto_key_id}"
        _check_key_name(name)
        with self.lock:
            if key_ring not in self.key_rings:
                raise KmsError("NOT_FOUND", f"KeyRing {key_ring} not found.")
            if name in self.keys:
                raise KmsError("ALREADY_EXISTS", f"CryptoKey {name} already exists.")
            self.keys[name] = CryptoKey(name=name, uid=secrets.token_bytes(8))
            if with_version:
                self.create_version(name, make_primary=True)
        self.changed()
        return name

    def create_version(self, key_name: str, make_primary: bool = False) -> str:
        with self.lock:
            key = self.get_key(key_name)
            number = max(key.versions, default=0) + 1
            key.versions[number] = KeyVersion(number=number, material=os.urandom(32))
            if make_primary or key.primary is None:
                key.primary = number
        self.changed()
        self.changed()
        return key.version_name(number)

    def set_primary(self, key_name: str, number: int) -> None:
        with self.lock:
            key = self.get_key(key_name)
            if number not in key.versions:
                raise KmsError("NOT_FOUND", f"CryptoKeyVersion {key.version_name(number)} not found.")
            if key.versions[number].state is not VersionState.ENABLED:
                state = key.versions[number].state.value
                raise KmsError(
                    "FAILED_PRECONDITION",
                    f"{key.version_name(number)} is not enabled, current state is: {state}.",
                )
            key.primary = number

    def set_version_state(self, version_name: str, state: VersionState | str) -> None:
        state = VersionState(state)
        key_name, number = split_version_name(version_name)
        with self.lock:
            version = self.get_version(key_name, number)
            version.state = state
            if state is VersionState.DESTROYED:
                # Destroyed key material is gone for good on GCP; a restore cannot bring it back.
                version.material = b""
                version.destroy_time = time.time()
        self.changed()

    def get_key(self, key_name: str) -> CryptoKey:
        _check_key_name(key_name)
        with self.lock:
            key = self.keys.get(key_name)
        if key is None:
            raise KmsError("NOT_FOUND", f"CryptoKey {key_name} not found.")
        return key

    def get_version(self, key_name: str, number: int | None) -> KeyVersion:
        key = self.get_key(key_name)
        if number is None or number not in key.versions:
            raise KmsError("NOT_FOUND", f"CryptoKeyVersion {key.version_name(number or 0)} not found.")
        return key.versions[number]

    # -- IAM -------------------------------------------------------------------------------------------------

    def grant(self, resource: str, member: str, role: str) -> None:
        if role not in ROLE_PERMISSIONS:
            raise ValueError(f"unknown role {role!r}; known: {sorted(ROLE_PERMISSIONS)}")
        with self.lock:
            self.bindings.add((resource.rstrip("/"), role, member))
        self.changed()

    def revoke(self, resource: str, member: str, role: str | None = None) -> int:
        """Remove the member's bindings on exactly this resource (all roles unless one is named)."""
        with self.lock:
            doomed = {
                b
                for b in self.bindings
                if b[0] == resource.rstrip("/") and b[2] == member and role in (None, b[1])
            }
            self.bindings -= doomed
        self.changed()
        return len(doomed)

    def has_permission(self, principal: str, permission: str, resource: str) -> bool:
        with self.lock:
            bindings = list(self.bindings)
        for bound_resource, role, member in bindings:
            if permission not in ROLE_PERMISSIONS[role]:
                continue
            if resource != bound_resource and not resource.startswith(bound_resource + "/"):
                continue
            if _member_matches(member, principal):
                return True
        return False

    # -- tokens ----------------------------------------------------------------------------------------------

    def issue_token(
        self, principal: str, scopes: tuple[str, ...] = (), lifetime: int | None = None
    ) -> tuple[str, TokenGrant]:
        """A fresh opaque bearer token for ``principal``; the token string is never stored anywhere else."""
        token = "ya29.emulator-" + secrets.token_urlsafe(32)
        grant = TokenGrant(principal, time.time() + (lifetime or self.token_lifetime), scopes)
        with self.lock:
            self.tokens[token] = grant
        return token, grant

    def principal_for_token(self, token: str) -> str | None:
        with self.lock:
            grant = self.tokens.get(token)
        if grant is None or grant.expires_at <= time.time():
            return None
        return grant.principal

    def revoke_tokens(self, principal: str | None = None) -> int:
        with self.lock:
            doomed = [t for t, g in self.tokens.items() if principal in (None, g.principal)]
            for token in doomed:
                del self.tokens[token]
            return len(doomed)

    # -- cryptography ----------------------------------------------------------------------------------------

    def encrypt(self, key: CryptoKey, number: int, plaintext: bytes, aad: bytes) -> bytes:
        version = key.versions[number]
        header = HEADER_MAGIC + key.uid + struct.pack(">I", number)
        nonce = os.urandom(NONCE_LEN)
        return header + nonce + AESGCM(version.material).encrypt(nonce, plaintext, header + aad)

    def parse_ciphertext(self, key: CryptoKey, ciphertext: bytes) -> int:
        """The version number a ciphertext names; INVALID_ARGUMENT when it is not one of this key's."""
        if len(ciphertext) < HEADER_LEN + NONCE_LEN + 16 or not ciphertext.startswith(HEADER_MAGIC):
            raise KmsError("INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        uid = ciphertext[len(HEADER_MAGIC) : len(HEADER_MAGIC) + 8]
        if uid != key.uid:
            raise KmsError(
                "INVALID_ARGUMENT", "Decryption failed: verify that 'name' refers to the correct CryptoKey."
            )
        (number,) = struct.unpack(">I", ciphertext[HEADER_LEN - 4 : HEADER_LEN])
        if number not in key.versions:
            raise KmsError("INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        return int(number)

    def decrypt(self, key: CryptoKey, number: int, ciphertext: bytes, aad: bytes) -> bytes:
        header = ciphertext[:HEADER_LEN]
        nonce = ciphertext[HEADER_LEN : HEADER_LEN + NONCE_LEN]
        try:
            return AESGCM(key.versions[number].material).decrypt(
                nonce, ciphertext[HEADER_LEN + NONCE_LEN :], header + aad
            )
        except InvalidTag:
            raise KmsError("INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.") from None


def _member_matches(member: str, principal: str) -> bool:
    if member == principal or member == "allAuthenticatedUsers":
        return True
    # principalSet://…/workloadIdentityPools/POOL/* covers every subject federated through that pool.
    if member.startswith("principalSet://") and member.endswith("/*"):
        pool = member[len("principalSet://") : -2]
        return principal.startswith("principal://" + pool + "/subject/")
    return False
