"""Signed checkpoints: the periodic task, the deployment key, its rotation, and the settings that hold it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks
from django.core.management import call_command

from audit import chain, services, signing, tasks
from audit.models import Checkpoint
from audit.verify_bundle import b64decode, checkpoint_message
from tenants.models import Tenant

from .conftest import fill, raw

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


def new_key() -> tuple[str, str]:
    return signing.generate_private_key()


def test_the_task_signs_every_head_that_moved(tenant: Tenant, other_tenant: Tenant) -> None:
    fill(tenant, 3)
    fill(other_tenant, 1)
    assert tasks.sign_checkpoints() == 2
    assert tasks.sign_checkpoints() == 0  # nothing moved: nothing to sign
    fill(tenant, 2)
    assert tasks.sign_checkpoints() == 1
    assert list(Checkpoint.objects.for_tenant(tenant).order_by("seq").values_list("seq", flat=True)) == [3, 5]


def test_a_checkpoint_signs_tenant_seq_hash_and_time(tenant: Tenant) -> None:
    head = fill(tenant, 2)[-1]
    checkpoint = services.sign_checkpoint(tenant)
    assert checkpoint is not None
    assert (checkpoint.seq, checkpoint.hash, checkpoint.key_id) == (
        head.seq,
        head.hash,
        signing.current_key_id(),
    )
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    message = checkpoint_message(tenant.pk, head.seq, head.hash, chain.format_time(checkpoint.signed_at))
    Ed25519PublicKey.from_public_bytes(signing.public_key()).verify(b64decode(checkpoint.signature), message)


def test_it_never_signs_a_broken_chain(tenant: Tenant, caplog: pytest.LogCaptureFixture) -> None:
    fill(tenant, 3)
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    assert services.sign_checkpoint(tenant) is None
    assert tasks.sign_checkpoints() == 0
    assert not Checkpoint.objects.exists()
    assert "not signing tenant acme at #3" in caplog.text


def test_the_periodic_full_verification_reports_breaks(tenant: Tenant, other_tenant: Tenant) -> None:
    fill(tenant, 2)
    fill(other_tenant, 2)
    raw("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq = 1", [other_tenant.pk])
    assert tasks.verify_chains() == {str(tenant.pk): None, str(other_tenant.pk): 1}


def test_the_beat_schedule_runs_both_tasks() -> None:
    tasks_scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"audit.tasks.sign_checkpoints", "audit.tasks.verify_chains"} <= tasks_scheduled


def test_checkpoints_of_a_retired_key_still_verify_after_rotation(tenant: Tenant, settings: Any) -> None:
    old_private, old_public = new_key()
    settings.AUDIT_SIGNING_KEY = old_private
    fill(tenant, 2)
    services.sign_checkpoint(tenant)
    # Rotate: a new private key, and the old public key named as a previous one.
    settings.AUDIT_SIGNING_KEY, _ = new_key()
    settings.AUDIT_PREVIOUS_PUBLIC_KEYS = [old_public]
    fill(tenant, 2)
    assert services.sign_checkpoint(tenant) is not None
    status = chain.verify(tenant, full=True)
    assert status.ok, status.broken
    assert len({cp.key_id for cp in Checkpoint.objects.all()}) == 2
    # Forgetting the previous key makes the old checkpoints unverifiable, and Kodori stops signing.
    settings.AUDIT_PREVIOUS_PUBLIC_KEYS = []
    status = chain.verify(tenant, full=True)
    assert (
        status.broken is not None and "checkpoint #2 is not valid for a trusted key" in status.broken.reason
    )


def test_the_development_key_is_derived_from_secret_key(settings: Any) -> None:
    settings.AUDIT_SIGNING_KEY = ""
    first = signing.public_key_b64()
    settings.SECRET_KEY = "another-secret-key-for-another-checkout-0123456789"
    assert signing.public_key_b64() != first


def test_an_explicit_key_is_used(settings: Any) -> None:
    private, public = new_key()
    settings.AUDIT_SIGNING_KEY = private
    assert signing.public_key_b64() == public


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_fails_the_system_checks(settings: Any, value: str) -> None:
    settings.AUDIT_SIGNING_KEY = value
    errors = [m for m in run_checks() if m.id == "audit.E001"]
    assert errors and "32-byte Ed25519 private key" in errors[0].msg


def test_a_malformed_previous_key_fails_the_system_checks(settings: Any) -> None:
    settings.AUDIT_PREVIOUS_PUBLIC_KEYS = ["@@@"]
    assert [m for m in run_checks() if m.id == "audit.E001"]


def test_the_key_generator_prints_a_usable_key(settings: Any) -> None:
    out = StringIO()
    call_command("generate_audit_signing_key", stdout=out)
    first = out.getvalue().splitlines()[0]
    assert first.startswith("AUDIT_SIGNING_KEY=")
    settings.AUDIT_SIGNING_KEY = first.split("=", 1)[1]
    assert signing.public_key_b64() in out.getvalue()


def test_the_sign_command_signs_now(tenant: Tenant) -> None:
    fill(tenant, 1)
    out = StringIO()
    call_command("sign_audit_checkpoints", stdout=out)
    assert "signed 1 checkpoint(s)" in out.getvalue()


PRODUCTION = {
    "DJANGO_ENV": "production",
    "DATABASE_URL": "postgres://kodori:pw@db.internal:5432/kodori",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "a-production-secret-key-with-plenty-of-entropy-0123456789",
    "AUTH_SECRET": "a-long-random-auth-secret-for-key-derivation-0123456789",
    "ALLOWED_HOSTS": "kodori.example.com",
}


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.startswith(("KODORI_", "AUDIT_"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env={**clean, **env}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_production_refuses_to_start_without_a_signing_key() -> None:
    result = _check(PRODUCTION)
    assert result.returncode != 0
    assert "AUDIT_SIGNING_KEY must be set when DJANGO_ENV=production" in result.stderr


def test_production_accepts_a_signing_key() -> None:
    result = _check({**PRODUCTION, "AUDIT_SIGNING_KEY": new_key()[0]})
    assert "AUDIT_SIGNING_KEY" not in result.stderr, result.stderr


def _sign_command() -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("sign_audit_checkpoints", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_the_sign_command_refuses_a_broken_chain_and_says_so(tenant: Tenant, other_tenant: Tenant) -> None:
    fill(tenant, 3)
    fill(other_tenant, 2)
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    code, out, err = _sign_command()
    assert code == 1
    assert "globex: signed #2" in out and "signed 1 checkpoint(s)" in out
    assert "acme: NOT signed, the chain does not verify: chain broken at #2: hash of #2" in err
    assert not Checkpoint.objects.for_tenant(tenant).exists()


def test_a_repaired_chain_is_not_signed_until_the_break_is_acknowledged(tenant: Tenant) -> None:
    from audit.models import AcknowledgedVia, ChainBreak

    fill(tenant, 3)
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    assert services.sign_checkpoint(tenant) is None
    raw("UPDATE audit_auditevent SET actor_name = 'system' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    assert chain.verify(tenant, full=True, witness_mode=chain.WITNESS_NONE).breaks  # put back, still open
    result = services.sign_head(tenant)
    assert result.checkpoint is None and "chain broken at #2" in result.refused
    assert _sign_command()[0] == 1
    services.acknowledge_break(
        ChainBreak.objects.get(tenant=tenant), reason="restored", via=AcknowledgedVia.OPERATOR, operator="ops"
    )
    code, out, _ = _sign_command()
    assert code == 0 and "acme: signed #4" in out  # #4 is the acknowledgement
