"""A local Azure Key Vault (keys API) over HTTPS, for Kodori's tests and ``make run``.

One :class:`AzureKeyVaultEmulator` is one vault owned by one directory (tenant), on its own port; it trusts
access tokens from an :class:`~emulators.entra.EntraEmulator` (its own, or one shared by several vaults so
that tests can model several customer directories). Kodori's real ``azure-keyvault-keys`` and
``azure-identity`` clients talk to it unchanged; see ``docs/emulators.md`` for the exact client construction.

REST surface (any ``api-version`` is accepted):

- ``GET /keys``, ``GET /keys/{name}[/{version}]``, ``PATCH /keys/{name}[/{version}]``
  (``attributes.enabled``, ``attributes.exp``, ``attributes.nbf``), ``POST /keys/{name}/create`` (RSA /
  RSA-HSM, 2048/3072/4096);
- ``POST /keys/{name}/{version}/wrapkey|unwrapkey|encrypt|decrypt`` with ``{"alg", "value"}`` for
  ``RSA-OAEP-256``, ``RSA-OAEP`` and ``RSA1_5``, answering ``{"kid", "value"}``;
- the bearer challenge: no or bad token -> 401 with ``WWW-Authenticate: Bearer authorization="<entra>/<dir>",
  resource="https://vault.azure.net"``; a token of another directory -> 401 ``AKV10032``;
- ``/_emulator/...``: an unauthenticated JSON control API for tests and ``make run`` (see
  :func:`emulators.azure_keyvault_http.handle_admin`).

Rules for access, disabled and deleted keys live in :mod:`emulators.azure_keyvault_store`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .azure_keyvault_faults import FaultInjector, Faults
from .azure_keyvault_http import VaultHandler
from .azure_keyvault_store import DEFAULT_GRANT, CallRecord, VaultStore
from .entra import DEFAULT_SUBJECT, EntraEmulator
from .https_server import BackgroundServer, HttpsServer
from .tls import server_ssl_context

# Fixed defaults for `make run`: key ids embed the port and Kodori's dev database stores key ids, so a restart
# must come back on the same address with the same (persisted) keys.
DEFAULT_VAULT_PORT = 28443
DEFAULT_ENTRA_PORT = 28444
DEMO_DIRECTORY_ID = "11111111-1111-4111-8111-111111111111"
DEMO_CLIENT_ID = "22222222-2222-4222-8222-222222222222"
DEMO_KEY_NAME = "kodori-demo"
# WorkloadIdentityCredential re-reads its token file every 10 minutes; refresh well inside the token lifetime.
_ASSERTION_LIFETIME = 3600
_ASSERTION_REFRESH = 300


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs to reach this vault as one principal (what Kodori's settings would hold)."""

    vault_url: str
    authority: str
    directory_id: str
    client_id: str
    ca_path: str
    subject: str
    mint_assertion: Callable[[], str]

    def credential_kwargs(self) -> dict[str, Any]:
        """kwargs for ``ClientAssertionCredential(**kwargs, func=...)``."""
        return {
            "tenant_id": self.directory_id,
            "client_id": self.client_id,
            "authority": self.authority,
            "connection_verify": self.ca_path,
        }

    def client_kwargs(self) -> dict[str, Any]:
        """kwargs for ``KeyClient``/``CryptographyClient``."""
        return {"verify_challenge_resource": False, "connection_verify": self.ca_path}


class AzureKeyVaultEmulator:
    """One emulated vault. ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        entra: EntraEmulator | None = None,
        directory_id: str | None = None,
        vault_name: str = "kodori-emulator",
        port: int = 0,
        persist: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._owns_entra = entra is None
        self.entra = entra or EntraEmulator(self.state_dir)
        persist_path = self.state_dir / f"vault-{vault_name}.json" if persist else None
        self.store = VaultStore(vault_name, directory_id or str(uuid.uuid4()), persist_path)
        self.entra.add_directory(self.store.directory_id)
        self.faults = FaultInjector()
        self._port_wanted = port
        self._server: BackgroundServer | None = None

    # -- lifecycle and addresses --------------------------------------------------------------------------

    def start(self) -> AzureKeyVaultEmulator:
        if self._owns_entra:
            self.entra.start()
        if self._server is None:
            handler = type("BoundVaultHandler", (VaultHandler,), {"vault": self})
            server = HttpsServer(self._port_wanted, handler, server_ssl_context(self.entra.tls))
            self._server = BackgroundServer(server, name=f"keyvault-{self.store.vault_name}")
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._owns_entra:
            self.entra.stop()

    def __enter__(self) -> AzureKeyVaultEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the vault emulator is not running; call start() first")
        return self._server.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return self.entra.url

    @property
    def ca_path(self) -> Path:
        return self.entra.ca_path

    @property
    def directory_id(self) -> str:
        return self.store.directory_id

    def key_id(self, name: str, version: str | None = None) -> str:
        version = version if version is not None else self.store.get_version(name).version
        return f"{self.url}/keys/{name}/{version}"

    # -- control API (mirrored over HTTP under /_emulator) ------------------------------------------------

    def create_key(
        self,
        name: str,
        kty: str = "RSA",
        size: int = 2048,
        key_ops: list[str] | None = None,
        enabled: bool = True,
    ) -> str:
        """Create a key (or a new version of it); returns the versioned key id."""
        return self.key_id(name, self.store.create_key(name, kty, size, key_ops, enabled).version)

    def list_keys(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "versions": [
                    {
                        "version": v.version,
                        "kid": self.key_id(name, v.version),
                        "enabled": v.enabled,
                        "kty": v.kty,
                    }
                    for v in self.store.versions(name)
                ],
            }
            for name in self.store.key_names()
        ]

    def disable_key(self, name: str, version: str | None = None) -> None:
        self.store.set_enabled(name, False, version)

    def enable_key(self, name: str, version: str | None = None) -> None:
        self.store.set_enabled(name, True, version)

    def set_key_validity(
        self,
        name: str,
        expires_on: float | None = None,
        not_before: float | None = None,
        version: str | None = None,
    ) -> None:
        """Set the key's expiration (``exp``) and activation (``nbf``) dates as Unix seconds; None clears one.

        Applies to one version, or to every version when ``version`` is None (like :meth:`disable_key`).
        """
        self.store.set_validity(
            name,
            None if expires_on is None else int(expires_on),
            None if not_before is None else int(not_before),
            version,
        )

    def delete_key(self, name: str, purge: bool = False) -> None:
        self.store.delete_key(name, purge)

    def recover_key(self, name: str) -> None:
        self.store.recover_key(name)

    def grant(
        self, principal: str, permissions: tuple[str, ...] | list[str] = DEFAULT_GRANT, key: str | None = None
    ) -> None:
        self.store.grant(principal, permissions, key)

    def revoke(
        self, principal: str, permissions: tuple[str, ...] | list[str] | None = None, key: str | None = None
    ) -> None:
        self.store.revoke(principal, permissions, key)

    def set_faults(self, **changes: Any) -> Faults:
        """E.g. ``set_faults(throttle_next=2, retry_after=0.05)``, ``error_ratio=0.5``, ``latency_ms=200``."""
        return self.faults.set(**changes)

    def clear_faults(self) -> None:
        self.faults.clear()

    def calls(
        self,
        operation: str | None = None,
        key: str | None = None,
        status: int | None = None,
        principal: str | None = None,
    ) -> list[CallRecord]:
        return self.store.calls(operation, key, status, principal)

    def call_count(
        self,
        operation: str | None = None,
        key: str | None = None,
        status: int | None = None,
        principal: str | None = None,
    ) -> int:
        return len(self.calls(operation, key, status, principal))

    def clear_calls(self) -> None:
        self.store.clear_calls()

    def reset(self) -> None:
        """Forget keys, grants, faults and calls (Entra registrations stay)."""
        self.store.reset()
        self.faults.clear()

    def register_client(
        self,
        client_id: str | None = None,
        *,
        subject: str = DEFAULT_SUBJECT,
        permissions: tuple[str, ...] | list[str] = DEFAULT_GRANT,
        key: str | None = None,
    ) -> ClientSettings:
        """Register an app with a federated credential, consent it in this vault's directory and grant it."""
        client_id = self.entra.register_application(client_id, subject=subject)
        self.entra.add_service_principal(self.directory_id, client_id)
        if permissions:
            self.grant(client_id, permissions, key)
        return self.settings(client_id, subject)

    def settings(self, client_id: str, subject: str = DEFAULT_SUBJECT) -> ClientSettings:
        return ClientSettings(
            vault_url=self.url,
            authority=self.authority,
            directory_id=self.directory_id,
            client_id=client_id,
            ca_path=str(self.ca_path),
            subject=subject,
            mint_assertion=lambda: self.entra.mint_assertion(subject),
        )


def main(argv: list[str] | None = None) -> int:
    """Run a vault and a token endpoint until Ctrl-C, printing the settings Kodori needs."""
    parser = argparse.ArgumentParser(
        prog="python -m emulators.azure_keyvault",
        description="Local Azure Key Vault (keys API) and Entra ID token endpoint over HTTPS.",
    )
    parser.add_argument(
        "--state-dir", default=".kodori/emulators/azure", help="TLS material, keys, token file"
    )
    parser.add_argument("--vault-port", type=int, default=DEFAULT_VAULT_PORT, help="0 picks a free port")
    parser.add_argument("--entra-port", type=int, default=DEFAULT_ENTRA_PORT, help="0 picks a free port")
    parser.add_argument("--vault-name", default="kodori-emulator")
    parser.add_argument("--directory-id", default=DEMO_DIRECTORY_ID, help="the vault's directory (tenant) id")
    parser.add_argument("--client-id", default=DEMO_CLIENT_ID, help="Kodori's application (client) id")
    parser.add_argument("--subject", default=DEFAULT_SUBJECT, help="subject of Kodori's federated assertions")
    parser.add_argument("--key-name", default=DEMO_KEY_NAME, help="demo key created on first start")
    parser.add_argument("--no-persist", action="store_true", help="keep keys in memory only")
    args = parser.parse_args(argv)

    dev = start_for_development(
        args.state_dir,
        vault_port=args.vault_port,
        entra_port=args.entra_port,
        vault_name=args.vault_name,
        directory_id=args.directory_id,
        client_id=args.client_id,
        subject=args.subject,
        key_name=args.key_name,
        persist=not args.no_persist,
    )
    stop = threading.Event()
    try:
        _print_settings(dev.settings)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
    finally:
        dev.stop()
    return 0


@dataclass
class DevEnvironment:
    """A running vault and token endpoint for ``make run``; ``settings`` is also in ``settings.json``."""

    entra: EntraEmulator
    vault: AzureKeyVaultEmulator
    settings: dict[str, Any]
    stopping: threading.Event

    def stop(self) -> None:
        self.stopping.set()
        self.vault.stop()
        self.entra.stop()


def start_for_development(
    state_dir: str | os.PathLike[str],
    *,
    vault_port: int = DEFAULT_VAULT_PORT,
    entra_port: int = DEFAULT_ENTRA_PORT,
    vault_name: str = "kodori-emulator",
    directory_id: str = DEMO_DIRECTORY_ID,
    client_id: str = DEMO_CLIENT_ID,
    subject: str = DEFAULT_SUBJECT,
    key_name: str = DEMO_KEY_NAME,
    persist: bool = True,
) -> DevEnvironment:
    """Start both servers with persisted keys, a demo key, and a federated token file kept fresh.

    What ``python -m emulators.azure_keyvault`` runs; a dev launcher may call it in-process instead.
    """
    state = Path(state_dir).resolve()
    entra = EntraEmulator(state, port=entra_port)
    vault = AzureKeyVaultEmulator(
        state, entra=entra, directory_id=directory_id, vault_name=vault_name, port=vault_port, persist=persist
    )
    entra.start()
    try:
        vault.start()
        client = vault.register_client(client_id, subject=subject)
        if key_name not in vault.store.key_names():
            vault.create_key(key_name)
    except BaseException:
        vault.stop()
        entra.stop()
        raise
    token_file = entra.write_assertion_file(state / "federated-token", subject, _ASSERTION_LIFETIME)
    stopping = threading.Event()
    threading.Thread(
        target=_refresh_assertions, args=(entra, token_file, subject, stopping), daemon=True
    ).start()
    settings = {
        **{k: v for k, v in asdict(client).items() if k != "mint_assertion"},
        "key_id": vault.key_id(key_name),
        "federated_token_file": str(token_file),
        "control_api": f"{vault.url}/_emulator",
        "settings_file": str(state / "settings.json"),
    }
    (state / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return DevEnvironment(entra, vault, settings, stopping)


def _refresh_assertions(entra: EntraEmulator, path: Path, subject: str, stop: threading.Event) -> None:
    while not stop.wait(_ASSERTION_REFRESH):
        entra.write_assertion_file(path, subject, _ASSERTION_LIFETIME)


def _print_settings(settings: dict[str, Any]) -> None:
    rows = [
        ("vault URL", settings["vault_url"]),
        ("key id", settings["key_id"]),
        ("authority host", settings["authority"]),
        ("directory (tenant) id", settings["directory_id"]),
        ("client id", settings["client_id"]),
        ("CA bundle", settings["ca_path"]),
        (
            "federated token file",
            f"{settings['federated_token_file']} (refreshed every {_ASSERTION_REFRESH} s)",
        ),
        ("control API", settings["control_api"]),
        ("settings file", settings["settings_file"]),
    ]
    print("Azure Key Vault emulator running; Ctrl-C stops it.")
    for label, value in rows:
        print(f"  {label:<22} {value}")
    print("Clients (see docs/emulators.md):")
    print("  ClientAssertionCredential(tenant_id, client_id, func=<reads the token file>,")
    print("                            authority=<authority host>, connection_verify=<CA bundle>)")
    print("  CryptographyClient(key_id, credential, verify_challenge_resource=False,")
    print("                     connection_verify=<CA bundle>)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
