"""The HTTP surface of the Key Vault emulator: REST routing, the bearer challenge, and the control API.

:mod:`emulators.azure_keyvault` holds the public Python API; :mod:`emulators.azure_keyvault_store` the rules.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from . import jose
from .azure_keyvault_store import DEFAULT_GRANT, CallRecord, KeyVersion, VaultError
from .entra import DEFAULT_SUBJECT, KEY_VAULT_RESOURCE, AccessTokenClaims, InvalidToken
from .https_server import JsonRequestHandler

if TYPE_CHECKING:
    from .azure_keyvault import AzureKeyVaultEmulator, ClientSettings

_CRYPTO_ACTIONS = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey", "encrypt": "encrypt", "decrypt": "decrypt"}


def key_bundle(base: str, name: str, v: KeyVersion) -> dict[str, Any]:
    """Key Vault's KeyBundle JSON: the public JWK (never the private half) and the version's attributes."""
    kid = f"{base}/keys/{name}/{v.version}"
    # kty after the public numbers: an HSM key is "RSA-HSM" in Key Vault's JWK, not plain "RSA".
    jwk = {"kid": kid, **jose.rsa_public_jwk(v.private_key.public_key()), "kty": v.kty, "key_ops": v.key_ops}
    return {"key": jwk, "attributes": _attributes(v), "tags": {}}


def _attributes(v: KeyVersion) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
        "exportable": False,
    }
    # Key Vault sends nbf / exp only when they are set (Unix seconds).
    if v.not_before is not None:
        attributes["nbf"] = v.not_before
    if v.expires is not None:
        attributes["exp"] = v.expires
    return attributes


def _optional_seconds(value: Any) -> int | None:
    return None if value is None else int(value)


class VaultHandler(JsonRequestHandler):
    vault: AzureKeyVaultEmulator

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.parse_target()
        try:
            body = self.read_json()
        except ValueError as exc:
            self._send_error(VaultError(400, "BadParameter", f"The request body is not valid JSON: {exc}"))
            return
        if self.path_only.startswith("/_emulator/"):
            try:
                status, payload = handle_admin(self.vault, self.command, self.path_only, self.query, body)
            except (VaultError, ValueError, KeyError, TypeError) as exc:
                err = exc if isinstance(exc, VaultError) else VaultError(400, "BadParameter", str(exc))
                self._send_error(err)
                return
            self.send_json(status, payload)
            return
        self._vault_request(body)

    def _vault_request(self, body: dict[str, Any]) -> None:
        store = self.vault.store
        latency = self.vault.faults.latency_ms
        if latency > 0:
            time.sleep(latency / 1000)
        operation, permission, key, version = _route(self.command, self.path_only)
        caller: AccessTokenClaims | None = None
        try:
            caller = self._authenticate()
            if caller is None:
                operation = "challenge"
                raise VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
            if permission is None:
                raise VaultError(400, "BadParameter", f"Unsupported request {self.command} {self.path_only}.")
            fault = self.vault.faults.take()
            if fault is not None:
                raise fault
            store.authorize(caller, permission, key)
            status, payload = self._execute(operation, key or "", version, body)
        except VaultError as err:
            self._log(operation, key, version, caller, err.status, err.inner_code or err.code)
            self._send_error(err)
            return
        self._log(operation, key, version, caller, status, None)
        self.send_json(status, payload, {"x-ms-request-id": str(uuid.uuid4())})

    def _authenticate(self) -> AccessTokenClaims | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            claims = self.vault.entra.validate_access_token(token.strip(), KEY_VAULT_RESOURCE)
        except InvalidToken as exc:
            raise VaultError(401, "Unauthorized", str(exc)) from exc
        expected = f"https://sts.windows.net/{self.vault.directory_id}/"
        if claims.directory_id != self.vault.directory_id:
            raise VaultError(
                401, "Unauthorized", f"AKV10032: Invalid issuer. Expected {expected}, found {claims.issuer}."
            )
        return claims

    def _execute(
        self, operation: str, name: str, version: str | None, body: dict[str, Any]
    ) -> tuple[int, Any]:
        store = self.vault.store
        base = self._base_url()
        if operation == "listKeys":
            items = [
                {"kid": f"{base}/keys/{n}", "attributes": _attributes(store.get_version(n))}
                for n in store.key_names()
            ]
            return 200, {"value": items, "nextLink": None}
        if operation == "createKey":
            attributes = body.get("attributes") or {}
            created = store.create_key(
                name,
                str(body.get("kty", "RSA")),
                int(body.get("key_size") or 2048),
                body.get("key_ops"),
                bool(attributes.get("enabled", True)),
            )
            if attributes.get("exp") is not None or attributes.get("nbf") is not None:
                store.set_validity(
                    name,
                    _optional_seconds(attributes.get("exp")),
                    _optional_seconds(attributes.get("nbf")),
                    created.version,
                )
            return 200, key_bundle(base, name, created)
        found = store.get_version(name, version)
        if operation == "getKey":
            return 200, key_bundle(base, name, found)
        if operation == "updateKey":
            attributes = body.get("attributes") or {}
            if "enabled" in attributes:
                store.set_enabled(name, bool(attributes["enabled"]), found.version)
            if "exp" in attributes or "nbf" in attributes:
                store.set_validity(
                    name,
                    _optional_seconds(attributes.get("exp", found.expires)),
                    _optional_seconds(attributes.get("nbf", found.not_before)),
                    found.version,
                )
            if body.get("key_ops"):
                found.key_ops = list(body["key_ops"])
            return 200, key_bundle(base, name, found)
        store.check_usable(found, operation)
        alg, value = body.get("alg"), body.get("value")
        if not isinstance(alg, str) or not isinstance(value, str):
            raise VaultError(400, "BadParameter", "The request must carry 'alg' and a base64url 'value'.")
        try:
            data = jose.b64url_decode(value)
        except ValueError as exc:
            raise VaultError(400, "BadParameter", "'value' is not base64url.") from exc
        if operation in ("wrapKey", "encrypt"):
            result = store.rsa_encrypt(found, alg, data)
        else:
            result = store.rsa_decrypt(found, alg, data)
        return 200, {"kid": f"{base}/keys/{name}/{found.version}", "value": jose.b64url_encode(result)}

    def _base_url(self) -> str:
        # Answer with the host the client used (127.0.0.1 or localhost), so ids round-trip through the SDK.
        host = self.headers.get("Host", "")
        return f"https://{host}" if host.split(":")[0] in ("127.0.0.1", "localhost") else self.vault.url

    def _log(
        self,
        operation: str,
        key: str | None,
        version: str | None,
        caller: AccessTokenClaims | None,
        status: int,
        error: str | None,
    ) -> None:
        self.vault.store.record(
            CallRecord(
                time=time.time(),
                operation=operation,
                key=key,
                version=version or None,
                principal=caller.client_id if caller else None,
                directory_id=caller.directory_id if caller else None,
                status=status,
                error=error,
            )
        )

    def _send_error(self, err: VaultError) -> None:
        headers = dict(err.headers)
        if err.status == 401:
            headers["WWW-Authenticate"] = (
                f'Bearer authorization="{self.vault.authority}/{self.vault.directory_id}", '
                f'resource="{KEY_VAULT_RESOURCE}"'
            )
        self.send_json(err.status, err.body(), headers)


def _route(method: str, path: str) -> tuple[str, str | None, str | None, str | None]:
    """(operation, permission, key, version) of a vault request; permission None means unsupported.

    An empty version segment (``/keys/k//unwrapkey``, which the SDK sends when it has no version) means the
    current version.
    """
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not parts or parts[0] != "keys":
        return "unknown", None, None, None
    if len(parts) == 1:
        return ("listKeys", "list", None, None) if method == "GET" else ("unknown", None, None, None)
    name = parts[1]
    if method == "POST" and len(parts) == 3 and parts[2] == "create":
        return "createKey", "create", name, None
    if method == "POST" and len(parts) in (3, 4) and parts[-1].lower() in _CRYPTO_ACTIONS:
        operation = _CRYPTO_ACTIONS[parts[-1].lower()]
        return operation, operation, name, (parts[2] if len(parts) == 4 else None) or None
    if method in ("GET", "PATCH") and len(parts) in (2, 3):
        operation, permission = ("getKey", "get") if method == "GET" else ("updateKey", "update")
        return operation, permission, name, (parts[2] if len(parts) == 3 else None) or None
    return "unknown", None, name, None


def handle_admin(
    vault: AzureKeyVaultEmulator, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
) -> tuple[int, Any]:
    """The ``/_emulator`` control API: the Python API of :class:`AzureKeyVaultEmulator` as JSON.

    - ``GET|POST /keys``; ``POST /keys/{name}/disable|enable|delete|recover`` (``{"version"}``, ``{"purge"}``)
    - ``POST /keys/{name}/validity`` (``{"expires_on", "not_before", "version"}``: Unix seconds or null)
    - ``GET /grants``; ``POST /grants`` and ``POST /revoke`` (``{"principal", "permissions", "key"}``)
    - ``GET|POST|DELETE /faults``; ``GET|DELETE /calls`` (``?operation=&key=&status=&principal=``)
    - ``POST /clients`` (``{"client_id", "subject", "permissions", "key"}``)
    - ``GET /settings``; ``POST /reset``
    """
    parts = path.strip("/").split("/")[1:]
    route = (method, parts[0]) if len(parts) == 1 else None
    if route == ("GET", "keys"):
        return 200, {"keys": vault.list_keys()}
    if route == ("POST", "keys"):
        kid = vault.create_key(
            body["name"],
            body.get("kty", "RSA"),
            int(body.get("size", 2048)),
            body.get("key_ops"),
            bool(body.get("enabled", True)),
        )
        return 201, {"kid": kid}
    if len(parts) == 3 and method == "POST" and parts[0] == "keys":
        name, verb = parts[1], parts[2]
        if verb in ("disable", "enable"):
            vault.store.set_enabled(name, verb == "enable", body.get("version"))
        elif verb == "delete":
            vault.delete_key(name, purge=bool(body.get("purge", False)))
        elif verb == "recover":
            vault.recover_key(name)
        elif verb == "validity":
            vault.set_key_validity(
                name, body.get("expires_on"), body.get("not_before"), version=body.get("version")
            )
        else:
            raise VaultError(404, "NotFound", f"Unknown key action {verb!r}.")
        return 200, {}
    if route in (("POST", "grants"), ("POST", "revoke")):
        permissions = body.get("permissions")
        if parts[0] == "grants":
            vault.grant(body["principal"], permissions or DEFAULT_GRANT, body.get("key"))
        else:
            vault.revoke(body["principal"], permissions, body.get("key"))
        return 200, {"grants": vault.store.grants()}
    if route == ("GET", "grants"):
        return 200, {"grants": vault.store.grants()}
    if parts == ["faults"]:
        if method == "POST":
            vault.set_faults(**body)
        elif method == "DELETE":
            vault.clear_faults()
        return 200, {"faults": asdict(vault.faults.snapshot())}
    if parts == ["calls"]:
        if method == "DELETE":
            vault.clear_calls()
        first = {name: values[0] for name, values in query.items()}
        status = int(first["status"]) if "status" in first else None
        calls = vault.calls(first.get("operation"), first.get("key"), status, first.get("principal"))
        return 200, {"count": len(calls), "calls": [asdict(call) for call in calls]}
    if route == ("POST", "clients"):
        settings = vault.register_client(
            body.get("client_id"),
            subject=body.get("subject", DEFAULT_SUBJECT),
            permissions=body.get("permissions", DEFAULT_GRANT),
            key=body.get("key"),
        )
        return 201, _settings_json(settings)
    if route == ("GET", "settings"):
        return 200, {
            "vault_url": vault.url,
            "authority": vault.authority,
            "directory_id": vault.directory_id,
            "ca_path": str(vault.ca_path),
        }
    if route == ("POST", "reset"):
        vault.reset()
        return 200, {}
    raise VaultError(404, "NotFound", f"No emulator control endpoint {method} {path}.")


def _settings_json(settings: ClientSettings) -> dict[str, Any]:
    data = {k: v for k, v in asdict(settings).items() if k != "mint_assertion"}
    data["assertion"] = settings.mint_assertion()
    return data
