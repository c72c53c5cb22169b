"""Verification of a tenant's hash chain in PostgreSQL, from genesis or from where it was last verified.

Verification reads events in keyset batches straight from SQL and feeds them to the same ``ChainVerifier``
the offline script uses, plus what only the database can tell: checkpoints beyond the chain's end (tail
truncation) and signatures by keys Kodori trusts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils import timezone

from tenants.models import Tenant

from . import signing
from .encoding import format_time
from .models import AuditEvent, ChainVerification, Checkpoint
from .verify_bundle import ENCODING_VERSION, GENESIS_HASH, HASHED_FIELDS, Break, ChainVerifier

BATCH = 10_000
# _checkable spells the hashed body out for speed; this keeps it honest if a field is ever added.
assert set(HASHED_FIELDS) == {"seq", "tenant", "type", "created_at", "actor_id", "actor_name", "actor_email",
                              "request_id", "ip", "payload"}  # fmt: skip


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as the chain (and the export) sees it: plain JSON values, the tenant as its id."""
    return {
        "seq": event.seq,
        "tenant": event.tenant_id,
        "type": event.type,
        "created_at": format_time(event.created_at),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "actor_email": event.actor_email,
        "request_id": event.request_id,
        "ip": event.ip,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


# PostgreSQL formats the timestamp exactly as ``encoding.format_time`` does: parsing it into a datetime and
# formatting it again would cost more than everything else a verification does per event.
_SELECT = (
    "SELECT seq, type, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "actor_id, actor_name, actor_email, request_id, ip, payload::text, prev_hash, hash FROM audit_auditevent "
    "WHERE tenant_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)


def _rows(tenant_id: int, after: int, upto: int | None) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of raw event rows ``after < seq <= upto``, in order (keyset batches: no server-side cursor)."""
    limit = upto if upto is not None else 2**62
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_SELECT, [tenant_id, after, limit, BATCH])
            rows = cursor.fetchall()
        yield rows
        if len(rows) < BATCH:
            return
        after = rows[-1][0]


def iter_records(tenant_id: int, after: int = 0, upto: int | None = None) -> Iterator[dict[str, Any]]:
    """Events ``after < seq <= upto`` in order, as chain records, without loading them all at once."""
    for rows in _rows(tenant_id, after, upto):
        for seq, type_, created, actor_id, name, email, request_id, ip, payload, prev, hash_ in rows:
            yield {
                "seq": seq,
                "tenant": tenant_id,
                "type": type_,
                "created_at": created,
                "actor_id": actor_id,
                "actor_name": name,
                "actor_email": email,
                "request_id": request_id,
                "ip": ip,
                "payload": orjson.loads(payload),
                "prev_hash": prev,
                "hash": hash_,
            }


def _run(verifier: ChainVerifier, upto: int) -> Break | None:
    """Feed events ``verifier.next_seq..upto`` from the database to ``verifier``, fast.

    Verification is dominated by per-event overhead, so the hash is computed straight from the row (the same
    body ``encoding.event_hash`` builds) and an event that passes every check only advances the verifier's
    state. The first event that fails any check goes through ``ChainVerifier.feed``, which names the break
    exactly as the offline verifier would.
    """
    dumps, loads, sha256, fromhex = orjson.dumps, orjson.loads, hashlib.sha256, bytes.fromhex
    sort, tenant_id, vouched = orjson.OPT_SORT_KEYS, verifier.tenant, verifier.expected_hashes
    for rows in _rows(tenant_id, verifier.next_seq - 1, upto):
        for seq, type_, created, actor_id, name, email, request_id, ip, payload, prev, hash_ in rows:
            body = {
                "actor_email": email, "actor_id": actor_id, "actor_name": name, "created_at": created,
                "ip": ip, "payload": loads(payload), "request_id": request_id, "seq": seq,
                "tenant": tenant_id, "type": type_, "v": ENCODING_VERSION,
            }  # fmt: skip
            computed = sha256(fromhex(prev) + dumps(body, option=sort)).hexdigest()
            if (
                seq != verifier.next_seq
                or prev != verifier.prev_hash
                or computed != hash_
                or vouched.get(seq, computed) != computed
            ):
                failed = {"seq": seq, "tenant": tenant_id, "prev_hash": prev, "hash": hash_}
                return verifier.feed({**failed, "computed": computed})
            verifier.prev_hash, verifier.next_seq, verifier.count = hash_, seq + 1, verifier.count + 1
    return None


def _precomputed(event: Mapping[str, Any]) -> str:
    return str(event["computed"])


def head(tenant: Tenant) -> AuditEvent | None:
    return AuditEvent.objects.for_tenant(tenant).order_by("-seq").first()


@dataclass(frozen=True)
class ChainStatus:
    """What ``/audit`` and the command report: verified through ``verified_seq``, or broken at ``broken``."""

    tenant_id: int
    head_seq: int
    verified_seq: int
    verified_at: datetime | None
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def complete(self) -> bool:
        return self.ok and self.verified_seq >= self.head_seq


def _check_checkpoints(checkpoints: list[Checkpoint], head_seq: int) -> Break | None:
    """Signatures by trusted keys, and no checkpoint beyond the chain's end (the tail was cut)."""
    for cp in checkpoints:
        if not signing.verify_checkpoint(cp):
            return Break(cp.seq, f"the signature of checkpoint #{cp.seq} is not valid for a trusted key")
    beyond = [cp for cp in checkpoints if cp.seq > head_seq]
    if beyond:
        cp = min(beyond, key=lambda c: c.seq)
        return Break(
            head_seq + 1,
            f"events #{head_seq + 1}..#{cp.seq} are missing: a checkpoint signed "
            f"{format_time(cp.signed_at)} covers #{cp.seq} (tail truncated?)",
        )
    return None


def _check_old_checkpoints(tenant: Tenant, checkpoints: list[Checkpoint]) -> Break | None:
    """Checkpoints signed after an earlier verification passed their event: compare them with one query."""
    if not checkpoints:
        return None
    wanted = {cp.seq: cp.hash for cp in checkpoints}
    found = dict(AuditEvent.objects.for_tenant(tenant).filter(seq__in=wanted).values_list("seq", "hash"))
    for seq in sorted(wanted):
        if found.get(seq) != wanted[seq]:
            return Break(seq, f"#{seq} differs from the signed checkpoint of #{seq} (chain rewritten?)")
    return None


def verify(tenant: Tenant, *, full: bool = False, limit: int | None = None) -> ChainStatus:
    """Verify ``tenant``'s chain from the last verified point (or from genesis when ``full``) and remember it.

    Incremental runs check the new events, the new checkpoints, and that the event verified last still has the
    hash it had; only a full run re-reads everything. ``limit`` caps the events one call checks (a page view).
    """
    state = ChainVerification.objects.filter(tenant=tenant).first()
    last = head(tenant)
    head_seq = last.seq if last else 0
    if state is not None and state.broken_seq is not None and not full:
        return _status(state, head_seq)
    start_seq, start_hash, cp_after = 0, GENESIS_HASH, 0
    if state is not None and not full:
        start_seq, start_hash, cp_after = state.verified_seq, state.verified_hash, state.checkpoint_pk
    checkpoints = list(Checkpoint.objects.for_tenant(tenant).filter(pk__gt=cp_after).order_by("seq"))
    broken = _check_checkpoints(checkpoints, head_seq)
    # A chain shorter than one verified before lost its tail (a weak witness: the cache can be deleted too).
    known = state.verified_seq if state is not None else 0
    if broken is None and known > head_seq:
        broken = Break(head_seq + 1, f"events after #{head_seq} are missing (#{known} was verified before)")
    if broken is None and start_seq > 0:
        anchor = (
            AuditEvent.objects.for_tenant(tenant).filter(seq=start_seq).values_list("hash", flat=True).first()
        )
        if anchor != start_hash:
            broken = Break(start_seq, f"#{start_seq} changed since it was verified")
    if broken is None:
        broken = _check_old_checkpoints(tenant, [cp for cp in checkpoints if cp.seq <= start_seq])
    if broken is None and state is not None and not full and start_seq == head_seq and not checkpoints:
        return _status(state, head_seq)  # nothing new since the last verification: no write
    verifier = ChainVerifier(
        tenant=tenant.pk,
        prev_hash=start_hash,
        next_seq=start_seq + 1,
        expected_hashes={cp.seq: cp.hash for cp in checkpoints if cp.seq > start_seq},
        hash_event=_precomputed,
    )
    if broken is None:
        upto = head_seq if limit is None else min(head_seq, start_seq + limit)
        broken = _run(verifier, upto)
        if broken is None and verifier.last_seq < upto:
            broken = Break(verifier.last_seq + 1, f"event #{verifier.last_seq + 1} is missing")
    unchecked = [cp.pk for cp in checkpoints if cp.seq > verifier.last_seq]
    checked_through = (
        min(unchecked) - 1 if unchecked else max([cp.pk for cp in checkpoints], default=cp_after)
    )
    return _remember(tenant, verifier, broken, head_seq, full, checked_through)


def _status(state: ChainVerification, head_seq: int) -> ChainStatus:
    broken = Break(state.broken_seq, state.broken_reason) if state.broken_seq is not None else None
    return ChainStatus(state.tenant_id, head_seq, state.verified_seq, state.verified_at, broken)


def _remember(
    tenant: Tenant,
    verifier: ChainVerifier,
    broken: Break | None,
    head_seq: int,
    full: bool,
    checkpoint_pk: int,
) -> ChainStatus:
    now = timezone.now()
    with transaction.atomic():
        state = ChainVerification.objects.select_for_update().filter(tenant=tenant).first()
        if state is None:
            state = ChainVerification(tenant=tenant, verified_hash=GENESIS_HASH, verified_at=now)
        elif state.broken_seq is not None and not full and broken is None:
            # A concurrent page view must not paper over a break that another verification found.
            return _status(state, head_seq)
        if full or verifier.last_seq >= state.verified_seq:
            state.verified_seq, state.verified_hash = verifier.last_seq, verifier.prev_hash
            state.checkpoint_pk = checkpoint_pk
            state.verified_at = now
        if full:
            state.full_verified_at = now
        state.broken_seq = broken.seq if broken else None
        state.broken_reason = broken.reason if broken else ""
        state.save()
    return _status(state, head_seq)
