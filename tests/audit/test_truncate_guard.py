"""The database guard has no way around it in production; only the test database gets a TRUNCATE door.

Any role can SET a custom setting, so the production function (migration 0008) must not read one. The test
runner's variant is installed after ``migrate`` only when ``DJANGO_ENV=test``; ``manage.py check --database``
fails in production if a database holds it, or if a guard trigger is off. Chain breaks are guarded as well:
never deleted, and changed only by acknowledging them once.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.checks import run_checks
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import checks, truncate_bypass
from audit.models import ChainBreak
from tenants.models import Tenant

from .conftest import fill

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
TABLES = ("audit_auditevent", "audit_checkpoint", "audit_chainbreak")
guard_migration = importlib.import_module("audit.migrations.0008_truncate_guard")


def function_source() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'audit_refuse_change'")
        return str(cursor.fetchone()[0])


def install_production_guard() -> None:
    """What ``migrate`` leaves in a production database (rolled back with the test)."""
    with connection.cursor() as cursor:
        cursor.execute(guard_migration.REFUSE)


def refused(sql: str) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql)
    return str(caught.value)


@pytest.fixture
def a_break(tenant: Tenant) -> ChainBreak:
    now = timezone.now()
    return ChainBreak.objects.create(
        tenant=tenant, first_bad_seq=2, last_bad_seq=2, kind="edited", detail="d", reason="found",
        found_at=now, found_by="test", last_seen_at=now,
    )  # fmt: skip


def test_the_production_guard_refuses_truncate_whatever_the_session_sets(
    tenant: Tenant, a_break: Any
) -> None:
    fill(tenant, 2)
    install_production_guard()
    assert truncate_bypass.BYPASS_SETTING not in function_source()
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL {truncate_bypass.BYPASS_SETTING} = 'on'")  # what any role may do
    for table in TABLES:
        assert "append-only" in refused(f"TRUNCATE {table} CASCADE")
    assert "append-only" in refused("DELETE FROM audit_auditevent")
    assert "append-only" in refused("UPDATE audit_auditevent SET actor_name = 'x'")


def test_the_test_database_has_the_door_and_only_for_truncate(tenant: Tenant) -> None:
    assert truncate_bypass.BYPASS_SETTING in function_source()  # installed after migrate, DJANGO_ENV=test
    fill(tenant, 1)
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL {truncate_bypass.BYPASS_SETTING} = 'on'")
    assert "append-only" in refused("DELETE FROM audit_auditevent")


def test_the_door_is_installed_only_when_django_env_is_test(settings: Any) -> None:
    install_production_guard()
    settings.DJANGO_ENV = "production"
    truncate_bypass.install_for_tests()
    assert truncate_bypass.BYPASS_SETTING not in function_source()
    settings.DJANGO_ENV = "test"
    truncate_bypass.install_for_tests()
    assert truncate_bypass.BYPASS_SETTING in function_source()


def test_a_production_process_does_not_connect_the_door() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KODORI_", "AUDIT_", "DJANGO_"))}
    env.update({
        "DJANGO_ENV": "production", "DJANGO_SETTINGS_MODULE": "kodori.settings",
        "DATABASE_URL": "postgres://kodori:pw@db.internal:5432/kodori",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "SECRET_KEY": "a-production-secret-key-with-plenty-of-entropy-0123456789",
        "AUTH_SECRET": "a-long-random-auth-secret-for-key-derivation-0123456789",
        "ALLOWED_HOSTS": "kodori.example.com",
        "AUDIT_SIGNING_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    })  # fmt: skip
    code = (
        "import django; django.setup(); from django.db.models.signals import post_migrate; "
        "door = any('audit-test-truncate-bypass' in str(r[0]) for r in post_migrate.receivers); "
        "print('door' if door else 'none')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "none", result.stderr


def test_check_database_fails_in_production_on_the_door_or_a_disabled_trigger(settings: Any) -> None:
    settings.PRODUCTION = True
    errors = [m for m in run_checks(databases=["default"]) if m.id == "audit.E002"]
    assert errors and "lets TRUNCATE through" in errors[0].msg
    install_production_guard()
    assert not [m for m in run_checks(databases=["default"]) if m.id == "audit.E002"]
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE audit_checkpoint DISABLE TRIGGER audit_checkpoint_append_only")
    errors = [m for m in run_checks(databases=["default"]) if m.id == "audit.E002"]
    assert [e.msg for e in errors] == ["default: trigger audit_checkpoint_append_only is disabled"]
    settings.PRODUCTION = False
    assert not [m for m in run_checks(databases=["default"]) if m.id == "audit.E002"]


def test_every_guard_trigger_exists() -> None:
    assert [p for p in checks.guard_problems() if "trigger" in p] == []


def test_a_break_cannot_be_deleted_or_rewritten(a_break: ChainBreak) -> None:
    pk = a_break.pk
    assert "append-only" in refused(f"DELETE FROM audit_chainbreak WHERE id = {pk}")  # noqa: S608
    for change in ("first_bad_seq = 3", "kind = 'missing'", "reason = 'nothing'", "found_at = now()"):
        assert "kept as found" in refused(f"UPDATE audit_chainbreak SET {change} WHERE id = {pk}")  # noqa: S608
    with connection.cursor() as cursor:  # seen again: allowed
        cursor.execute("UPDATE audit_chainbreak SET last_seen_at = now() WHERE id = %s", [pk])


def test_an_acknowledgement_cannot_be_changed(a_break: ChainBreak) -> None:
    pk = a_break.pk
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_chainbreak SET acknowledged_at = now(), ack_reason = 'restored', ack_seq = 1 "
            "WHERE id = %s",
            [pk],
        )
    assert "kept as found" in refused(f"UPDATE audit_chainbreak SET ack_reason = 'other' WHERE id = {pk}")  # noqa: S608
    assert "kept as found" in refused(f"UPDATE audit_chainbreak SET acknowledged_at = NULL WHERE id = {pk}")  # noqa: S608


def test_an_acknowledgement_needs_a_reason_and_an_event(a_break: ChainBreak) -> None:
    with pytest.raises(DatabaseError, match="audit_break_ack_has_reason_and_event"), transaction.atomic():
        ChainBreak.objects.filter(pk=a_break.pk).update(acknowledged_at=timezone.now())


def _production_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KODORI_", "AUDIT_", "DJANGO_"))}
    env.update({
        "DJANGO_ENV": "production", "DJANGO_SETTINGS_MODULE": "kodori.settings", "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "SECRET_KEY": "a-production-secret-key-with-plenty-of-entropy-0123456789",
        "AUTH_SECRET": "a-long-random-auth-secret-for-key-derivation-0123456789",
        "ALLOWED_HOSTS": "kodori.example.com",
        "AUDIT_SIGNING_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    })  # fmt: skip
    return env


@pytest.mark.django_db(transaction=True)
def test_the_release_steps_migrate_a_new_production_database_and_then_pass_the_check() -> None:
    """``migrate`` runs the database checks before it migrates: on a new database the guard is not there yet,
    which must not stop the very command that installs it. Once migrated, ``check --database`` passes."""
    import psycopg

    params = connection.get_connection_params()
    name = "kodori_release_steps"
    admin = psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True)
    try:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
        secret = f":{quote(params['password'], safe='')}" if params.get("password") else ""
        url = f"postgres://{params['user']}{secret}@{params['host']}:{params['port']}/{name}"
        env = _production_env(url)
        manage = [sys.executable, "manage.py"]
        migrate = subprocess.run(
            [*manage, "migrate", "--noinput"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        check = subprocess.run(
            [*manage, "check", "--database", "default"], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr[-3000:]
        assert "audit.E002" not in check.stdout + check.stderr
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
