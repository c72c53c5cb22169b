"""Production settings fail loudly when a required value is missing, and pass `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DJANGO_ENV": "production",
    "DATABASE_URL": "postgres://kodori:pw@db.internal:5432/kodori",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "p" * 20 + "roduction-secret-key-with-plenty-of-entropy-0123456789",
    "AUTH_SECRET": "a-long-random-auth-secret-for-key-derivation-0123456789",
    "ALLOWED_HOSTS": "kodori.example.com",
    # A fixed test key (never used anywhere else): 32 raw bytes, base64.
    "AUDIT_SIGNING_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = set(PRODUCTION_ENV) | {"DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in inherited and not k.startswith("KODORI_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy() -> None:
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (0 silenced)" in result.stdout


@pytest.mark.parametrize(
    "missing",
    ["DATABASE_URL", "REDIS_URL", "SECRET_KEY", "AUTH_SECRET", "ALLOWED_HOSTS", "AUDIT_SIGNING_KEY"],
)
def test_production_refuses_to_start_without(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = _run(["manage.py", "check"], env)
    assert result.returncode != 0
    assert f"{missing} must be set when DJANGO_ENV=production" in result.stderr


def test_production_refuses_a_non_postgresql_database() -> None:
    result = _run(["manage.py", "check"], {**PRODUCTION_ENV, "DATABASE_URL": "sqlite:////tmp/kodori.db"})
    assert result.returncode != 0
    assert "DATABASE_URL must point to PostgreSQL" in result.stderr


def test_an_unknown_environment_name_is_refused() -> None:
    result = _run(["manage.py", "check"], {"DJANGO_ENV": "prod"})
    assert result.returncode != 0
    assert "DJANGO_ENV must be development, test or production" in result.stderr
