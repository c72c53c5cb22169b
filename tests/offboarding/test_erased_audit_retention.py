"""What stays after an erasure, and for how long: the tenant's audit chain, until
``TENANT_AUDIT_RETENTION_DAYS`` end and ``offboarding.retention`` replaces it with a signed record. The
purge removes one erased tenant's events, checkpoints, breaks and witness objects, leaves the guard triggers
on, never touches a tenant that is not erased, does nothing twice, and runs as ``manage.py
purge_erased_audit``.
"""

from __future__ import annotations

import copy
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import chain, witness
from audit.checks import check_audit_guard, guard_problems
from audit.models import AuditEvent, BreakKind, ChainBreak, ChainVerification, Checkpoint
from audit.services import sign_head
from offboarding import erasure, retention
from offboarding.models import DeletionRequest, DeletionStatus, Via
from offboarding.services import schedule_deletion
from offboarding.tasks import purge_expired_audit
from tenants.models import Tenant
from tests.blobs.support import make_blob, pattern
from tests.offboarding.erasure_support import (
    RETENTION_DAYS,
    Erased,
    certificate_of,
    purge_record_of,
    verify,
    write,
)

pytestmark = pytest.mark.django_db


# --- what stays, and for how long ---------------------------------------------------------------------------


def expire(deletion: DeletionRequest, days: int = RETENTION_DAYS + 1) -> None:
    DeletionRequest.objects.filter(pk=deletion.pk).update(completed_at=timezone.now() - timedelta(days=days))


def audit_rows(tenant: Tenant) -> dict[str, int]:
    return {
        "events": AuditEvent.objects.filter(tenant=tenant).count(),
        "checkpoints": Checkpoint.objects.filter(tenant=tenant).count(),
        "chain_breaks": ChainBreak.objects.filter(tenant=tenant).count(),
        "verifications": ChainVerification.objects.filter(tenant=tenant).count(),
        "witnessed": len(witness.entries(tenant.pk)),
    }


def record_a_break(tenant: Tenant) -> None:
    """A break a verification once found and kept (what the purge must remove with the chain)."""
    now = timezone.now()
    ChainBreak.objects.create(
        tenant=tenant, first_bad_seq=1, last_bad_seq=1, kind=BreakKind.EDITED, detail="hash",
        reason="event #1 was edited", found_at=now, found_by="test", last_seen_at=now,
    )  # fmt: skip


# The purge alters the audit tables' triggers, which PostgreSQL refuses in a transaction that still has the
# deferred checks of its own inserts pending ("cannot ALTER TABLE ... pending trigger events"). In production
# the purge always runs in a transaction of its own; so do these tests, which commit as they go.


@pytest.mark.django_db(transaction=True)
def test_after_its_retention_the_chain_goes_and_a_signed_record_stays(
    erased: Erased,
    other_tenant: Tenant,
    outsider: Any,
    signing_key: str,
    tmp_path: Path,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    tenant, deletion = erased.tenant, erased.deletion
    with django_capture_on_commit_callbacks(execute=True):
        make_blob(outsider, pattern(100), name="theirs.bin", tenant=other_tenant)
        sign_head(other_tenant)
    assert chain.verify(other_tenant, full=True).ok
    record_a_break(tenant)
    before, theirs = audit_rows(tenant), audit_rows(other_tenant)
    assert before["events"] > 5 and before["checkpoints"] >= 1 and before["witnessed"] >= 1
    assert before["chain_breaks"] == 1 and before["verifications"] == 1 and theirs["witnessed"] == 1
    head = certificate_of(deletion)["document"]["audit_chain"]
    expire(deletion)

    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_audit() == [tenant.pk]

    assert audit_rows(tenant) == dict.fromkeys(before, 0)
    assert audit_rows(other_tenant) == theirs and chain.verify(other_tenant, full=True).ok
    # The guard is on again: the database still refuses to delete another tenant's audit rows.
    assert [p for p in guard_problems() if "trigger" in p] == []
    for table in ("audit_auditevent", "audit_checkpoint"):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as c,
        ):
            c.execute(f"DELETE FROM {table} WHERE tenant_id = %s", [other_tenant.pk])  # noqa: S608
    assert audit_rows(other_tenant) == theirs
    # The record: signed, what was removed, the head the certificate named; the certificate stays.
    deletion.refresh_from_db()
    record = purge_record_of(deletion)
    assert record["kind"] == "kodori-audit-purge-record" and deletion.audit_purged_at is not None
    assert record["document"]["removed"] == {"events": before["events"], "checkpoints": before["checkpoints"],
                                             "chain_breaks": 1}  # fmt: skip
    assert record["document"]["final_head"] == {"seq": head["head_seq"], "hash": head["head_hash"]}
    assert record["document"]["erasure_certificate_id"] == str(deletion.pk)
    assert record["document"]["retention_days"] == RETENTION_DAYS
    assert verify(write(record, tmp_path / "purge.json"), signing_key) == 0
    assert verify(write(certificate_of(deletion), tmp_path / "certificate.json"), signing_key) == 0
    tampered = copy.deepcopy(record)
    tampered["document"]["removed"]["events"] -= 1
    assert verify(write(tampered, tmp_path / "tampered.json"), signing_key) == 1
    # Once is enough: nothing is listed again, and purging again changes nothing.
    assert purge_expired_audit() == []
    assert retention.purge(deletion).purge_record == record
    # And manage.py check still finds the guard whole (audit.E002 in production; the test database's TRUNCATE
    # door for the test runner is the one thing it reports here).
    call_command("check", "--database", "default")
    settings.PRODUCTION = True
    errors = check_audit_guard(databases=["default"])
    assert [e.msg for e in errors if "TRUNCATE" not in e.msg] == []
    assert all(e.id == "audit.E002" for e in errors)


def test_a_chain_within_its_retention_stays(erased: Erased) -> None:
    before = audit_rows(erased.tenant)
    expire(erased.deletion, days=RETENTION_DAYS - 1)

    assert purge_expired_audit() == []

    assert audit_rows(erased.tenant) == before


def test_the_chain_of_a_tenant_that_is_not_erased_can_never_be_purged(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path, signing_key: str
) -> None:
    make_blob(member, pattern(100))
    deletion = schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=7)
    before = audit_rows(tenant)
    with pytest.raises(ValueError, match="is not erased"):
        retention.purge(deletion)
    # Being erased (keys destroyed, the rest to follow) is not erased either.
    DeletionRequest.objects.filter(pk=deletion.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    deletion.refresh_from_db()
    assert erasure.destroy_keys(deletion)
    with pytest.raises(ValueError, match="is not erased"):
        retention.purge(deletion)
    # Not even when its request says "erased" long ago: the tenant's own state decides.
    DeletionRequest.objects.filter(pk=deletion.pk).update(
        status=DeletionStatus.ERASED, certificate={}, completed_at=timezone.now() - timedelta(days=9999)
    )
    assert [d.pk for d in retention.expired()] == [deletion.pk]
    assert purge_expired_audit() == []

    after = audit_rows(tenant)
    assert after["events"] == before["events"] + 1  # tenant.erasure-started, nothing removed
    assert DeletionRequest.objects.get(pk=deletion.pk).purge_record is None


@pytest.mark.django_db(transaction=True)
def test_manage_py_purge_erased_audit_removes_expired_chains(
    erased: Erased, tmp_path: Path, signing_key: str, django_capture_on_commit_callbacks: Any
) -> None:
    expire(erased.deletion)
    out = io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("purge_erased_audit", stdout=out)

    assert out.getvalue().splitlines() == [
        f"tenant {erased.tenant.pk} (acme): audit chain removed",
        "1 chain(s) removed.",
    ]
    assert audit_rows(erased.tenant) == dict.fromkeys(audit_rows(erased.tenant), 0)
    erased.deletion.refresh_from_db()
    assert verify(write(purge_record_of(erased.deletion), tmp_path / "purge.json"), signing_key) == 0
    again = io.StringIO()
    call_command("purge_erased_audit", stdout=again)
    assert again.getvalue() == "0 chain(s) removed.\n"
