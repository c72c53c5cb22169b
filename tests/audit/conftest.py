"""Fixtures of the audit tests: a quick way to fill a chain, a door around the append-only triggers (the
attacker's) and what an attacker does through it, a private witness per test, signing with the witness
written, and the management commands' exit status and output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from audit import chain, payloads, services
from audit.encoding import event_hash
from audit.models import AuditEvent, Checkpoint, EventType
from tenants.models import Tenant

ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-a1b2c3d4e5f6"
AZURE_URL = "https://acme-vault.vault.azure.net/keys/kodori-kek/0123456789abcdef0123456789abcdef"
GCP_PATH = "projects/acme-prod/locations/europe-west1/keyRings/kodori/cryptoKeys/kek-9f8e7d6c5b4a"


def fill(tenant: Tenant, n: int, actor: Any = None) -> list[AuditEvent]:
    """Append ``n`` varied events to ``tenant``'s chain."""
    rotated = payloads.key_rotated(
        from_provider="customer_kms_aws", from_key_id=ARN, to_provider="customer_kms_gcp", to_key_id=GCP_PATH
    )
    kinds = [
        (EventType.TENANT_KMS_ROTATED, rotated),
        (EventType.MEMBERSHIP_ADDED, payloads.membership_added(
            user_id=7, email="zoë@acme.test", role="viewer", created_account=True)),
        (EventType.BLOB_UPLOADED, payloads.blob_uploaded(blob_id=12, name="report \"Q1\".pdf", size=1234567)),
        (EventType.TENANT_KMS_DISABLED, payloads.key_disabled(
            key_row_id=3, previous_status="retired", provider="customer_kms_azure", key_id=AZURE_URL)),
    ]  # fmt: skip
    events = []
    for i in range(n):
        kind, payload = kinds[i % len(kinds)]
        event = services.record(tenant, kind, actor=actor, payload=payload)
        assert event is not None
        events.append(event)
    return events


@contextmanager
def triggers_disabled() -> Iterator[None]:
    """Let a test tamper with the append-only tables, as an attacker with table-owner rights could.

    ``ALTER TABLE`` is transactional in PostgreSQL: inside a test's transaction it is rolled back with it.
    """
    tables = ("audit_auditevent", "audit_checkpoint", "audit_chainbreak")
    with connection.cursor() as cursor:
        # ALTER TABLE must not find deferred foreign-key checks of this transaction's inserts pending.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def raw(sql: str, params: Any = None) -> None:
    """Tamper with raw SQL, triggers off."""
    with triggers_disabled(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


@pytest.fixture
def chain_of() -> Callable[..., list[AuditEvent]]:
    return fill


@pytest.fixture(autouse=True)
def witness_root(settings: Any, tmp_path: Path) -> Path:
    """Each test's witness of signed checkpoints in a directory of its own (the real storage API, on disk)."""
    root = tmp_path / "witness"
    settings.STORAGES = {
        **settings.STORAGES,
        "audit-witness-test": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    settings.AUDIT_WITNESS_STORAGE = "audit-witness-test"
    return root


@pytest.fixture
def sign(django_capture_on_commit_callbacks: Any) -> Callable[..., Checkpoint | None]:
    """``sign(tenant)``: sign the head as the periodic task does, and run what waits for the commit (the
    witness write), which the test's own transaction would otherwise hold back."""

    def signer(tenant: Tenant, **kwargs: Any) -> Checkpoint | None:
        with django_capture_on_commit_callbacks(execute=True):
            return services.sign_checkpoint(tenant, **kwargs)

    return signer


def witnessed(root: Path, tenant: Tenant) -> list[int]:
    """The sequence numbers the witness holds for ``tenant``, highest first."""
    folder = root / "audit-witness" / str(tenant.pk)
    return sorted((int(p.name.split("-")[1]) for p in folder.glob("*.json")), reverse=True)


def cut_tail(tenant: Tenant, keep: int, *, checkpoints: bool = False) -> None:
    """An attacker with the database: delete the events after ``keep`` (and, if asked, every checkpoint and
    the verification cache that would remember how far the chain went)."""
    raw("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq > %s", [tenant.pk, keep])
    if checkpoints:
        raw("DELETE FROM audit_checkpoint WHERE tenant_id = %s", [tenant.pk])
        raw("DELETE FROM audit_chainverification WHERE tenant_id = %s", [tenant.pk])


def forge_after(tenant: Tenant, after: int, *, rehash: bool) -> None:
    """Insert a well-formed event with a correct hash after ``after``, renumbering the rest; with ``rehash``,
    as an attacker who recomputes every later hash (only a signed checkpoint can tell)."""
    raw(
        "UPDATE audit_auditevent SET seq = seq + 100000 WHERE tenant_id = %s AND seq > %s", [tenant.pk, after]
    )
    raw("UPDATE audit_auditevent SET seq = seq - 99999 WHERE tenant_id = %s AND seq > 100000", [tenant.pk])
    prev = AuditEvent.objects.for_tenant(tenant).get(seq=after)
    forged = AuditEvent(
        tenant=tenant, seq=after + 1, type="membership.added", created_at=prev.created_at, actor_id=None,
        actor_name="system", actor_email="", request_id="", ip="", payload={"email": "mallory@evil.test"},
        prev_hash=prev.hash,
    )  # fmt: skip
    forged.hash = event_hash(chain.event_record(forged))
    forged.save()
    if rehash:
        prev_hash = forged.hash
        for event in AuditEvent.objects.for_tenant(tenant).filter(seq__gt=after + 1).order_by("seq"):
            event.prev_hash = prev_hash
            prev_hash = event_hash(chain.event_record(event))
            raw(
                "UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                [event.prev_hash, prev_hash, event.pk],
            )


def run_command(name: str, *args: str) -> tuple[int, str]:
    """``manage.py <name> <args>`` in this process: (exit status, what it printed)."""
    out = StringIO()
    try:
        call_command(name, *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()
