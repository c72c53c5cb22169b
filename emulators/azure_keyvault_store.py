"""State of one emulated Azure Key Vault: keys and versions, access grants and the call log.

Kept apart from the HTTP layer (:mod:`emulators.azure_keyvault_http`) so the rules read in one place and
tests can drive them in-process. Everything here is guarded by one lock: the server is threaded and tests
change state while the SDK calls in.

Rules, chosen to match what Azure Key Vault does:

- Authorization comes before lookup: a principal without the permission gets 403 even for a key that does not
  exist, so a denied caller learns nothing about the vault's contents.
- A disabled key (or version) refuses the private-key operations ``unwrapKey``/``decrypt``/``sign`` with 403
  ``Forbidden``/``KeyDisabled``; reading it and the public-key operations ``wrapKey``/``encrypt`` still work,
  as observed on the real service (Azure/azure-sdk-for-python#45342). Kodori's probe therefore unwraps.
- Outside its validity window (``nbf`` in the future or ``exp`` reached) a key refuses the operations that
  make new ciphertext or signatures, ``wrapKey``/``encrypt``/``sign``, with 403 ``Forbidden`` and inner code
  ``KeyNotYetValid`` / ``KeyExpired`` (the real service documents the refusal, not these inner codes), while
  ``unwrapKey``/``decrypt``/``verify`` keep working so that data wrapped in the window stays recoverable.
  The SDK wraps locally for RSA keys, so a client only sees this refusal when it reads the attributes.
- A soft-deleted or purged key is 404 ``KeyNotFound`` for every operation.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .entra import AccessTokenClaims

# Permission names as in Key Vault access policies (keys/get, keys/wrapKey, ...).
PERMISSIONS = ("get", "list", "create", "update", "delete", "wrapKey", "unwrapKey", "encrypt", "decrypt")
# What Kodori's app needs on a customer's key, and nothing more.
DEFAULT_GRANT = ("get", "wrapKey", "unwrapKey")
RSA_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
_REFUSED_WHEN_DISABLED = frozenset({"unwrapKey", "decrypt", "sign"})
_REFUSED_OUTSIDE_VALIDITY = frozenset({"wrapKey", "encrypt", "sign"})
_VAULT_WIDE = "*"
MAX_LOGGED_CALLS = 10_000


class VaultError(Exception):
    """A refusal rendered as Key Vault's error document ``{"error": {"code", "message", "innererror"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.inner_code = inner_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}


def key_not_found(name: str) -> VaultError:
    return VaultError(
        404,
        "KeyNotFound",
        f"A key with (name/id) {name} was not found in this key vault. "
        "If you recently deleted this key you may "
        "be able to recover it using the correct recovery command. For help resolving this issue, please see "
        "https://go.microsoft.com/fwlink/?linkid=2125182",
    )


@dataclass
class KeyVersion:
    """One version of an RSA key; the private half never leaves the emulator."""

    version: str
    private_key: rsa.RSAPrivateKey
    kty: str
    key_ops: list[str]
    created: int
    updated: int
    enabled: bool = True
    expires: int | None = None  # "exp": Unix seconds, None for never
    not_before: int | None = None  # "nbf": Unix seconds, None for always


@dataclass
class StoredKey:
    name: str
    versions: dict[str, KeyVersion] = field(default_factory=dict)  # insertion order: last is current
    deleted: bool = False

    def current(self) -> KeyVersion:
        return next(reversed(self.versions.values()))


@dataclass(frozen=True)
class CallRecord:
    """One vault request as the emulator saw it; ``principal`` is the caller's client id, None before auth."""

    time: float
    operation: str
    key: str | None
    version: str | None
    principal: str | None
    directory_id: str | None
    status: int
    error: str | None


class VaultStore:
    """Keys, grants, faults and call log of one vault. Thread-safe."""

    def __init__(self, vault_name: str, directory_id: str, persist_path: Path | None = None) -> None:
        self.vault_name = vault_name
        self.directory_id = directory_id
        self._persist_path = persist_path
        self._lock = threading.RLock()
        self._keys: dict[str, StoredKey] = {}
        self._grants: dict[str, dict[str, set[str]]] = {}  # key name or "*" -> principal -> permissions
        # Bounded: a benchmark against the emulator must not grow memory without limit.
        self._calls: deque[CallRecord] = deque(maxlen=MAX_LOGGED_CALLS)
        if persist_path is not None and persist_path.exists():
            self._load(persist_path)

    # -- keys ------------------------------------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        kty: str = "RSA",
        size: int = 2048,
        key_ops: list[str] | None = None,
        enabled: bool = True,
    ) -> KeyVersion:
        """Create ``name``, or add a new current version when it exists (as Azure's create does)."""
        if kty not in ("RSA", "RSA-HSM"):
            raise VaultError(
                400, "BadParameter", f"Key type {kty!r} is not supported by this emulator (RSA only)."
            )
        if size not in (2048, 3072, 4096):
            raise VaultError(
                400, "BadParameter", f"Key size {size} is not supported; use 2048, 3072 or 4096."
            )
        ops = list(key_ops) if key_ops else list(RSA_KEY_OPS)
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        now = int(time.time())
        version = KeyVersion(uuid.uuid4().hex, private_key, kty, ops, now, now, enabled)
        with self._lock:
            stored = self._keys.get(name)
            if stored is None or stored.deleted:
                stored = self._keys[name] = StoredKey(name)
            stored.versions[version.version] = version
            self._save()
        return version

    def get_version(self, name: str, version: str | None = None) -> KeyVersion:
        with self._lock:
            stored = self._keys.get(name)
            if stored is None or stored.deleted or not stored.versions:
                raise key_not_found(name)
            if not version:
                return stored.current()
            found = stored.versions.get(version)
            if found is None:
                raise key_not_found(f"{name}/{version}")
            return found

    def key_names(self, include_deleted: bool = False) -> list[str]:
        with self._lock:
            return [name for name, key in self._keys.items() if include_deleted or not key.deleted]

    def versions(self, name: str) -> list[KeyVersion]:
        with self._lock:
            self.get_version(name)
            return list(self._keys[name].versions.values())

    def set_enabled(self, name: str, enabled: bool, version: str | None = None) -> None:
        """Enable/disable one version, or every version when ``version`` is None (a key-wide switch)."""
        with self._lock:
            targets = [self.get_version(name, version)] if version else self.versions(name)
            for target in targets:
                target.enabled = enabled
                target.updated = int(time.time())
            self._save()

    def set_validity(
        self,
        name: str,
        expires: int | None,
        not_before: int | None,
        version: str | None = None,
    ) -> None:
        """Set (or clear, with None) ``exp`` and ``nbf`` of one version, or of every version when None."""
        with self._lock:
            targets = [self.get_version(name, version)] if version else self.versions(name)
            for target in targets:
                target.expires = None if expires is None else int(expires)
                target.not_before = None if not_before is None else int(not_before)
                target.updated = int(time.time())
            self._save()

    def delete_key(self, name: str, purge: bool = False) -> None:
        """Soft-delete ``name`` (recoverable), or purge it and its grants for good."""
        with self._lock:
            if purge:
                if self._keys.pop(name, None) is None:
                    raise key_not_found(name)
                self._grants.pop(name, None)
            else:
                self.get_version(name)
                self._keys[name].deleted = True
            self._save()

    def recover_key(self, name: str) -> None:
        with self._lock:
            stored = self._keys.get(name)
            if stored is None or not stored.deleted:
                raise key_not_found(name)
            stored.deleted = False
            self._save()

    # -- access ----------------------------------------------------------------------------------------------

    def grant(
        self, principal: str, permissions: tuple[str, ...] | list[str] = DEFAULT_GRANT, key: str | None = None
    ) -> None:
        """Allow ``principal`` (client or object id) ``permissions`` on ``key``, or vault-wide when None."""
        unknown = set(permissions) - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}; known: {PERMISSIONS}")
        with self._lock:
            self._grants.setdefault(key or _VAULT_WIDE, {}).setdefault(principal, set()).update(permissions)
            self._save()

    def revoke(
        self, principal: str, permissions: tuple[str, ...] | list[str] | None = None, key: str | None = None
    ) -> None:
        """Remove ``permissions`` (all when None) of ``principal`` on ``key``, or vault-wide when None."""
        with self._lock:
            grants = self._grants.get(key or _VAULT_WIDE, {})
            if permissions is None:
                grants.pop(principal, None)
            else:
                grants.get(principal, set()).difference_update(permissions)
            self._save()

    def grants(self) -> dict[str, dict[str, list[str]]]:
        with self._lock:
            return {k: {p: sorted(ops) for p, ops in v.items()} for k, v in self._grants.items()}

    def authorize(self, caller: AccessTokenClaims, permission: str, key: str | None) -> None:
        with self._lock:
            allowed: set[str] = set()
            for scope in (_VAULT_WIDE, key):
                for principal in (caller.client_id, caller.object_id):
                    allowed |= self._grants.get(scope or _VAULT_WIDE, {}).get(principal, set())
        if permission not in allowed:
            raise VaultError(
                403,
                "Forbidden",
                f"The user, group or application 'appid={caller.client_id};oid={caller.object_id};"
                f"iss={caller.issuer}' does not have keys {permission} permission on key vault "
                f"'{self.vault_name};location=local'. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125287",
                inner_code="AccessDenied",
            )

    @staticmethod
    def check_usable(version: KeyVersion, operation: str) -> None:
        if operation in _REFUSED_WHEN_DISABLED and not version.enabled:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {operation} is not allowed on a disabled key.",
                inner_code="KeyDisabled",
            )
        now = time.time()
        if operation in _REFUSED_OUTSIDE_VALIDITY:
            if version.not_before is not None and now < version.not_before:
                raise VaultError(
                    403,
                    "Forbidden",
                    f"Operation {operation} is not allowed on a key that is not yet valid.",
                    inner_code="KeyNotYetValid",
                )
            if version.expires is not None and now >= version.expires:
                raise VaultError(
                    403,
                    "Forbidden",
                    f"Operation {operation} is not allowed on an expired key.",
                    inner_code="KeyExpired",
                )
        if operation not in version.key_ops:
            raise VaultError(
                403,
                "Forbidden",
                f"Operation {operation} is not permitted on this key.",
                inner_code="KeyOperationForbidden",
            )

    # -- crypto ----------------------------------------------------------------------------------------------

    @staticmethod
    def rsa_encrypt(version: KeyVersion, alg: str, plaintext: bytes) -> bytes:
        try:
            return version.private_key.public_key().encrypt(plaintext, _padding(alg))
        except ValueError as exc:
            raise VaultError(400, "BadParameter", f"The value is too long for {alg} with this key.") from exc

    @staticmethod
    def rsa_decrypt(version: KeyVersion, alg: str, ciphertext: bytes) -> bytes:
        try:
            return version.private_key.decrypt(ciphertext, _padding(alg))
        except ValueError as exc:
            raise VaultError(400, "BadParameter", "Error occurred while decrypting the value.") from exc

    # -- the call log ------------------------------------------------------------------------------------

    def record(self, call: CallRecord) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(
        self,
        operation: str | None = None,
        key: str | None = None,
        status: int | None = None,
        principal: str | None = None,
    ) -> list[CallRecord]:
        with self._lock:
            return [
                c
                for c in self._calls
                if (operation is None or c.operation == operation)
                and (key is None or c.key == key)
                and (status is None or c.status == status)
                and (principal is None or c.principal == principal)
            ]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def reset(self) -> None:
        """Forget keys, grants and calls."""
        with self._lock:
            self._keys.clear()
            self._grants.clear()
            self._calls.clear()
            self._save()

    # -- persistence (``make run`` keeps its keys across restarts; tests do not persist) ------------------

    def _save(self) -> None:
        if self._persist_path is None:
            return
        data = {
            "vault_name": self.vault_name,
            "directory_id": self.directory_id,
            "grants": self.grants(),
            "keys": [
                {
                    "name": key.name,
                    "deleted": key.deleted,
                    "versions": [
                        {
                            "version": v.version,
                            "kty": v.kty,
                            "key_ops": v.key_ops,
                            "created": v.created,
                            "updated": v.updated,
                            "enabled": v.enabled,
                            "exp": v.expires,
                            "nbf": v.not_before,
                            "pem": v.private_key.private_bytes(
                                serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption(),
                            ).decode("ascii"),
                        }
                        for v in key.versions.values()
                    ],
                }
                for key in self._keys.values()
            ],
        }
        tmp = self._persist_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        tmp.replace(self._persist_path)

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.directory_id = data.get("directory_id", self.directory_id)
        for scope, principals in data.get("grants", {}).items():
            self._grants[scope] = {p: set(ops) for p, ops in principals.items()}
        for entry in data.get("keys", []):
            stored = StoredKey(entry["name"], deleted=entry.get("deleted", False))
            for v in entry["versions"]:
                private_key = serialization.load_pem_private_key(v["pem"].encode("ascii"), password=None)
                assert isinstance(private_key, rsa.RSAPrivateKey)
                stored.versions[v["version"]] = KeyVersion(
                    v["version"],
                    private_key,
                    v["kty"],
                    list(v["key_ops"]),
                    v["created"],
                    v["updated"],
                    v["enabled"],
                    v.get("exp"),
                    v.get("nbf"),
                )
            self._keys[stored.name] = stored


def _padding(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA-OAEP-256":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    if alg == "RSA-OAEP":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    raise VaultError(400, "BadParameter", f"Invalid algorithm {alg!r} for an RSA key.")
