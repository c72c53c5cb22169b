"""All three cloud emulators for a developer's machine, and the Kodori settings that point at them.

``start_all(state_dir)`` starts the AWS (moto behind the enforcing proxy), Azure Key Vault + Entra and GCP
Cloud KMS + STS emulators in this process on their fixed loopback ports, and returns the environment
variables Kodori's web and worker processes need. `make run` calls it; ``python manage.py run_emulators``
runs it on its own and prints the variables. The ports are fixed because key identifiers registered against
the emulators (Azure key URLs) contain them, and `make run` keeps Azure and GCP keys in
``.kodori/emulators`` across restarts. AWS keys live in moto's memory and are new on every start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aws import AwsKmsEmulator
from .azure_keyvault import start_for_development as start_azure
from .gcp_kms import GcpKmsEmulator

AWS_PORT = 48452
GCP_PORT, GCP_STS_PORT = 48450, 48451
GCP_DEMO_RING, GCP_DEMO_KEY = "kodori-demo", "tenant-key"
_TOKEN_REFRESH_SECONDS = 900


@dataclass
class DevEmulators:
    """Running emulators: ``env`` for Kodori's processes, ``summary`` lines for people, ``stop()``."""

    env: dict[str, str]
    summary: list[str]
    fixed_ports: bool = True
    aws: AwsKmsEmulator | None = None
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
        _start_aws(running)
        _start_azure(running, state_dir / "azure")
        _start_gcp(running, state_dir / "gcp")
    except BaseException:
        running.stop()
        raise
    return running


def _start_aws(running: DevEmulators) -> None:
    aws = AwsKmsEmulator(port=AWS_PORT if running.fixed_ports else 0).start()
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
        }
    )
    running.summary.append(
        f"Azure Key Vault {s['vault_url']}  (directory {s['directory_id']}, key {s['key_id']})"
    )


def _start_gcp(running: DevEmulators, state: Path) -> None:
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
