"""Fixtures shared by every test: one tenant ``acme`` with a user per role, another tenant, support staff, and
a private blob directory (``blob_root``, on request).

The PostgreSQL and Redis these tests run against are started by ``kodori.testing.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys._shared import http_challenge_cache  # the SDK's process-wide cache
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import Membership, Role, Tenant

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_key_vault_challenges() -> Iterator[None]:
    """The Key Vault SDK caches each vault's auth challenge (its directory) per scheme, host and port for the
    whole process. Test vaults take free ports that a later test's vault may get again, and would then inherit
    the earlier vault's directory: forget the challenges after every test."""
    yield
    http_challenge_cache.clear()


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
    from tenants.management.commands.seed_demo import SUPPORT_PERMISSIONS

    user.user_permissions.set(Permission.objects.filter(codename__in=SUPPORT_PERMISSIONS))
    return user


@pytest.fixture
def blob_root(settings: Any, tmp_path: Path) -> Path:
    """Blob objects of this test go here, so a test can see exactly what storage holds."""
    root = tmp_path / "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "blobs.storage.BlobFileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


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


def start_worker(
    name: str = "test-worker",
    env: dict[str, str] | None = None,
    *,
    wait: bool = True,
    log: Any = None,
    extra_args: tuple[str, ...] = (),
) -> Any:
    """Start a real ``celery worker --pool=solo`` subprocess named ``name@<host>`` on the test database.

    ``env`` adds to (or overrides) :func:`subprocess_env`, e.g. short ``KODORI_*`` intervals. With ``wait``
    it returns once that very worker answers a ping (then it consumes the queue). ``log`` (a file object)
    receives its output. The caller stops it with :func:`stop_process` (or kills it).
    """
    import socket
    import subprocess
    import sys
    from pathlib import Path

    celery = Path(sys.executable).parent / "celery"
    node = f"{name}@{socket.gethostname()}"
    proc = subprocess.Popen(
        [
            str(celery), "-A", "kodori", "worker", "--pool=solo",
            "--loglevel=" + ("INFO" if log is not None else "WARNING"),
            "-n", node, "--without-gossip", "--without-mingle", *extra_args,
        ],
        env={**subprocess_env(), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )  # fmt: skip
    if wait:
        wait_until_ready(proc, name)
    return proc


def wait_until_ready(proc: Any, name: str) -> None:
    """Return once the worker ``name`` (from :func:`start_worker`) answers a ping, or stop it and raise."""
    import socket

    from kodori.celery import app

    node = f"{name}@{socket.gethostname()}"
    try:
        for _ in range(200):
            if app.control.ping(destination=[node], timeout=0.2):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker {node} exited with {proc.returncode}")
        raise RuntimeError(f"celery worker {node} did not come up within ~40 s")
    except BaseException:
        stop_process(proc)
        raise


def start_beat(schedule: Any, env: dict[str, str] | None = None) -> Any:
    """Start a real ``celery beat`` (schedule file ``schedule``); stop it with stop_process."""
    import subprocess
    import sys
    from pathlib import Path

    celery = Path(sys.executable).parent / "celery"
    return subprocess.Popen(
        [str(celery), "-A", "kodori", "beat", "--loglevel=WARNING", "--schedule", str(schedule)],
        env={**subprocess_env(), **(env or {})},
    )


def wait_for_listener(proc: Any, port: int, log: Path, *, within: float, what: str = "gunicorn") -> None:
    """Return once something accepts connections on loopback ``port``; raise with the output in ``log`` if
    ``proc`` exits first or ``within`` seconds pass."""
    import socket
    import time

    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def stop_process(proc: Any, timeout: float = 20) -> None:
    """Ask a subprocess to stop (SIGTERM), kill it if it does not within ``timeout``; no-op once it exited."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def worker_process(transactional_db: None) -> Any:
    """A real ``celery worker`` subprocess on the test Redis, using the test database; stopped afterwards.

    Tests that use it see committed data only (``transactional_db``), like a real worker would.
    """
    proc = start_worker()
    try:
        yield proc
    finally:
        stop_process(proc)


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


@pytest.fixture
def world(
    tenant: Any,
    other_tenant: Any,
    owner: Any,
    admin: Any,
    member: Any,
    viewer: Any,
    outsider: Any,
    staff: Any,
) -> Any:
    """Every role of the access matrices, in ``tenant``, and an outsider in ``other_tenant``."""
    from kodori.testing.access import World

    users = {
        "owner": owner,
        "admin": admin,
        "member": member,
        "viewer": viewer,
        "outsider": outsider,
        "staff": staff,
    }
    return World(tenant=tenant, other_tenant=other_tenant, users=users)
