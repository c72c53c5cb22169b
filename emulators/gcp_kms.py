"""A local emulator of GCP Cloud KMS plus the workload identity federation it is reached through.

Two servers on 127.0.0.1, one state (``gcp_state.KmsStore``):

- a gRPC server implementing ``google.cloud.kms.v1.KeyManagementService`` (``gcp_kms_service``): GetCryptoKey,
  GetCryptoKeyVersion, Encrypt, Decrypt, CreateKeyRing, CreateCryptoKey; real AES-256-GCM with the AAD bound,
  the CRC32C integrity fields checked and returned as the real API does, version states, IAM permissions per
  principal, bearer-token authentication, injected faults;
- an HTTP server (``gcp_sts``) with the Security Token Service token exchange and IAM Credentials
  ``generateAccessToken`` that google-auth's ``identity_pool.Credentials`` call, and the admin API under
  ``/_emulator/<method>``.

What it does not do: key rotation schedules, asymmetric/MAC/raw keys, ImportJobs, ListX calls, IAM policy RPCs
(SetIamPolicy/GetIamPolicy: use :meth:`GcpKmsEmulator.grant`), EKM, key access justifications, TLS (the client
reaches it with gRPC *local* channel credentials, which only work on loopback). See ``docs/emulators.md`` for
the exact client construction.

Run it standalone with ``python -m emulators.gcp_kms --help``; it prints the settings Kodori should use.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from emulators import gcp_persist
from emulators.faults import FaultControls, FaultInjector
from emulators.gcp_kms_service import KmsServicer
from emulators.gcp_state import KmsStore, VersionState
from emulators.gcp_sts import (
    OidcProvider,
    StsServer,
    WorkloadFederation,
    WorkloadIdentityIssuer,
    public_key_from,
)

DEFAULT_PROJECT = "kodori-dev"
DEFAULT_PROJECT_NUMBER = "100000000001"
DEFAULT_POOL = "kodori-pool"
DEFAULT_PROVIDER = "kodori-oidc"
DEFAULT_SUBJECT = "kodori-web"
DEFAULT_ISSUER = "https://issuer.kodori.test"
ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
KMS_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# A universe domain other than googleapis.com switches off google-auth's Regional Access Boundary lookup, a
# background GET to iamcredentials.googleapis.com after every token refresh (google-auth >= 2.4x). Client and
# credentials must name the same universe.
EMULATOR_UNIVERSE = "kodori-emulator.test"


class GcpKmsEmulator(FaultControls):
    """Starts, configures and stops the GCP KMS + STS emulator. Every public method is also an admin call.

    Faults: ``throttle`` answers RESOURCE_EXHAUSTED, ``unavailable`` answers UNAVAILABLE (which
    google-cloud-kms's default retry policy retries for up to 60 s). With ``state_dir``, keys and bindings are
    kept in ``<state_dir>/gcp-kms-state.json`` across restarts.
    """

    ADMIN_METHODS = frozenset(
        {
            "settings", "create_key_ring", "create_crypto_key", "create_key", "create_version",
            "set_version_state", "set_primary", "grant", "revoke", "revoke_tokens", "create_service_account",
            "allow_impersonation", "register_provider", "set_provider_enabled", "mint_subject_token",
            "write_subject_token_file", "credential_config", "principal", "throttle", "unavailable",
            "set_latency", "clear_faults", "faults_state", "counts", "outcome_counts", "calls",
            "sts_exchanges", "reset",
        }
    )  # fmt: skip

    def __init__(
        self,
        port: int = 0,
        sts_port: int = 0,
        project: str = DEFAULT_PROJECT,
        project_number: str = DEFAULT_PROJECT_NUMBER,
        issuer: str = DEFAULT_ISSUER,
        token_lifetime: int = 3600,
        state_dir: str | None = None,
    ) -> None:
        self.project = project
        self.project_number = project_number
        self.store = KmsStore(token_lifetime=token_lifetime)
        self.faults = FaultInjector()
        self.federation = WorkloadFederation(self.store)
        self.issuer = WorkloadIdentityIssuer(issuer)
        self._requested_ports = (port, sts_port)
        self._grpc_server: grpc.Server | None = None
        self._sts_server: StsServer | None = None
        self._sts_thread: threading.Thread | None = None
        self.port = 0
        self.sts_port = 0
        self._register_default_provider()
        self._save_lock = threading.Lock()
        if state_dir is not None:
            path = Path(state_dir) / "gcp-kms-state.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            gcp_persist.restore(self, path)
            self.store.on_change = lambda: self._save(path)

    def _save(self, path: Path) -> None:
        with self._save_lock:
            gcp_persist.save(self, path)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> GcpKmsEmulator:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="gcp-kms-emulator")
        )
        server.add_generic_rpc_handlers((KmsServicer(self.store, self.faults).generic_handler(),))
        # An insecure port accepts both insecure channels and channels with local (LOCAL_TCP) credentials.
        self.port = server.add_insecure_port(f"127.0.0.1:{self._requested_ports[0]}")
        server.start()
        self._grpc_server = server
        self._sts_server = StsServer(self._requested_ports[1], self)
        self.sts_port = int(self._sts_server.server_address[1])
        self._sts_thread = threading.Thread(
            target=self._sts_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gcp-sts-emulator",
            daemon=True,
        )
        self._sts_thread.start()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._sts_server is not None:
            self._sts_server.shutdown()
            self._sts_server.server_close()
            self._sts_server = None
        if self._sts_thread is not None:
            self._sts_thread.join(timeout=5)
            self._sts_thread = None

    def __enter__(self) -> GcpKmsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``host:port`` of the gRPC service, for ``client_options={"api_endpoint": ...}``."""
        return f"127.0.0.1:{self.port}"

    @property
    def sts_url(self) -> str:
        """The STS token exchange URL, for the credential config's ``token_url``."""
        return f"http://127.0.0.1:{self.sts_port}/v1/token"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.sts_port}/_emulator"

    @property
    def default_audience(self) -> str:
        return self._default_provider().audience

    def _default_provider(self) -> OidcProvider:
        return OidcProvider(
            self.project_number,
            DEFAULT_POOL,
            DEFAULT_PROVIDER,
            self.issuer.issuer,
            {self.issuer.kid: self.issuer.private_key.public_key()},
        )

    def _register_default_provider(self) -> None:
        self.federation.add_provider(self._default_provider())

    # -- resources -------------------------------------------------------------------------------------------

    def create_key_ring(self, key_ring_id: str, project: str | None = None, location: str = "global") -> str:
        return self.store.create_key_ring(project or self.project, location, key_ring_id)

    def create_crypto_key(self, key_ring: str, crypto_key_id: str, with_version: bool = True) -> str:
        return self.store.create_crypto_key(key_ring, crypto_key_id, with_version)

    def create_key(
        self,
        key_ring_id: str = "kodori",
        crypto_key_id: str = "kek",
        grant_to: str | None = "default",
        location: str = "global",
    ) -> str:
        """Key ring (if new) + key with one ENABLED primary version, granted to the default principal by
        default."""
        ring = f"projects/{self.project}/locations/{location}/keyRings/{key_ring_id}"
        if ring not in self.store.key_rings:
            self.create_key_ring(key_ring_id, location=location)
        name = self.create_crypto_key(ring, crypto_key_id)
        if grant_to:
            self.grant(name, None if grant_to == "default" else grant_to)
        return name

    def create_version(self, crypto_key: str, make_primary: bool = False) -> str:
        return self.store.create_version(crypto_key, make_primary)

    def set_version_state(self, version: str, state: str) -> None:
        """ENABLED, DISABLED, DESTROY_SCHEDULED or DESTROYED (destroying discards the key material for
        good)."""
        self.store.set_version_state(version, VersionState(state))

    def set_primary(self, crypto_key: str, version_number: int) -> None:
        self.store.set_primary(crypto_key, int(version_number))

    # -- identities and IAM ----------------------------------------------------------------------------------

    def principal(self, subject: str = DEFAULT_SUBJECT, pool: str = DEFAULT_POOL) -> str:
        """The IAM member a federated subject becomes, e.g. for :meth:`grant`."""
        return f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/workloadIdentityPools/{pool}/subject/{subject}"

    def grant(self, resource: str, member: str | None = None, role: str = ENCRYPTER_DECRYPTER) -> None:
        """Add an IAM binding on a project, key ring, key or ``projects/-/serviceAccounts/<email>`` path."""
        self.store.grant(resource, member or self.principal(), role)

    def revoke(self, resource: str, member: str | None = None, role: str | None = None) -> int:
        """Remove the member's bindings on exactly ``resource``; issued tokens stay valid, as on GCP."""
        return self.store.revoke(resource, member or self.principal(), role)

    def revoke_tokens(self, principal: str | None = None) -> int:
        return self.store.revoke_tokens(principal)

    def create_service_account(self, email: str) -> str:
        self.federation.service_accounts.add(email)
        self.store.changed()
        return f"serviceAccount:{email}"

    def allow_impersonation(self, email: str, member: str | None = None) -> None:
        """Let a federated principal impersonate ``email`` (roles/iam.workloadIdentityUser on the account)."""
        self.grant(f"projects/-/serviceAccounts/{email}", member, "roles/iam.workloadIdentityUser")

    def register_provider(
        self,
        pool: str,
        provider: str,
        issuer: str,
        jwks: dict[str, Any] | None = None,
        public_key_pem: str | None = None,
        allowed_audiences: list[str] | None = None,
        project_number: str | None = None,
    ) -> str:
        """Trust another OIDC issuer (e.g. Kodori's real one) through a new provider; returns its STS
        audience."""
        keys = {}
        for index, jwk in enumerate((jwks or {}).get("keys", [])):
            keys[jwk.get("kid") or f"key-{index}"] = public_key_from(jwk)
        if public_key_pem:
            keys["pem"] = public_key_from(public_key_pem)
        if not keys:
            raise ValueError("give jwks or public_key_pem")
        entry = OidcProvider(
            project_number or self.project_number, pool, provider, issuer, keys, allowed_audiences or []
        )
        self.federation.add_provider(entry)
        self.store.changed()
        return entry.audience

    def set_provider_enabled(self, enabled: bool, audience: str | None = None) -> None:
        self.federation.providers[audience or self.default_audience].enabled = bool(enabled)
        self.store.changed()

    def mint_subject_token(
        self, subject: str = DEFAULT_SUBJECT, audience: str | None = None, lifetime: int = 600, **claims: Any
    ) -> str:
        """An RS256 JWT from the built-in issuer, accepted by the default provider."""
        aud = audience or "https://iam.googleapis.com/" + self._default_provider().resource
        return self.issuer.mint(subject, aud, lifetime, **claims)

    def write_subject_token_file(
        self, path: str, subject: str = DEFAULT_SUBJECT, lifetime: int = 3600
    ) -> str:
        target = Path(path)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(self.mint_subject_token(subject, lifetime=lifetime))
        tmp.replace(target)  # google-auth may read the file at any moment: never show it half-written
        return str(target)

    def credential_config(
        self, subject_token_file: str, service_account: str | None = None
    ) -> dict[str, Any]:
        """The ``external_account`` dict for ``google.auth.identity_pool.Credentials.from_info``."""
        config: dict[str, Any] = {
            "type": "external_account",
            "audience": self.default_audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": self.sts_url,
            "credential_source": {"file": subject_token_file, "format": {"type": "text"}},
            "universe_domain": EMULATOR_UNIVERSE,
        }
        if service_account:
            config["service_account_impersonation_url"] = (
                f"http://127.0.0.1:{self.sts_port}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"
            )
        return config

    # -- faults and accounting -------------------------------------------------------------------------------

    def sts_exchanges(self) -> list[dict[str, Any]]:
        return list(self.federation.exchanges)

    def reset(self) -> None:
        """Forget keys, bindings, tokens, service accounts, extra providers, faults and counters."""
        self.federation.reset()
        self.faults.reset()
        self._register_default_provider()
        self.store.reset()  # last: it saves the (now empty) state

    def settings(self) -> dict[str, Any]:
        return {
            "GCP_KMS_ENDPOINT": self.endpoint,
            "GCP_STS_TOKEN_URL": self.sts_url,
            "GCP_UNIVERSE_DOMAIN": EMULATOR_UNIVERSE,
            "GCP_WORKLOAD_AUDIENCE": self.default_audience,
            "GCP_WORKLOAD_SUBJECT": DEFAULT_SUBJECT,
            "GCP_PRINCIPAL": self.principal(),
            "GCP_EMULATOR_ADMIN_URL": self.admin_url,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.gcp_kms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=28450, help="gRPC port on 127.0.0.1 (0: a free one)")
    parser.add_argument(
        "--sts-port", type=int, default=28451, help="STS/admin HTTP port on 127.0.0.1 (0: a free one)"
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="RING/KEY",
        help="create key ring RING with key KEY granted to the default principal (repeatable)",
    )
    parser.add_argument(
        "--subject-token-file",
        help="write (and keep refreshing) a subject token for the default subject here",
    )
    parser.add_argument(
        "--issuer", default=DEFAULT_ISSUER, help="iss of the built-in workload identity issuer"
    )
    parser.add_argument("--settings-file", help="also write the settings JSON to this file")
    parser.add_argument("--state-dir", help="keep keys and bindings in this directory across restarts")
    args = parser.parse_args(argv)

    emulator = GcpKmsEmulator(
        port=args.port, sts_port=args.sts_port, issuer=args.issuer, state_dir=args.state_dir
    )
    emulator.start()
    for spec in args.key:
        ring, _, key = spec.partition("/")
        name = f"projects/{emulator.project}/locations/global/keyRings/{ring}/cryptoKeys/{key or 'kek'}"
        if name not in emulator.store.keys:  # kept from an earlier run with --state-dir
            emulator.create_key(ring, key or "kek")
    settings = emulator.settings()
    if args.subject_token_file:
        emulator.write_subject_token_file(args.subject_token_file)
        settings["GCP_SUBJECT_TOKEN_FILE"] = args.subject_token_file
        settings["GCP_CREDENTIAL_CONFIG"] = emulator.credential_config(args.subject_token_file)
    text = json.dumps(settings, indent=2)
    print(text, flush=True)
    if args.settings_file:
        Path(args.settings_file).write_text(text)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Subject tokens live an hour; rewrite the file well before that so a long `make run` keeps working.
    while not stop.wait(900):
        if args.subject_token_file:
            emulator.write_subject_token_file(args.subject_token_file)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
