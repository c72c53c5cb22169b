"""`make run`'s demo data and emulator set-up: cloud KMS switched on (audited, once), keys provisioned and
printed after the seed, playground defaults that make revocation visible quickly."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from audit.models import AuditEvent, EventType
from emulators.dev import DevEmulators, start_all
from kodori.devtools import run
from kodori.devtools.servers import free_port
from tenants.management.commands.seed_demo import CLOUD_KMS_REASON
from tenants.models import Tenant
from tenants.services import set_cloud_kms_enabled

PASSWORD = "demo-password-123"
SWITCHES = [EventType.TENANT_CLOUD_KMS_ENABLED, EventType.TENANT_CLOUD_KMS_DISABLED]


def seed() -> None:
    call_command("seed_demo", password=PASSWORD, stdout=io.StringIO())


def switch_events(slug: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant__slug=slug, type__in=SWITCHES).order_by("seq"))


def test_seed_switches_cloud_kms_on_for_both_demo_tenants_once_and_audited(db: None) -> None:
    seed()
    for slug in ("acme", "globex"):
        assert Tenant.objects.get(slug=slug).cloud_kms_enabled
        [event] = switch_events(slug)
        assert event.type == EventType.TENANT_CLOUD_KMS_ENABLED
        assert event.payload["reason"] == CLOUD_KMS_REASON
        assert event.is_system
    seed()
    assert [len(switch_events(slug)) for slug in ("acme", "globex")] == [1, 1]


def test_seed_leaves_a_tenant_support_switched_off_as_it_is(db: None) -> None:
    seed()
    globex = Tenant.objects.get(slug="globex")
    set_cloud_kms_enabled(globex, False, actor=None, reason="showing the ask-support page")
    seed()
    globex.refresh_from_db()
    assert not globex.cloud_kms_enabled
    assert len(switch_events("globex")) == 2


def test_make_run_defaults_to_quick_probes_under_the_emulators(monkeypatch: pytest.MonkeyPatch) -> None:
    import emulators.dev

    monkeypatch.setattr(
        emulators.dev, "start_all", lambda *a, **k: DevEmulators(env={"KODORI_X": "1"}, summary=[])
    )
    monkeypatch.delenv("KODORI_EMULATORS", raising=False)
    env: dict[str, str] = {"KODORI_TKV_CACHE_TTL_CUSTOMER": "5"}
    run.Runner().start_emulators(env)
    assert env == {
        "KODORI_X": "1",
        "KODORI_REVERIFY_INTERVAL_SECONDS": "30",
        "KODORI_TKV_CACHE_TTL_CUSTOMER": "5",  # the environment wins
    }

    monkeypatch.setenv("KODORI_EMULATORS", "0")
    env = {}
    run.Runner().start_emulators(env)
    assert env == {}


@pytest.fixture
def keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state" / "emulators" / "demo-keys.txt"
    monkeypatch.setattr(run, "DEMO_KEYS_FILE", path)
    return path


def test_prepare_database_seeds_then_provisions_and_keeps_what_to_print(
    transactional_db: None, keys_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_all(tmp_path / "emulators", fixed_ports=False)
    try:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        run.prepare_database(PASSWORD)
    finally:
        running.stop()
    text = keys_file.read_text()
    assert Tenant.objects.get(slug="acme").cloud_kms_enabled
    for expected in (
        "arn:aws:kms:us-east-1:123456789012:alias/kodori-demo-acme",
        "arn:aws:iam::123456789012:role/kodori-demo-globex",
        "https://kodori-emulator.vault.azure.net/keys/kodori-demo/",
        "projects/kodori-dev/locations/global/keyRings/kodori-demo/cryptoKeys/tenant-key",
    ):
        assert expected in text


def test_prepare_database_goes_on_when_the_emulators_do_not_answer(
    transactional_db: None, keys_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("KODORI_EMULATOR_AWS_ADMIN_URL", f"http://127.0.0.1:{free_port()}/_emulator")
    run.prepare_database(PASSWORD)
    assert not keys_file.exists()
    assert "were not provisioned" in capsys.readouterr().err
    assert Tenant.objects.filter(slug__in=["acme", "globex"]).count() == 2
