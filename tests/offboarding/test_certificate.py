"""The erasure certificate (``offboarding.certificate``) and what stays after an erasure: the audit chain,
until ``TENANT_AUDIT_RETENTION_DAYS`` end and ``offboarding.retention`` replaces it with a signed record.

The certificate states what docs/offboarding.md says it states, signed with the key in ``AUDIT_SIGNING_KEY``;
the offline verifier (``audit.verify_bundle``) passes it with Kodori's public key and fails it when any field
is changed; the admin serves the very bytes the owners were mailed. The purge removes one erased tenant's
events, checkpoints, breaks and witness objects, leaves the guard triggers on, never touches a tenant that is
not erased, and does nothing twice.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from audit import chain, signing, verify_bundle, witness
from audit.checks import check_audit_guard, guard_problems
from audit.encoding import format_time
from audit.models import AuditEvent, BreakKind, ChainBreak, ChainVerification, Checkpoint, EventType
from audit.services import sign_head
from encryption import services
from encryption.models import KeyStatus, WrapMethod
from offboarding import certificate, erasure, retention
from offboarding.models import DeletionRequest, DeletionStatus, Via
from offboarding.services import schedule_deletion
from offboarding.tasks import purge_expired_audit
from tenants.models import Tenant
from tests.blobs.support import make_blob, make_token, pattern
from tests.conftest import client_for
from tests.encryption.support import AWS_KEY, AWS_ROLE, rotate_kek
from tests.offboarding.erasure_support import (
    certificate_of,
    purge_record_of,
    run_task,
    schedule_due,
    snapshot_counts,
    when,
)

pytestmark = pytest.mark.django_db

RETENTION_DAYS = 400
REASON = "Ticket 4711: the customer's signed letter of 2 March asks us to close the account."


@pytest.fixture
def signing_key(settings: Any) -> str:
    """A fresh deployment audit key in ``AUDIT_SIGNING_KEY``; its public half (what /audit shows)."""
    private, public = signing.generate_private_key()
    settings.AUDIT_SIGNING_KEY = private
    settings.TENANT_AUDIT_RETENTION_DAYS = RETENTION_DAYS
    return public


@dataclass
class Erased:
    tenant: Tenant
    deletion: DeletionRequest
    counts: dict[str, int]  # what the tables held right before the erasure
    message: Any  # the certificate e-mail


def erase(tenant: Tenant, actor: Any, capture: Any, **schedule: Any) -> Erased:
    deletion = schedule_due(tenant, actor, **schedule)
    counts = snapshot_counts(tenant)
    mail.outbox.clear()
    assert run_task(capture) == [tenant.slug]
    deletion.refresh_from_db()
    tenant.refresh_from_db()
    (message,) = mail.outbox
    return Erased(tenant, deletion, counts, message)


@pytest.fixture
def erased(
    tenant: Tenant,
    owner: Any,
    admin: Any,
    member: Any,
    viewer: Any,
    staff: Any,
    signing_key: str,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> Erased:
    """Acme, with three files under two key versions and a token, erased on a written request to support."""
    make_blob(member, pattern(1_000, seed=1), name="a.bin")
    make_blob(owner, pattern(70_000, seed=2), name="b.bin")
    rotate_kek(tenant)
    make_blob(admin, pattern(5, seed=3), name="c.bin")
    make_token(member)
    capture = django_capture_on_commit_callbacks
    return erase(tenant, staff, capture, via=Via.SUPPORT, days=12, reason=REASON)


def write(signed: dict[str, Any], path: Path) -> Path:
    path.write_bytes(certificate.as_bytes(signed))
    return path


def verify(path: Path, *keys: str) -> int:
    return verify_bundle.main([str(path), *[a for key in keys for a in ("--public-key", key)]])


# --- what it says -------------------------------------------------------------------------------------------


def test_it_states_what_was_erased_when_on_whose_request_and_what_is_not_covered(
    erased: Erased, staff: Any
) -> None:
    deletion, tenant = erased.deletion, erased.tenant
    signed = certificate_of(deletion)
    assert signed["kind"] == "kodori-erasure-certificate"
    document = signed["document"]
    assert set(document) == {
        "certificate_id", "tenant", "scheduled", "erasure", "destroyed", "keys", "audit_chain", "coverage",
        "issued_at",
    }  # fmt: skip
    assert document["certificate_id"] == str(deletion.pk)
    assert document["tenant"] == {"id": tenant.pk, "slug": "acme", "name": "Acme Corp"}
    assert document["scheduled"] == {
        "at": format_time(deletion.requested_at),
        "by": {"name": "support@kodori.test", "email": "support@kodori.test"},
        "via": "support",
        "on_written_request": True,
        "reason": REASON,
        "waiting_days": 12,
        "due_at": format_time(deletion.due_at),
    }
    erasure_part = document["erasure"]
    destroyed_at, completed_at = when(deletion.keys_destroyed_at), when(deletion.completed_at)
    retained_until = format_time(completed_at + timedelta(days=RETENTION_DAYS))
    assert erasure_part["keys_destroyed_at"] == format_time(destroyed_at)
    assert erasure_part["completed_at"] == format_time(completed_at) == document["issued_at"]
    assert deletion.due_at <= destroyed_at <= completed_at == tenant.erased_at
    assert erasure_part["order"][0].startswith("tenant key versions and data keys destroyed")
    # The counts are what the tables held: three files, their keys, two versions, one token, four people.
    assert document["destroyed"] == {
        "data_keys": 3,
        "key_versions": 2,
        "key_versions_destroyed_earlier": 0,
        "blobs": 3,
        "blob_bytes": 71_005,
        "uploads_in_progress": 0,
        "stored_objects": 3,
        "key_registrations": 2,
        "api_tokens": 1,
        "memberships": 4,
    }
    assert erased.counts["dataKeys"] == 3 and erased.counts["memberships"] == 4
    assert document["keys"] == [
        {
            "provider": "kodori-managed",
            "wrap_method": WrapMethod.GLOBAL,
            "key_id_suffix": "",
            "status_at_erasure": status,
            "customer_managed": False,
        }
        for status in (KeyStatus.RETIRED, KeyStatus.ACTIVE)
    ]
    # The head it names is the chain's last event, tenant.erased, and the chain verifies up to it.
    head = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").first()
    assert head is not None and head.type == EventType.TENANT_ERASED
    assert document["audit_chain"] == {
        "head_seq": head.seq,
        "head_hash": head.hash,
        "head_type": "tenant.erased",
        "retained_until": retained_until,
    }
    assert chain.verify(tenant, full=True).ok
    covered, not_covered = document["coverage"]["covered"], document["coverage"]["not_covered"]
    assert any("before any file was removed" in line for line in covered)
    assert any("No call to the tenant's key management service" in line for line in covered)
    assert any(line.startswith("Database backups and replicas") for line in not_covered)
    assert any(retained_until in line for line in not_covered)
    assert any("Kodori-managed or operator key" in line for line in not_covered)
    assert not any("customer's own KMS" in line for line in not_covered)  # no customer key here


def test_a_customer_key_is_named_by_provider_and_suffix_with_what_to_do_in_the_customers_kms(
    clouds: Any,
    tenant: Tenant,
    owner: Any,
    member: Any,
    signing_key: str,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    make_blob(member, pattern(1_000), name="before.bin")
    name = clouds.gcp.create_key("acme-byok", "kek")
    key = services.register_key(tenant, WrapMethod.CUSTOMER_KMS_GCP, name, {}, actor=owner)
    assert services.verify_key(key.pk).status == KeyStatus.ACTIVE
    make_blob(member, pattern(1_000), name="after.bin")

    done = erase(tenant, owner, django_capture_on_commit_callbacks)

    document = certificate_of(done.deletion)["document"]
    assert [(k["provider"], k["key_id_suffix"], k["customer_managed"]) for k in document["keys"]] == [
        ("kodori-managed", "", False),
        ("gcp-kms", name[-12:], True),
    ]
    byok = [line for line in document["coverage"]["not_covered"] if "customer's own KMS" in line]
    assert len(byok) == 1 and f"gcp-kms …{name[-12:]}" in byok[0]
    # Never the full key id: not in the certificate, not in the e-mail.
    assert name not in certificate.as_bytes(certificate_of(done.deletion)).decode()
    assert name not in done.message.body
    assert f"schedule the deletion of gcp-kms …{name[-12:]}" in done.message.body


def test_a_customer_key_that_never_protected_anything_is_listed_but_not_one_to_delete(
    tenant: Tenant,
    owner: Any,
    member: Any,
    signing_key: str,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A registration still pending (or failed) wrapped no key version: asking the customer to delete that
    key, which may well serve other systems of theirs, would be wrong."""
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    make_blob(member, pattern(1_000), name="kodori-managed.bin")
    services.register_key(tenant, WrapMethod.CUSTOMER_KMS_AWS, AWS_KEY, {"role_arn": AWS_ROLE}, actor=owner)

    done = erase(tenant, owner, django_capture_on_commit_callbacks)

    document = certificate_of(done.deletion)["document"]
    assert [(k["provider"], k["key_id_suffix"], k["status_at_erasure"]) for k in document["keys"]] == [
        ("kodori-managed", "", KeyStatus.ACTIVE),
        ("aws-kms", AWS_KEY[-12:], KeyStatus.PENDING),
    ]
    assert not any("customer's own KMS" in line for line in document["coverage"]["not_covered"])
    assert "schedule the deletion" not in done.message.body
    assert AWS_KEY not in certificate.as_bytes(certificate_of(done.deletion)).decode()


# --- checking it offline ------------------------------------------------------------------------------------


def test_the_offline_verifier_passes_it_with_kodoris_public_key(
    erased: Erased, signing_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(certificate_of(erased.deletion), tmp_path / certificate.filename(erased.deletion))

    assert verify(path, signing_key) == 0

    out = capsys.readouterr().out
    assert "RESULT: PASS" in out and "erasure certificate: tenant Acme Corp" in out
    assert "destroyed: data_keys = 3" in out


def test_it_is_signed_with_the_key_in_settings_and_no_other_key_passes_it(
    erased: Erased, signing_key: str, settings: Any, tmp_path: Path
) -> None:
    signed = certificate_of(erased.deletion)
    assert signed["signature"]["public_key"] == signing_key
    path = write(signed, tmp_path / "certificate.json")
    settings.AUDIT_SIGNING_KEY = ""  # the development key derived from SECRET_KEY
    development_key = signing.public_key_b64()
    _, stranger = signing.generate_private_key()
    assert development_key != signing_key

    assert verify(path, development_key) == 1
    assert verify(path, stranger) == 1
    assert verify(path, stranger, signing_key) == 0


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from leaves(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x" if not value.endswith("x") else value[:-1]
    return "x"  # null


def test_changing_any_field_fails_verification(erased: Erased, signing_key: str, tmp_path: Path) -> None:
    signed = certificate_of(erased.deletion)
    fields = [(path, value) for path, value in leaves(signed) if path[0] in ("document", "signature")]
    assert len(fields) > 40  # every field of the document, and the signature's
    passed = []
    for path, value in fields:
        tampered = copy.deepcopy(signed)
        holder = tampered
        for step in path[:-1]:
            holder = holder[step]
        holder[path[-1]] = changed(value)
        if verify(write(tampered, tmp_path / "tampered.json"), signing_key) != 1:
            passed.append(path)
    # Structure too: a field added, a field removed, a line of the coverage dropped.
    for name, change in [
        ("added", lambda d: d["destroyed"].update(backups=0)),
        ("removed", lambda d: d["erasure"].pop("keys_destroyed_at")),
        ("dropped", lambda d: d["coverage"]["not_covered"].pop(0)),
    ]:
        tampered = copy.deepcopy(signed)
        change(tampered["document"])
        if verify(write(tampered, tmp_path / "tampered.json"), signing_key) != 1:
            passed.append((name,))
    assert passed == []
    assert verify(write(signed, tmp_path / "intact.json"), signing_key) == 0  # the file itself was fine


# --- where people get it ------------------------------------------------------------------------------------


def test_the_owners_e_mail_and_the_admin_download_are_the_same_bytes(
    erased: Erased, staff: Any, member: Any
) -> None:
    deletion = erased.deletion
    url = reverse("admin:offboarding_deletionrequest_certificate", args=[deletion.pk])
    (attachment,) = erased.message.attachments
    name, content, mimetype = attachment

    response = client_for(staff).get(url)

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == content == certificate.as_bytes(certificate_of(deletion))
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert mimetype == "application/json" and erased.message.to == ["owner@acme.test"]
    assert json.loads(response.content) == certificate_of(deletion)
    assert client_for(member).get(url).status_code == 302  # not staff: the admin's login, not the file


def test_the_erased_tenants_chain_is_readable_by_support_only(erased: Erased, staff: Any, owner: Any) -> None:
    """Kept read-only for support: the admin lists the erased tenant's events; its former owner has no way
    in (no membership is left), and nobody can change an event."""
    tenant = erased.tenant
    url = reverse("admin:audit_auditevent_changelist") + f"?q={tenant.slug}"
    page = client_for(staff).get(url)
    assert page.status_code == 200
    assert "tenant.erased" in page.content.decode() and "tenant.erasure-started" in page.content.decode()
    event = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").first()
    assert event is not None
    change = client_for(staff).post(
        reverse("admin:audit_auditevent_change", args=[event.pk]), {"type": "tenant.sealed"}
    )
    assert change.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).type == "tenant.erased"
    assert client_for(owner).get(reverse("audit:index")).status_code == 403  # no tenant left for them
    assert client_for(owner).get(url).status_code == 302  # not staff: the admin's login


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
