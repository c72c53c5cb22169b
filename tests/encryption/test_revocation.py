"""Revocation at the provider seals the tenant within one re-verify interval even when nobody touches a blob,
and restoring access unseals it: a real Celery worker and beat, the AWS emulator, short intervals."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from emulators.dev import DevEmulators
from encryption import services
from encryption.models import WrapMethod
from tenants.models import Tenant
from tests.conftest import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

INTERVAL = 2.0  # seconds between re-verifications (default 300)


@pytest.fixture
def short_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KODORI_REVERIFY_INTERVAL_SECONDS", str(INTERVAL))
    monkeypatch.setenv("KODORI_TKV_CACHE_TTL_CUSTOMER", "1")


@pytest.fixture
def beat(short_intervals: None, worker_process: Any, tmp_path: Path) -> Any:
    env = subprocess_env()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "kodori", "beat", "--loglevel=WARNING",
         "--schedule", str(tmp_path / "beat-schedule")],
        env=env,
    )  # fmt: skip
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


def _wait_for(tenant: Tenant, sealed: bool, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        tenant.refresh_from_db()
        if tenant.is_sealed == sealed:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"tenant sealed={tenant.is_sealed} after {within:.0f}s, wanted sealed={sealed}")


def test_revoking_the_role_seals_and_restoring_it_unseals(
    clouds: DevEmulators, short_intervals: None, beat: Any, tenant: Tenant, owner: Any
) -> None:
    assert clouds.aws is not None
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    key_arn = clouds.aws.create_key(alias="alias/revocable")
    role_arn = clouds.aws.create_tenant_role("revocable", services.external_id_for(tenant), key_arn)
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    services.verify_key(key.pk)

    clouds.aws.revoke_role_access("revocable")
    # Within the cache TTL (1 s) plus one re-verify interval, with slack for the worker on a busy machine.
    took = _wait_for(tenant, sealed=True, within=1 + INTERVAL + 20)
    assert "denied" in tenant.seal_reason.lower()
    clouds.aws.restore_role_access("revocable")
    _wait_for(tenant, sealed=False, within=INTERVAL + 20)
    assert took < 1 + INTERVAL + 20
