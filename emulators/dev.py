"""All three cloud emulators for a developer's machine, and the Kodori settings that point at them.

``start_all(state_dir)`` starts the AWS (moto behind the enforcing proxy), Azure Key Vault + Entra and GCP
Cloud KMS + STS emulators in this process on their fixed loopback ports, and returns the environment
variables Kodori's web and worker processes need. `make run` calls it; ``python manage.py run_emulators``
runs it on its own and prints the variables. The ports are fixed because key identifiers registered against
the emulators (Azure key URLs) contain them, and every emulator keeps its keys in ``state_dir`` across
restarts: ``aws/state.json`` (keys with their material, aliases and IAM roles, see ``aws_persist``),
``azure/`` and ``gcp/``.

The demo tenants' cloud setup: ``provision_demo_tenant`` gives a tenant what a customer creates for Kodori in
AWS (a key ``alias/kodori-demo-<slug>`` and a role ``kodori-demo-<slug>`` whose trust policy demands the
tenant's Kodori-generated ExternalId and which may Encrypt, Decrypt and DescribeKey with that key). The
ExternalId lives in Kodori's database, which exists only after the emulators started, so `make run` calls it
after ``seed_demo``, through ``manage.py emulator_demo`` and the AWS emulator's admin API
(``EmulatorControl``).
Azure and GCP each have one demo key every tenant may use. ``demo_key_lines`` prints what to paste into the
registration forms.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the emulators are imported where they start: a management command needs none of them
    from .aws_persist import PersistentAwsKmsEmulator
    from .gcp_kms import GcpKmsEmulator

# Fixed ports below Linux's ephemeral range (32768-60999), so an outgoing connection never holds them first.
AWS_PORT = 28452
AZURE_VAULT_PORT = 28443  # azure_keyvault.DEFAULT_VAULT_PORT
GCP_PORT, GCP_STS_PORT = 28450, 28451
GCP_DEMO_PROJECT = "kodori-dev"  # gcp_kms.DEFAULT_PROJECT
GCP_DEMO_RING, GCP_DEMO_KEY = "kodori-demo", "tenant-key"
AWS_DEMO_PREFIX = "kodori-demo-"  # role kodori-demo-<slug>, key alias/kodori-demo-<slug>
# Key URLs are registered with a real Key Vault host; Kodori sends their path to the emulator
# (KODORI_AZURE_VAULT_ENDPOINT), so the host only has to pass Kodori's identifier checks.
AZURE_DEMO_VAULT_URL = "https://kodori-emulator.vault.azure.net"
_TOKEN_REFRESH_SECONDS = 900


@dataclass
class DevEmulators:
    """Running emulators: ``env`` for Kodori's processes, ``summary`` lines for people, ``stop()``."""

    env: dict[str, str]
    summary: list[str]
    fixed_ports: bool = True
    aws: PersistentAwsKmsEmulator | None = None
    azure: Any = None  # azure_keyvault.DevEnvironment
    gcp: GcpKmsEmulator | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def start_all(state_dir: Path, *, fixed_ports: bool = True) -> DevEmulators:
    """Start the three emulators; ``fixed_ports=False`` (tests) takes free ports instead of the fixed ones."""
    state_dir.mkdir(parents=True, exist_ok=True)
    running = DevEmulators(env={}, summary=[], fixed_ports=fixed_ports)
    try:
        _start_aws(running, state_dir / "aws")
        _start_azure(running, state_dir / "azure")
        _start_gcp(running, state_dir / "gcp")
    except BaseException:
        running.stop()
        raise
    if running.aws is not None:
        running.aws.warm_up()
    return running


def _start_aws(running: DevEmulators, state: Path) -> None:
    from .aws_persist import PersistentAwsKmsEmulator

    aws = PersistentAwsKmsEmulator(state / "state.json", port=AWS_PORT if running.fixed_ports else 0)
    aws.start()
    running.aws = aws
    running._stops.append(aws.stop)
    settings = aws.settings()
    running.env.update(
        {
            "KODORI_AWS_ENDPOINT_URL": settings["AWS_ENDPOINT_URL"],
            "AWS_DEFAULT_REGION": settings["AWS_REGION"],
            # Kodori's own (emulated) AWS identity; in production it comes from the instance or pod role.
            "AWS_ACCESS_KEY_ID": settings["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": settings["AWS_SECRET_ACCESS_KEY"],
            "KODORI_EMULATOR_AWS_ADMIN_URL": settings["AWS_EMULATOR_ADMIN_URL"],
            "KODORI_AWS_PRINCIPAL_ARN": settings["KODORI_AWS_PRINCIPAL_ARN"],
        }
    )
    running.summary.append(
        f"AWS KMS + STS   {settings['AWS_ENDPOINT_URL']}  (Kodori is {settings['KODORI_AWS_PRINCIPAL_ARN']})"
    )


def _start_azure(running: DevEmulators, state: Path) -> None:
    from .azure_keyvault import start_for_development as start_azure

    azure = start_azure(state) if running.fixed_ports else start_azure(state, vault_port=0, entra_port=0)
    running.azure = azure
    running._stops.append(azure.stop)
    s = azure.settings
    running.env.update(
        {
            "KODORI_AZURE_CLIENT_ID": s["client_id"],
            "KODORI_AZURE_FEDERATED_TOKEN_FILE": s["federated_token_file"],
            "KODORI_AZURE_VAULT_ENDPOINT": s["vault_url"],
            "KODORI_AZURE_AUTHORITY_HOST": s["authority"],
            "KODORI_AZURE_CA_BUNDLE": s["ca_path"],
            "KODORI_EMULATOR_AZURE_DIRECTORY_ID": s["directory_id"],
            "KODORI_EMULATOR_AZURE_KEY_ID": s["key_id"],
            "KODORI_EMULATOR_AZURE_KEY_URL": azure_key_url(s["key_id"]),
        }
    )
    running.summary.append(
        f"Azure Key Vault {s['vault_url']}  (directory {s['directory_id']}, key {s['key_id']})"
    )


def _start_gcp(running: DevEmulators, state: Path) -> None:
    from .gcp_kms import GcpKmsEmulator

    state.mkdir(parents=True, exist_ok=True)
    ports = (GCP_PORT, GCP_STS_PORT) if running.fixed_ports else (0, 0)
    gcp = GcpKmsEmulator(port=ports[0], sts_port=ports[1], state_dir=str(state)).start()
    running.gcp = gcp
    running._stops.append(gcp.stop)
    key = f"projects/{gcp.project}/locations/global/keyRings/{GCP_DEMO_RING}/cryptoKeys/{GCP_DEMO_KEY}"
    if key not in gcp.store.keys:
        gcp.create_key(GCP_DEMO_RING, GCP_DEMO_KEY)
    token_file = state / "subject-token"
    gcp.write_subject_token_file(str(token_file))
    stopping = threading.Event()

    def refresh() -> None:
        # Subject tokens live an hour; a long `make run` must keep working.
        while not stopping.wait(_TOKEN_REFRESH_SECONDS):
            gcp.write_subject_token_file(str(token_file))

    threading.Thread(target=refresh, name="gcp-subject-token", daemon=True).start()
    running._stops.append(stopping.set)
    s = gcp.settings()
    running.env.update(
        {
            "KODORI_GCP_KMS_ENDPOINT": s["GCP_KMS_ENDPOINT"],
            "KODORI_GCP_STS_URL": s["GCP_STS_TOKEN_URL"],
            "KODORI_GCP_UNIVERSE_DOMAIN": s["GCP_UNIVERSE_DOMAIN"],
            "KODORI_GCP_WIF_AUDIENCE": s["GCP_WORKLOAD_AUDIENCE"],
            "KODORI_GCP_SUBJECT_TOKEN_FILE": str(token_file),
            "GOOGLE_CLOUD_PROJECT": s["GOOGLE_CLOUD_PROJECT"],
            "KODORI_EMULATOR_GCP_KEY": key,
            "KODORI_GCP_PRINCIPAL": s["GCP_PRINCIPAL"],
            "KODORI_EMULATOR_GCP_ADMIN_URL": s["GCP_EMULATOR_ADMIN_URL"],
        }
    )
    running.summary.append(f"GCP Cloud KMS   {s['GCP_KMS_ENDPOINT']}  (key {key})")


def azure_key_url(emulator_key_id: str) -> str:
    """The key URL to register: the emulator's key id on a real Key Vault host (``AZURE_DEMO_VAULT_URL``)."""
    return AZURE_DEMO_VAULT_URL + urlsplit(emulator_key_id).path


# --- The demo tenants' keys ---------------------------------------------------------------------------------


def aws_demo_name(slug: str) -> str:
    """The demo role's name and the demo key's alias name (after ``alias/``) for a tenant."""
    return AWS_DEMO_PREFIX + slug


def provision_demo_tenant(aws: PersistentAwsKmsEmulator, slug: str, external_id: str) -> dict[str, str]:
    """In-process form of what ``manage.py emulator_demo`` asks the running AWS emulator for."""
    return aws.provision_tenant(aws_demo_name(slug), external_id)


@dataclass(frozen=True)
class DemoTenantKeys:
    """What one tenant pastes into the AWS form: ``aws`` has key_arn, alias_arn, role_arn and region."""

    slug: str
    name: str
    aws: dict[str, str]


@dataclass(frozen=True)
class DemoKeys:
    tenants: list[DemoTenantKeys]
    azure_key_url: str
    azure_directory_id: str
    gcp_key: str


def demo_key_lines(keys: DemoKeys) -> list[str]:
    """What to paste into /encryption's register forms, per cloud; each value is the last word of a line."""
    everyone = " and ".join(t.name for t in keys.tenants) or "every tenant"
    lines = ["Keys in the local emulators, to paste on /encryption > Register a key (see docs/emulators.md):"]
    lines.append("  AWS KMS (one key and role per tenant; Kodori adds the tenant's ExternalId itself)")
    for tenant in keys.tenants:
        lines += [
            f"    {tenant.name}:",
            f"      KMS key ARN       {tenant.aws['key_arn']}",
            f"      or alias ARN      {tenant.aws['alias_arn']}",
            f"      Role ARN          {tenant.aws['role_arn']}",
            f"      Region            {tenant.aws['region']}",
        ]
    lines += [
        f"  Azure Key Vault (the same key for {everyone})",
        f"      Key URL           {keys.azure_key_url}",
        f"      Directory id      {keys.azure_directory_id}",
        f"  GCP Cloud KMS (the same key for {everyone})",
        f"      CryptoKey         {keys.gcp_key}",
        "  Disable or revoke them in the emulator: python manage.py emulator_key --help",
    ]
    return lines


# --- The admin APIs, from another process ------------------------------------------------------------------


class EmulatorError(Exception):
    """An emulator refused an admin call, or is not running."""


class EmulatorControl:
    """The running emulators' admin APIs, for management commands in another process than the emulators.

    Addresses come from the environment `make run` gives its children (``KODORI_EMULATOR_*_ADMIN_URL``,
    ``KODORI_AZURE_VAULT_ENDPOINT``, ``KODORI_AZURE_CA_BUNDLE``), otherwise from the fixed ports and from
    ``<state_dir>/azure/settings.json``, so a command run in another terminal reaches `make run`'s emulators.
    """

    def __init__(self, state_dir: Path, env: Mapping[str, str] | None = None, timeout: float = 10) -> None:
        self.env = os.environ if env is None else env
        self.state_dir = state_dir
        self.timeout = timeout
        self.aws_admin = (
            self.env.get("KODORI_EMULATOR_AWS_ADMIN_URL") or f"http://127.0.0.1:{AWS_PORT}/_emulator"
        )
        self.gcp_admin = (
            self.env.get("KODORI_EMULATOR_GCP_ADMIN_URL") or f"http://127.0.0.1:{GCP_STS_PORT}/_emulator"
        )

    def _azure_settings(self) -> dict[str, Any]:
        path = self.state_dir / "azure" / "settings.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}

    def _call(self, url: str, body: Any, context: ssl.SSLContext | None = None, method: str = "POST") -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback admin URLs only
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            opened = urllib.request.urlopen(request, timeout=self.timeout, context=context)  # noqa: S310
            with opened as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            raise EmulatorError(f"{url}: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            raise EmulatorError(
                f"{url}: {err} (is `make run` or `manage.py run_emulators` running?)"
            ) from None

    def aws(self, method: str, **kwargs: Any) -> Any:
        return self._call(f"{self.aws_admin}/{method}", kwargs)["result"]

    def gcp(self, method: str, **kwargs: Any) -> Any:
        return self._call(f"{self.gcp_admin}/{method}", kwargs)["result"]

    def azure(self, path: str, body: Any = None, method: str = "POST") -> Any:
        """``/_emulator/<path>`` of the vault (HTTPS, trusting the emulators' own CA)."""
        saved = self._azure_settings()
        vault = self.env.get("KODORI_AZURE_VAULT_ENDPOINT") or saved.get(
            "vault_url", f"https://127.0.0.1:{AZURE_VAULT_PORT}"
        )
        ca = self.env.get("KODORI_AZURE_CA_BUNDLE") or saved.get("ca_path")
        if not ca:
            raise EmulatorError(
                f"no Azure emulator CA: {self.state_dir / 'azure' / 'settings.json'} is missing"
            )
        context = ssl.create_default_context(cafile=ca)
        return self._call(f"{vault}/_emulator/{path.lstrip('/')}", body, context, method)

    def azure_client_id(self) -> str:
        return self.env.get("KODORI_AZURE_CLIENT_ID") or str(self._azure_settings()["client_id"])

    def demo_keys(self, tenants: list[tuple[str, str, str]]) -> DemoKeys:
        """Provision each ``(slug, name, external_id)`` in the AWS emulator; gather every cloud's keys."""
        provisioned = [
            DemoTenantKeys(
                slug, name, self.aws("provision_tenant", name=aws_demo_name(slug), external_id=ext)
            )
            for slug, name, ext in tenants
        ]
        saved = self._azure_settings()
        azure_key = self.env.get("KODORI_EMULATOR_AZURE_KEY_ID") or str(saved.get("key_id", ""))
        directory = self.env.get("KODORI_EMULATOR_AZURE_DIRECTORY_ID") or str(saved.get("directory_id", ""))
        gcp_key = self.env.get("KODORI_EMULATOR_GCP_KEY") or (
            f"projects/{GCP_DEMO_PROJECT}/locations/global/keyRings/{GCP_DEMO_RING}/cryptoKeys/{GCP_DEMO_KEY}"
        )
        return DemoKeys(provisioned, azure_key_url(azure_key) if azure_key else "", directory, gcp_key)
