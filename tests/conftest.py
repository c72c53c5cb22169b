"""Fixtures shared by every test: one tenant ``acme`` with a user per role, another tenant, and support staff.

The PostgreSQL and Redis these tests run against are started by ``kodori.testing.pytest_plugin``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import Membership, Role, Tenant

PASSWORD = "correct horse battery staple"


def make_user(email: str, **extra: Any) -> Any:
    return get_user_model().objects.create_user(username=email, email=email, password=PASSWORD, **extra)


@pytest.fixture
def tenant(db: None) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme Corp")


@pytest.fixture
def other_tenant(db: None) -> Tenant:
    return Tenant.objects.create(slug="globex", name="Globex")


def _member(tenant: Tenant, email: str, role: Role) -> Any:
    user = make_user(email)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def owner(tenant: Tenant) -> Any:
    return _member(tenant, "owner@acme.test", Role.OWNER)


@pytest.fixture
def admin(tenant: Tenant) -> Any:
    return _member(tenant, "admin@acme.test", Role.ADMIN)


@pytest.fixture
def member(tenant: Tenant) -> Any:
    return _member(tenant, "member@acme.test", Role.MEMBER)


@pytest.fixture
def viewer(tenant: Tenant) -> Any:
    return _member(tenant, "viewer@acme.test", Role.VIEWER)


@pytest.fixture
def outsider(other_tenant: Tenant) -> Any:
    """The owner of another tenant: powerful there, nobody here."""
    return _member(other_tenant, "owner@globex.test", Role.OWNER)


@pytest.fixture
def staff(db: None) -> Any:
    from django.contrib.auth.models import Permission

    user = make_user("support@kodori.test", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_tenant", "change_tenant", "view_membership"])
    )
    return user


def client_for(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.fixture
def as_user() -> Any:
    """``as_user(owner)`` gives a logged-in test client; ``as_user(owner, csrf=True)`` enforces CSRF."""
    return client_for


def subprocess_env() -> dict[str, str]:
    """The environment for a Celery worker or beat subprocess: this process's, on the *test* database."""
    import os

    from django.db import connection

    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_ENV": "test",
    }


@pytest.fixture
def worker_process(transactional_db: None) -> Any:
    """A real ``celery worker`` subprocess on the test Redis, using the test database; stopped afterwards.

    Tests that use it see committed data only (``transactional_db``), like a real worker would.
    """
    import subprocess
    import sys
    from pathlib import Path

    from kodori.celery import app

    env = subprocess_env()
    celery = Path(sys.executable).parent / "celery"
    proc = subprocess.Popen(
        [
            str(celery),
            "-A",
            "kodori",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "-n",
            "test-worker@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
    )
    try:
        # Wait until the worker answers a broadcast ping: then it consumes the queue.
        for _ in range(200):
            if app.control.ping(timeout=0.2):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}")
        else:
            raise RuntimeError("celery worker did not come up within ~40 s")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def clouds(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The local AWS / Azure / GCP emulators, with Kodori's settings and environment pointed at them.

    The environment is set too, so a ``worker_process`` (or beat) started after this fixture uses them.
    """
    import os

    from django.test import override_settings

    from emulators.dev import start_all
    from encryption import keyring
    from encryption.providers import aws as aws_provider
    from encryption.providers import azure as azure_provider

    running = start_all(tmp_path / "emulators", fixed_ports=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in running.env.items():
        monkeypatch.setenv(name, value)
    kodori = {name: value for name, value in running.env.items() if name.startswith("KODORI_")}
    with override_settings(**kodori):
        keyring.cache.clear()
        azure_provider.reset_clients()
        aws_provider.reset_clients()
        yield running
    running.stop()
