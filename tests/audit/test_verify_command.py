"""``manage.py verify_audit_chain``: 0 when intact, else 1 naming the first broken sequence."""

from __future__ import annotations

import base64
from functools import partial
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit import chain, services, signing
from audit.encoding import format_time
from audit.models import AuditEvent, Checkpoint
from audit.verify_bundle import checkpoint_message
from tenants.models import Tenant

from .conftest import fill, forge_after, raw, run_command

pytestmark = pytest.mark.django_db

N = 8


run = partial(run_command, "verify_audit_chain")


@pytest.fixture
def chain_of_8(tenant: Tenant, owner: Any) -> list[AuditEvent]:
    return fill(tenant, N, actor=owner)


def test_it_passes_an_intact_chain(chain_of_8: list[AuditEvent], other_tenant: Tenant) -> None:
    fill(other_tenant, 3)
    code, out = run()
    assert code == 0
    assert "acme: OK, events #1..#8 verified" in out
    assert "globex: OK, events #1..#3 verified" in out


def test_it_verifies_one_tenant(chain_of_8: list[AuditEvent], other_tenant: Tenant) -> None:
    fill(other_tenant, 1)
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s", [other_tenant.pk])
    code, out = run("--tenant", "acme")
    assert code == 0 and "globex" not in out
    assert run("--tenant", "globex")[0] == 1


def test_it_refuses_an_unknown_tenant() -> None:
    with pytest.raises(CommandError, match="No tenant"):
        call_command("verify_audit_chain", "--tenant", "nope")


EDITS = {
    "type": "type = 'tenant-kms.registered'",
    "created_at": "created_at = created_at + interval '1 microsecond'",
    "actor_id": "actor_id = actor_id + 1",
    "actor_name": "actor_name = 'Mallory'",
    "actor_email": "actor_email = 'mallory@evil.test'",
    "request_id": "request_id = 'forged'",
    "ip": "ip = '198.51.100.66'",
    "payload": "payload = jsonb_set(payload, '{forged}', 'true')",
    "prev_hash": "prev_hash = md5(prev_hash) || md5(hash)",
    "hash": "hash = md5(hash) || md5(prev_hash)",
    "seq": "seq = seq + 1000",
    "tenant": "tenant_id = %(other)s",
}


@pytest.mark.parametrize("field", list(EDITS))
@pytest.mark.parametrize("victim", [1, 5, N])
def test_it_detects_an_edit_of_any_field(
    chain_of_8: list[AuditEvent], tenant: Tenant, other_tenant: Tenant, field: str, victim: int
) -> None:
    services.sign_checkpoint(tenant)  # without it an edit of the last event's hash would go unnoticed
    sql = f"UPDATE audit_auditevent SET {EDITS[field]} WHERE tenant_id = %(tenant)s AND seq = %(seq)s"  # noqa: S608
    raw(sql, {"tenant": tenant.pk, "seq": victim, "other": other_tenant.pk})
    code, out = run("--tenant", "acme")
    assert code == 1, out
    assert f"chain broken at #{victim}:" in out


@pytest.mark.parametrize("victim", range(1, N))
def test_it_detects_the_deletion_of_any_row(
    chain_of_8: list[AuditEvent], tenant: Tenant, victim: int
) -> None:
    raw("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq = %s", [tenant.pk, victim])
    code, out = run()
    assert code == 1
    assert f"chain broken at #{victim}: event #{victim} is missing" in out


def test_it_detects_reordering(chain_of_8: list[AuditEvent], tenant: Tenant) -> None:
    # Swap the sequence numbers of #3 and #4 (through a free number, the pair is unique).
    for a, b in ((3, 999), (4, 3), (999, 4)):
        raw("UPDATE audit_auditevent SET seq = %s WHERE tenant_id = %s AND seq = %s", [b, tenant.pk, a])
    code, out = run()
    assert code == 1 and "chain broken at #3:" in out


def test_it_detects_a_forged_insert(chain_of_8: list[AuditEvent], tenant: Tenant) -> None:
    forge_after(tenant, 4, rehash=False)
    code, out = run()
    # The forged #5 links to #4; the real #5, now #6, no longer matches its content.
    assert code == 1 and "chain broken at #6:" in out


def test_a_signed_checkpoint_catches_a_forged_insert_with_every_later_hash_recomputed(
    chain_of_8: list[AuditEvent], tenant: Tenant
) -> None:
    services.sign_checkpoint(tenant)  # signs #8
    forge_after(tenant, 4, rehash=True)
    code, out = run()
    assert code == 1 and "chain broken at #8:" in out and "checkpoint" in out


def test_it_detects_tail_truncation_against_the_last_checkpoint(
    chain_of_8: list[AuditEvent], tenant: Tenant
) -> None:
    services.sign_checkpoint(tenant)
    raw("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq > 5", [tenant.pk])
    code, out = run()
    assert code == 1
    assert "chain broken at #6: events #6..#8 are missing: a checkpoint signed" in out


def test_it_detects_a_forged_checkpoint_signature(chain_of_8: list[AuditEvent], tenant: Tenant) -> None:
    checkpoint = services.sign_checkpoint(tenant)
    assert checkpoint is not None
    forged = bytearray(base64.b64decode(checkpoint.signature))
    forged[0] ^= 1
    raw(
        "UPDATE audit_checkpoint SET signature = %s WHERE id = %s",
        [base64.b64encode(forged).decode(), checkpoint.pk],
    )
    code, out = run()
    assert code == 1 and "chain broken at #8: the signature of checkpoint #8 is not valid" in out


def test_it_refuses_a_checkpoint_signed_by_a_key_it_does_not_trust(
    chain_of_8: list[AuditEvent], tenant: Tenant
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    mallory = Ed25519PrivateKey.generate()
    public = mallory.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    head = chain_of_8[-1]
    signed_at = head.created_at
    Checkpoint.objects.create(
        tenant=tenant, seq=head.seq, hash=head.hash, signed_at=signed_at, key_id=signing.key_id(public),
        public_key=base64.b64encode(public).decode(),
        signature=base64.b64encode(mallory.sign(checkpoint_message(tenant.pk, head.seq, head.hash,
                                                                     format_time(signed_at)))).decode(),
    )  # fmt: skip
    code, out = run()
    assert code == 1 and "not valid for a trusted key" in out


def test_the_page_badge_and_the_command_agree(chain_of_8: list[AuditEvent], tenant: Tenant) -> None:
    assert chain.verify(tenant).ok
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    assert run()[0] == 1
    status = chain.verify(tenant)  # the command remembered the break; the page shows it without re-reading
    assert status.broken is not None and status.broken.seq == 2
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT kind FROM audit_chainbreak WHERE first_bad_seq = 2 AND acknowledged_at IS NULL"
        )
        assert cursor.fetchall() == [("edited",)]


def test_a_tail_cut_below_what_was_verified_before_is_reported(
    chain_of_8: list[AuditEvent], tenant: Tenant
) -> None:
    assert chain.verify(tenant).ok  # what a page view does: verified through #8, no checkpoint yet
    raw("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq > 6", [tenant.pk])
    code, out = run()
    assert code == 1 and "chain broken at #7: events after #6 are missing (#8 was verified before)" in out
