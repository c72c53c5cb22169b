"""The emulators `make run` starts: Kodori's providers reach a key in each cloud with the printed settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from emulators.dev import DevEmulators, start_all
from encryption.providers import KeyContext
from encryption.providers import aws as aws_provider
from encryption.providers import azure as azure_provider
from encryption.providers.aws import AwsKeyProvider
from encryption.providers.azure import AzureKeyProvider
from encryption.providers.gcp import GcpKeyProvider

CTX = KeyContext(tenant_id=42, key_version=1)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevEmulators]:
    emulators = start_all(tmp_path_factory.mktemp("emulators"), fixed_ports=False)
    yield emulators
    emulators.stop()


@pytest.fixture
def kodori_env(running: DevEmulators, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    empty = Path(os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    kodori_settings: dict[str, Any] = {}
    for name, value in running.env.items():
        if name.startswith("KODORI_"):
            kodori_settings[name] = value
        else:
            monkeypatch.setenv(name, value)
    with override_settings(**kodori_settings):
        # Clients and role sessions cached by earlier tests belong to other emulators (other credentials).
        azure_provider.reset_clients()
        aws_provider.reset_clients()
        yield running.env
    azure_provider.reset_clients()
    aws_provider.reset_clients()


def test_it_prints_settings_for_all_three_clouds(running: DevEmulators) -> None:
    for name in ("KODORI_AWS_ENDPOINT_URL", "KODORI_AZURE_VAULT_ENDPOINT", "KODORI_GCP_KMS_ENDPOINT"):
        assert running.env[name].split("//")[-1].startswith("127.0.0.1:")
    assert len(running.summary) == 3


def test_kodori_reaches_the_azure_demo_key(running: DevEmulators, kodori_env: dict[str, str]) -> None:
    path = kodori_env["KODORI_EMULATOR_AZURE_KEY_ID"].split("/keys/", 1)[1]
    provider = AzureKeyProvider(
        f"https://kodori-demo.vault.azure.net/keys/{path}", kodori_env["KODORI_EMULATOR_AZURE_DIRECTORY_ID"]
    )
    assert provider.unwrap(provider.wrap(b"k" * 32, CTX), CTX) == b"k" * 32


def test_kodori_reaches_the_gcp_demo_key(running: DevEmulators, kodori_env: dict[str, str]) -> None:
    provider = GcpKeyProvider(kodori_env["KODORI_EMULATOR_GCP_KEY"], tenant_id=42)
    assert provider.unwrap(provider.wrap(b"g" * 32, CTX), CTX) == b"g" * 32


def test_kodori_reaches_an_aws_tenant_key_through_its_role(
    running: DevEmulators, kodori_env: dict[str, str]
) -> None:
    assert running.aws is not None
    key_arn = running.aws.create_key(alias="alias/dev-test")
    role_arn = running.aws.create_tenant_role("dev-test-role", "ext-id-for-tenant-42", key_arn)
    provider = AwsKeyProvider(key_arn, tenant_id=42, role_arn=role_arn, external_id="ext-id-for-tenant-42")
    assert provider.unwrap(provider.wrap(b"a" * 32, CTX), CTX) == b"a" * 32


def test_the_management_command_prints_exports(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_emulators", "--free-ports", "--state-dir", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DJANGO_ENV": "test"},
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert first.startswith("export ") and "=" in first
    finally:
        proc.terminate()
        proc.wait(timeout=20)
