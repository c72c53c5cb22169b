"""Fixtures of the audit tests: a quick way to fill a chain, and a door around the append-only triggers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from audit import payloads, services
from audit.models import AuditEvent, EventType
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
    tables = ("audit_auditevent", "audit_checkpoint")
    with connection.cursor() as cursor:
        # ALTER TABLE must not find deferred foreign-key checks of this transaction's inserts pending.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")


def raw(sql: str, params: Any = None) -> None:
    """Tamper with raw SQL, triggers off."""
    with triggers_disabled(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


@pytest.fixture
def chain_of() -> Callable[..., list[AuditEvent]]:
    return fill
