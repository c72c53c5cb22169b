"""A broken chain stays broken until a person deals with it (issue 14, section 2).

Every tampering (edit, delete, insert, insert with every later hash recomputed, swap, tail truncation,
TRUNCATE of the tables), with and without deleting the checkpoints (and the verification cache) too, is
reported on every verification after it: the full verification, a page view, ``verify_audit_chain``; also
after the rows are restored from a backup; until someone acknowledges it. Tampering is raw SQL with the
append-only triggers off, as an attacker who owns the tables could do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from django.db import connection

from audit import chain, services
from audit.models import AcknowledgedVia, ChainBreak, Checkpoint
from tenants.models import Tenant

from .conftest import cut_tail, fill, forge_after, raw, run_command

pytestmark = pytest.mark.django_db

N = 8


command = partial(run_command, "verify_audit_chain")


Backup = tuple[list[str], list[str]]


def backup(tenant: Tenant) -> Backup:
    """The tenant's events and checkpoints as rows (what a database backup holds)."""
    tables = []
    for table in ("audit_auditevent", "audit_checkpoint"):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t WHERE tenant_id = %s", [tenant.pk])  # noqa: S608
            tables.append([row[0] for row in cursor.fetchall()])
    return tables[0], tables[1]


def restore(tenant: Tenant, saved: Backup) -> None:
    """Put the rows back as they were: the tampering is undone, not the verifications' memory of it."""
    for table, rows in zip(("audit_auditevent", "audit_checkpoint"), saved, strict=True):
        raw(f"DELETE FROM {table} WHERE tenant_id = %s", [tenant.pk])  # noqa: S608
        for row in rows:
            raw(f"INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, %s::json)", [row])  # noqa: S608


def _swap(tenant: Tenant) -> None:
    for a, b in ((3, 999), (4, 3), (999, 4)):
        raw("UPDATE audit_auditevent SET seq = %s WHERE tenant_id = %s AND seq = %s", [b, tenant.pk, a])


def _truncate_tables(tenant: Tenant) -> None:
    raw("TRUNCATE audit_auditevent, audit_checkpoint, audit_chainverification")


EDIT_4 = "UPDATE audit_auditevent SET actor_name = 'Mallory' WHERE tenant_id = %s AND seq = 4"
DELETE_4 = "DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq = 4"
# name -> (tampering, (first bad seq, kind) that must be reported)
TAMPERING: dict[str, tuple[Callable[[Tenant], None], tuple[int, str]]] = {
    "edit": (lambda t: raw(EDIT_4, [t.pk]), (4, "edited")),
    "delete": (lambda t: raw(DELETE_4, [t.pk]), (4, "missing")),
    "insert": (lambda t: forge_after(t, 4, rehash=False), (6, "relinked")),
    "insert-rehashed": (lambda t: forge_after(t, 4, rehash=True), (8, "rewritten")),
    "swap": (_swap, (3, "relinked")),
    "truncate": (lambda t: cut_tail(t, 5), (6, "truncated")),
}  # fmt: skip
CASES = [(name, False) for name in TAMPERING] + [(name, True) for name in TAMPERING]


@pytest.fixture
def signed_chain(tenant: Tenant, owner: Any, sign: Any) -> Backup:
    """Eight events, #8 signed and witnessed; the backup an operator would restore from."""
    fill(tenant, N, actor=owner)
    assert sign(tenant) is not None
    return backup(tenant)


def _tamper(tenant: Tenant, name: str, delete_checkpoints: bool) -> tuple[int, str]:
    tamper, expected = TAMPERING[name]
    tamper(tenant)
    if delete_checkpoints:  # and the cache that remembers how far the chain was verified
        raw("DELETE FROM audit_checkpoint WHERE tenant_id = %s", [tenant.pk])
        raw("DELETE FROM audit_chainverification WHERE tenant_id = %s", [tenant.pk])
    return expected


def _reported(status: chain.ChainStatus, expected: tuple[int, str]) -> None:
    assert not status.ok
    assert status.broken is not None and status.broken.seq == expected[0], status.broken
    assert expected in {(b.first_bad_seq, b.kind) for b in status.breaks}


def _acknowledge_all(tenant: Tenant) -> None:
    for brk in ChainBreak.objects.for_tenant(tenant).filter(acknowledged_at__isnull=True):
        services.acknowledge_break(
            brk,
            reason="restored from the backup of 3 May",
            via=AcknowledgedVia.OPERATOR,
            operator="ops@kodori",
        )


@pytest.mark.parametrize(
    ("name", "delete_checkpoints"), CASES, ids=[f"{n}{'-and-checkpoints' if d else ''}" for n, d in CASES]
)
def test_each_tampering_is_reported_on_every_verification_until_acknowledged(
    signed_chain: Backup, tenant: Tenant, owner: Any, as_user: Any, name: str, delete_checkpoints: bool
) -> None:
    expected = _tamper(tenant, name, delete_checkpoints)
    _reported(chain.verify(tenant, full=True, found_by="full verification"), expected)
    client = as_user(owner)
    for _ in range(2):  # and again, and again
        _reported(chain.verify(tenant), expected)
        _reported(chain.verify(tenant, full=True), expected)
        code, out = command("--tenant", "acme")
        assert code == 1 and f"chain broken at #{expected[0]}:" in out, out
        assert f"chain broken at #{expected[0]}</span>" in client.get("/audit").content.decode()
    # The rows are put back: the break stays reported, and says it was not found again.
    restore(tenant, signed_chain)
    status = chain.verify(tenant, full=True)
    _reported(status, expected)
    assert command("--tenant", "acme")[0] == 1
    page = client.get("/audit").content.decode()
    assert "not found again by the full verification" in page and "Acknowledge this break" in page
    # Someone deals with it: acknowledged with a reason, the chain verifies, and the page says who and why.
    _acknowledge_all(tenant)
    status = chain.verify(tenant, full=True)
    assert status.ok and status.acknowledged, status.breaks
    code, out = command("--tenant", "acme")
    assert code == 0 and "acknowledged" in out and "restored from the backup of 3 May" in out, out
    page = client.get("/audit").content.decode()
    assert (
        "acknowledged break" in page and "ops@kodori" in page and "restored from the backup of 3 May" in page
    )


def test_a_truncate_of_the_tables_with_their_checkpoints_is_reported_from_the_witness(
    signed_chain: Backup, tenant: Tenant
) -> None:
    _truncate_tables(tenant)
    status = chain.verify(tenant, full=True)
    _reported(status, (1, "truncated"))
    assert "the witness holds a checkpoint of #8" in status.breaks[0].reason
    assert chain.verify(tenant).broken is not None  # a page view
    code, out = command()
    assert code == 1 and "acme: chain broken at #1: events #1..#8 are missing" in out
    # The witness also holds checkpoint #8, which the database lost: a second break, at #8.
    assert {(b.first_bad_seq, b.kind) for b in status.breaks} == {(1, "truncated"), (8, "checkpoint-missing")}
    _acknowledge_all(
        tenant
    )  # the operator accepts the loss; the acknowledgements are what the chain now holds
    status = chain.verify(tenant, full=True)
    assert status.ok and status.head_seq == 2
    assert {b.kind for b in status.acknowledged} == {"truncated", "checkpoint-missing"}


@pytest.mark.parametrize("name", ["edit", "delete", "truncate"])
def test_an_acknowledged_break_that_stays_is_passed_over_and_a_new_one_is_reported(
    signed_chain: Backup, tenant: Tenant, sign: Any, name: str
) -> None:
    expected = _tamper(tenant, name, delete_checkpoints=False)
    _reported(chain.verify(tenant, full=True), expected)
    _acknowledge_all(tenant)  # nothing restored: the break is still in the rows
    status = chain.verify(tenant, full=True)
    assert status.ok and [b.kind for b in status.acknowledged] == [expected[1]]
    assert status.verified_seq == status.head_seq  # verified to the end, past the break
    fill(tenant, 3)  # past #8: after a truncation, the lost chain's checkpoint #8 still holds that number
    assert chain.verify(tenant).ok
    assert sign(tenant) is not None  # checkpoints are signed again over the acknowledged chain
    # Another tampering, at another position: reported again.
    raw("UPDATE audit_auditevent SET ip = '198.51.100.7' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    status = chain.verify(tenant, full=True)
    assert status.broken is not None and (status.broken.seq, status.broken.kind) == (2, "edited")
    assert command()[0] == 1


def test_the_same_position_with_another_kind_or_content_is_a_new_break(
    signed_chain: Backup, tenant: Tenant
) -> None:
    raw("UPDATE audit_auditevent SET actor_name = 'Mallory' WHERE tenant_id = %s AND seq = 4", [tenant.pk])
    chain.verify(tenant, full=True)
    _acknowledge_all(tenant)
    assert chain.verify(tenant, full=True).ok
    # Edited again, differently: same position and kind, but not what was acknowledged.
    raw("UPDATE audit_auditevent SET actor_name = 'Mallory II' WHERE tenant_id = %s AND seq = 4", [tenant.pk])
    status = chain.verify(tenant, full=True)
    assert status.broken is not None and (status.broken.seq, status.broken.kind) == (4, "edited")
    assert len(status.acknowledged) == 1


def test_a_page_view_finds_a_break_and_keeps_it(tenant: Tenant, owner: Any, as_user: Any) -> None:
    fill(tenant, 5)
    client = as_user(owner)
    client.get("/audit")
    fill(tenant, 2)
    raw("UPDATE audit_auditevent SET payload = '{}' WHERE tenant_id = %s AND seq = 6", [tenant.pk])
    assert b"chain broken at #6</span>" in client.get("/audit").content
    brk = ChainBreak.objects.get(tenant=tenant)
    assert (brk.first_bad_seq, brk.kind, brk.found_by) == (6, "edited", "page view")
    assert brk.found_at is not None and "does not match its content" in brk.reason


def test_an_acknowledgement_counts_only_while_its_event_is_in_the_chain(
    signed_chain: Backup, tenant: Tenant
) -> None:
    """A row marked acknowledged by someone with the database, with no event to show for it, stays open."""
    raw("UPDATE audit_auditevent SET actor_name = 'Mallory' WHERE tenant_id = %s AND seq = 4", [tenant.pk])
    chain.verify(tenant, full=True)
    raw(
        "UPDATE audit_chainbreak SET acknowledged_at = now(), ack_reason = 'nothing to see', ack_seq = 3, "
        "ack_actor_name = 'Mallory', ack_via = 'owner' WHERE tenant_id = %s",
        [tenant.pk],
    )
    status = chain.verify(tenant, full=True)
    assert status.broken is not None and status.broken.seq == 4 and not status.acknowledged
    assert command()[0] == 1
    # A real acknowledgement (an event in the chain) then counts.
    services.acknowledge_break(
        ChainBreak.objects.get(tenant=tenant), reason="restored", via=AcknowledgedVia.OPERATOR, operator="ops"
    )
    assert chain.verify(tenant, full=True).ok


def test_remembering_breaks_keeps_them_per_tenant(
    signed_chain: Backup, tenant: Tenant, other_tenant: Tenant
) -> None:
    fill(other_tenant, 3)
    raw("UPDATE audit_auditevent SET actor_name = 'Mallory' WHERE tenant_id = %s AND seq = 2", [tenant.pk])
    code, out = command()
    assert code == 1 and "acme: chain broken at #2" in out and "globex: OK, events #1..#3 verified" in out
    assert chain.verify(other_tenant).ok
    assert not ChainBreak.objects.for_tenant(other_tenant).exists()
    assert Checkpoint.objects.for_tenant(tenant).exists()
