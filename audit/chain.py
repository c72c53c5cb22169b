"""Verification of a tenant's hash chain in PostgreSQL, and the breaks it keeps until people deal with them.

A verification streams the events from a server-side cursor, a batch ahead on a second thread, and checks
each batch at once: every hash computed in one pass, then the links, the sequence numbers and the hashes that
signed checkpoints vouch for compared as lists. A batch that fails any comparison is walked event by event
through the offline verifier's ``ChainVerifier``, which names the break as an auditor's copy would. Besides
the events it checks what only Kodori can: checkpoint signatures (each trusted key parsed once), checkpoints
or witnessed heads beyond the chain's end (the tail was cut), and the witness of signed heads kept outside
the database (``audit.witness``).

Every break found is kept as a ``ChainBreak`` row (tenant, first bad sequence number, what was found, when).
While any is open, every later verification, ``/audit`` and ``verify_audit_chain`` report it, whatever the
rows look like by then, and no checkpoint is signed. An owner or an operator acknowledges it with a reason,
recorded as an ``audit.break-acknowledged`` event; a verification then recognises that very finding (same
position, kind and detail), passes over it and verifies the rest of the chain, so a new break is reported
again. An acknowledgement counts only while its event is in the chain.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import logging
import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tenants.models import Tenant

from . import signing, witness
from .encoding import event_hash, format_time
from .models import AuditEvent, BreakKind, ChainBreak, ChainVerification, Checkpoint, EventType
from .verify_bundle import ENCODING_VERSION, GENESIS_HASH, HASHED_FIELDS, Break, ChainVerifier

__all__ = ["ChainStatus", "event_record", "format_time", "head", "iter_records", "verify"]

logger = logging.getLogger(__name__)

BATCH = 5_000
# The checks that verify only the events (and the checkpoints that vouch for them) read the witness this much:
WITNESS_ALL, WITNESS_LATEST, WITNESS_NONE = "all", "latest", "none"
# _fast spells the hashed body out for speed; this keeps it honest if a field is ever added.
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
_COLUMNS = (
    "seq, type, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor_id, "
    "actor_name, actor_email, request_id, ip, payload::text, prev_hash, hash"
)
_PAGE = (
    f"SELECT {_COLUMNS} FROM audit_auditevent WHERE tenant_id = %s AND seq > %s AND seq <= %s "  # noqa: S608
    "ORDER BY seq LIMIT %s"
)
_STREAM = (
    f"SELECT {_COLUMNS} FROM audit_auditevent WHERE tenant_id = %s AND seq > %s AND seq <= %s "  # noqa: S608
    "ORDER BY seq"
)
_cursor_names = itertools.count(1)


def _pages(tenant_id: int, after: int, upto: int | None) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of raw rows ``after < seq <= upto``, keyset pages: no transaction held (a streamed export)."""
    limit = upto if upto is not None else 2**62
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_PAGE, [tenant_id, after, limit, BATCH])
            rows = cursor.fetchall()
        yield rows
        if len(rows) < BATCH:
            return
        after = rows[-1][0]


def _record(tenant_id: int, row: tuple[Any, ...]) -> dict[str, Any]:
    seq, type_, created, actor_id, name, email, request_id, ip, payload, prev, hash_ = row
    return {
        "seq": seq, "tenant": tenant_id, "type": type_, "created_at": created, "actor_id": actor_id,
        "actor_name": name, "actor_email": email, "request_id": request_id, "ip": ip,
        "payload": orjson.loads(payload), "prev_hash": prev, "hash": hash_,
    }  # fmt: skip


def iter_records(tenant_id: int, after: int = 0, upto: int | None = None) -> Iterator[dict[str, Any]]:
    """Events ``after < seq <= upto`` in order, as chain records, without loading them all at once."""
    for rows in _pages(tenant_id, after, upto):
        for row in rows:
            yield _record(tenant_id, row)


def _stream(tenant_id: int, after: int, upto: int) -> Generator[list[tuple[Any, ...]]]:
    """Rows ``after < seq <= upto`` from a server-side cursor (one snapshot), fetched a batch ahead."""
    with transaction.atomic():  # a server-side cursor lives in a transaction
        connection.ensure_connection()
        raw: Any = connection.connection
        name = f"audit_verify_{next(_cursor_names)}"
        with raw.cursor(name=name, binary=True) as cursor:
            cursor.execute(_STREAM, [tenant_id, after, upto])
            yield from _prefetched(cursor)


def _prefetched(cursor: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Yield ``cursor``'s batches while a thread fetches the next: the server works while Python hashes.

    The thread only calls ``fetchmany`` on this cursor, and this thread does not touch the connection while it
    runs; it stops at the end, on an error (re-raised here) or when the consumer stops early.
    """
    batches: queue.Queue[list[tuple[Any, ...]] | BaseException] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def fetch() -> None:
        try:
            while not stop.is_set():
                rows = cursor.fetchmany(BATCH)
                batches.put(rows)
                if len(rows) < BATCH:
                    return
        except BaseException as exc:  # handed to the consumer
            batches.put(exc)

    thread = threading.Thread(target=fetch, name="audit-verify-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = batches.get()
            if isinstance(item, BaseException):
                raise item
            if item:
                yield item
            if len(item) < BATCH:
                return
    finally:
        stop.set()
        while thread.is_alive():  # a fetch blocked on a full queue needs room to finish
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.05)
        thread.join()


def _fast(rows: list[tuple[Any, ...]], verifier: ChainVerifier, vouched_seqs: list[int]) -> bool:
    """Check a whole batch with list operations and advance ``verifier``; False at any disagreement."""
    first, n = rows[0][0], len(rows)
    if first != verifier.next_seq or [r[0] for r in rows] != list(range(first, first + n)):
        return False
    prevs, hashes = [r[9] for r in rows], [r[10] for r in rows]
    if prevs[0] != verifier.prev_hash or prevs[1:] != hashes[:-1]:
        return False
    dumps, loads, sha256, fromhex = orjson.dumps, orjson.loads, hashlib.sha256, bytes.fromhex
    sort, tenant_id, v = orjson.OPT_SORT_KEYS, verifier.tenant, ENCODING_VERSION
    try:
        computed = [
            sha256(fromhex(prev) + dumps({
                "actor_email": email, "actor_id": actor_id, "actor_name": name, "created_at": created,
                "ip": ip, "payload": loads(payload), "request_id": request_id, "seq": seq,
                "tenant": tenant_id, "type": type_, "v": v,
            }, option=sort)).hexdigest()
            for seq, type_, created, actor_id, name, email, request_id, ip, payload, prev, _ in rows
        ]  # fmt: skip
    except (TypeError, ValueError, orjson.JSONDecodeError):
        return False
    if computed != hashes:
        return False
    last = first + n - 1
    expected = verifier.expected_hashes
    within = vouched_seqs[bisect.bisect_left(vouched_seqs, first) : bisect.bisect_right(vouched_seqs, last)]
    for seq in within:
        if expected[seq] != hashes[seq - first]:
            return False
    verifier.prev_hash, verifier.next_seq, verifier.count = hashes[-1], last + 1, verifier.count + n
    return True


# What a person's acknowledgement lets pass for the event it concerns: a gap also breaks the link after it.
_PASSES = {BreakKind.MISSING.value: frozenset({BreakKind.MISSING.value, BreakKind.RELINKED.value})}


def _slow(rows: list[tuple[Any, ...]], verifier: ChainVerifier, acks: _Acks) -> Break | None:
    """Walk a batch event by event; pass over acknowledged findings; return the first one that is not."""
    for row in rows:
        event, skip = _record(verifier.tenant, row), frozenset[str]()
        while (found := verifier.check(event, skip)) is not None:
            if found.kind in skip or not acks.passes(found):
                return found
            skip |= _PASSES.get(found.kind, frozenset({found.kind}))
    return None


def _verify_events(verifier: ChainVerifier, upto: int, acks: _Acks) -> Break | None:
    vouched_seqs = sorted(verifier.expected_hashes)
    batches = _stream(verifier.tenant, verifier.next_seq - 1, upto)
    try:
        for rows in batches:
            if not _fast(rows, verifier, vouched_seqs) and (found := _slow(rows, verifier, acks)) is not None:
                return found
    finally:
        batches.close()
    return None


def head(tenant: Tenant) -> AuditEvent | None:
    return AuditEvent.objects.for_tenant(tenant).order_by("-seq").first()


@dataclass(frozen=True)
class ChainStatus:
    """What ``/audit``, the command and the signer go by.

    ``breaks`` are the open breaks, oldest position first: found and not acknowledged, or marked acknowledged
    without an event in the chain to show for it. While there is one the chain is not ``ok``, whatever the
    events look like now. ``acknowledged`` are the breaks people dealt with, ``proofs`` the event that
    acknowledges each (by the break's pk). ``witness_error`` says why the witness could not be read.
    """

    tenant_id: int
    head_seq: int
    verified_seq: int
    verified_at: datetime | None
    breaks: tuple[ChainBreak, ...] = ()
    acknowledged: tuple[ChainBreak, ...] = ()
    proofs: Mapping[int, AuditEvent] = field(default_factory=dict)
    full_verified_at: datetime | None = None
    witness_error: str = ""

    @property
    def broken(self) -> Break | None:
        """The first open break, as the verifier would name it."""
        if not self.breaks:
            return None
        b = self.breaks[0]
        return Break(b.first_bad_seq, b.reason, b.kind, b.detail, b.last_bad_seq)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def complete(self) -> bool:
        return self.ok and self.verified_seq >= self.head_seq


@dataclass
class _Acks:
    """The acknowledged breaks in force: recognised again when found, and the evidence they void."""

    rows: list[ChainBreak]
    seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._by_finding = {(b.first_bad_seq, b.kind, b.detail): b for b in self.rows}
        # Events a person accepted as lost, or checkpoints as deleted: what vouched for them proves nothing.
        lost = (BreakKind.TRUNCATED, BreakKind.CHECKPOINT_MISSING)
        self._void = [(b.first_bad_seq, b.last_bad_seq) for b in self.rows if b.kind in lost]

    def passes(self, found: Break) -> bool:
        row = self._by_finding.get((found.seq, found.kind, found.detail[:200]))
        if row is not None:
            self.seen.add(row.pk)
        return row is not None

    def void(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self._void)


def _acknowledgements(tenant: Tenant) -> dict[tuple[Any, Any, Any], AuditEvent]:
    """The chain's ``audit.break-acknowledged`` events by the finding they name (the latest of each)."""
    kind = EventType.AUDIT_BREAK_ACKNOWLEDGED
    events = AuditEvent.objects.for_tenant(tenant).filter(type=kind).order_by("seq")
    found = {}
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else {}
        found[(payload.get("seq"), payload.get("kind"), payload.get("detail"))] = event
    return found


def acknowledgement(brk: ChainBreak) -> AuditEvent | None:
    """The event in the chain that acknowledges ``brk``, if there is one."""
    return _acknowledgements(brk.tenant).get((brk.first_bad_seq, brk.kind, brk.detail))


def _known_breaks(tenant: Tenant) -> tuple[list[ChainBreak], list[ChainBreak], dict[int, AuditEvent]]:
    """(open, acknowledged, the event acknowledging each by pk). An acknowledgement counts only while the
    chain holds its event: a break marked acknowledged without one (a forged row, or the event was cut off) is
    open."""
    rows = list(ChainBreak.objects.for_tenant(tenant).order_by("first_bad_seq", "found_at", "pk"))
    if not rows:
        return [], [], {}
    events = _acknowledgements(tenant)
    proofs = {}
    for b in rows:
        event = events.get((b.first_bad_seq, b.kind, b.detail))
        if b.acknowledged_at is not None and event is not None:
            proofs[b.pk] = event
    return [b for b in rows if b.pk not in proofs], [b for b in rows if b.pk in proofs], proofs


@dataclass(frozen=True)
class _Evidence:
    """A hash a signed checkpoint vouches for: from the database or from the witness."""

    seq: int
    hash: str
    signed_at: str
    source: str  # "checkpoint" or "witness"


@dataclass
class _Run:
    """One verification's inputs and findings."""

    tenant: Tenant
    acks: _Acks
    findings: list[Break] = field(default_factory=list)
    evidence: dict[int, _Evidence] = field(default_factory=dict)
    witness_error: str = ""
    unwitnessed: list[Checkpoint] = field(default_factory=list)
    checker: signing.SignatureChecker = field(default_factory=signing.SignatureChecker)
    _signed: dict[int, bool] = field(default_factory=dict)

    def found(self, candidate: Break) -> None:
        if not self.acks.passes(candidate):
            self.findings.append(candidate)

    def signed(self, cp: Checkpoint) -> bool:
        """Whether ``cp`` is signed by a trusted key, each checkpoint checked once per run."""
        if cp.pk not in self._signed:
            self._signed[cp.pk] = self.checker.checkpoint(cp)
        return self._signed[cp.pk]


def _check_checkpoints(run: _Run, checkpoints: list[Checkpoint]) -> None:
    """Signatures by trusted keys: a valid checkpoint becomes evidence of its event's hash."""
    for cp in checkpoints:
        if run.acks.void(cp.seq):
            continue
        if not run.signed(cp):
            reason = f"the signature of checkpoint #{cp.seq} is not valid for a trusted key"
            run.found(Break(cp.seq, reason, BreakKind.BAD_SIGNATURE, cp.signature[:200]))
            continue
        run.evidence.setdefault(cp.seq, _Evidence(cp.seq, cp.hash, format_time(cp.signed_at), "checkpoint"))


def _check_witness(run: _Run, mode: str, in_database: dict[int, Checkpoint]) -> None:
    """Compare the witness with the database; a witness that cannot be read is said so, never passed over."""
    try:
        _compare_witness(run, mode, in_database)
    except witness.WitnessUnavailable as exc:
        run.witness_error = str(exc)
        logger.error("audit: the witness of tenant %s cannot be read: %s", run.tenant.slug, exc)


def _compare_witness(run: _Run, mode: str, in_database: dict[int, Checkpoint]) -> None:
    """What the witness holds is evidence, whether or not the database still has it. Only objects the database
    does not corroborate are read, and count only with a valid signature."""
    if mode == WITNESS_ALL:
        entries = witness.entries(run.tenant.pk)
    else:
        latest = witness.latest(run.tenant.pk)
        entries = [latest] if latest is not None else []
        wanted = [e.seq for e in entries]
        in_database = {cp.seq: cp for cp in Checkpoint.objects.for_tenant(run.tenant).filter(seq__in=wanted)}
    witnessed = set()
    missing: list[int] = []
    for entry in entries:
        witnessed.add((entry.seq, entry.hash))
        if run.acks.void(entry.seq):
            continue
        cp = in_database.get(entry.seq)
        if cp is not None and cp.hash == entry.hash and run.signed(cp):
            signed_at = format_time(cp.signed_at)
            run.evidence.setdefault(entry.seq, _Evidence(entry.seq, cp.hash, signed_at, "witness"))
            continue
        record = witness.valid_record(entry, run.tenant.pk, run.checker)
        if record is None:
            reason = f"the witness object {entry.name} is not a valid signed checkpoint of #{entry.seq}"
            run.found(Break(entry.seq, reason, BreakKind.WITNESS_INVALID, entry.name[-200:]))
            continue
        if cp is not None and cp.hash != entry.hash and run.signed(cp):
            reason = f"the witness and the database hold different signed checkpoints of #{entry.seq}"
            run.found(Break(entry.seq, reason + " (signing key misused?)", BreakKind.REWRITTEN, entry.hash))
            continue
        run.evidence[entry.seq] = _Evidence(entry.seq, entry.hash, str(record["signed_at"]), "witness")
        if cp is None:
            missing.append(entry.seq)
    if missing:
        first, last = min(missing), max(missing)
        span = f"#{first}" if first == last else f"{len(missing)} checkpoints #{first}..#{last}"
        reason = f"the witness holds signed checkpoints the database no longer has ({span}: deleted?)"
        run.found(Break(first, reason, BreakKind.CHECKPOINT_MISSING, "", last))
    if mode == WITNESS_ALL:
        run.unwitnessed = [
            cp for cp in in_database.values() if (cp.seq, cp.hash) not in witnessed and run.signed(cp)
        ]


def _check_end(run: _Run, head_seq: int, known: int) -> None:
    """Evidence beyond the chain's end, or a chain shorter than one verified before: the tail was cut."""
    beyond = [ev for seq, ev in run.evidence.items() if seq > head_seq]
    if beyond:
        last = max(beyond, key=lambda ev: ev.seq)
        where = (
            f"a checkpoint signed {last.signed_at} covers #{last.seq}"
            if last.source == "checkpoint"
            else f"the witness holds a checkpoint of #{last.seq} signed {last.signed_at}"
        )
        missing = f"#{head_seq + 1}..#{last.seq}" if last.seq > head_seq + 1 else f"#{last.seq}"
        reason = f"events {missing} are missing: {where} (tail truncated?)"
        run.found(Break(head_seq + 1, reason, BreakKind.TRUNCATED, "", last.seq))
    elif known > head_seq and not run.acks.void(known):
        # A weak witness: the cache can be deleted too.
        reason = f"events after #{head_seq} are missing (#{known} was verified before)"
        run.found(Break(head_seq + 1, reason, BreakKind.TRUNCATED, "", known))


def _check_verified(run: _Run, start_seq: int, start_hash: str) -> None:
    """What was verified before: its last event still has its hash, and new evidence about it agrees."""
    below = {seq: ev for seq, ev in run.evidence.items() if seq <= start_seq}
    wanted = {*below, start_seq} if start_seq > 0 else set(below)
    if not wanted:
        return
    stored = dict(AuditEvent.objects.for_tenant(run.tenant).filter(seq__in=wanted).values_list("seq", "hash"))
    if start_seq > 0 and stored.get(start_seq) != start_hash:
        reason = f"#{start_seq} changed since it was verified"
        run.found(Break(start_seq, reason, BreakKind.REWRITTEN, str(stored.get(start_seq))))
    for seq in sorted(below):
        if stored.get(seq) != below[seq].hash:
            reason = f"#{seq} differs from the signed checkpoint of #{seq} (chain rewritten?)"
            run.found(Break(seq, reason, BreakKind.REWRITTEN, str(stored.get(seq))))


def verify(
    tenant: Tenant,
    *,
    full: bool = False,
    limit: int | None = None,
    witness_mode: str | None = None,
    found_by: str = "page view",
) -> ChainStatus:
    """Verify ``tenant``'s chain and remember what was found.

    Incremental runs (``full=False``) check the new events and checkpoints and that the event verified last
    still has its hash; ``limit`` caps the events one call checks (a page view). While a break is open they
    re-read nothing and report it. ``full`` re-reads everything from genesis. ``witness_mode``: ``all`` (the
    default of full runs) compares every witnessed head with the database, ``latest`` only the highest (the
    default when the cache is gone, and what the signer asks for), ``none`` skips the witness.
    """
    now = timezone.now()
    state = ChainVerification.objects.filter(tenant=tenant).first()
    last = AuditEvent.objects.for_tenant(tenant).order_by("-seq").values_list("seq", flat=True).first()
    head_seq = last or 0
    open_, acknowledged, proofs = _known_breaks(tenant)
    if open_ and not full:
        return _status(tenant, state, head_seq, open_, acknowledged, proofs)
    mode = witness_mode or (WITNESS_ALL if full else WITNESS_LATEST if state is None else WITNESS_NONE)
    start_seq, start_hash, cp_after = 0, GENESIS_HASH, 0
    if state is not None and not full:
        start_seq, start_hash, cp_after = state.verified_seq, state.verified_hash, state.checkpoint_pk
    run = _Run(tenant, _Acks(acknowledged))
    checkpoints = list(Checkpoint.objects.for_tenant(tenant).filter(pk__gt=cp_after).order_by("seq"))
    _check_checkpoints(run, checkpoints)
    if mode != WITNESS_NONE:
        _check_witness(run, mode, {cp.seq: cp for cp in checkpoints} if full else {})
    _check_end(run, head_seq, state.verified_seq if state is not None else 0)
    _check_verified(run, start_seq, start_hash)
    if state is not None and not full and start_seq == head_seq and not checkpoints and not run.findings:
        return _status(tenant, state, head_seq, open_, acknowledged, proofs, run.witness_error)
    verifier = ChainVerifier(
        tenant=tenant.pk,
        prev_hash=start_hash,
        next_seq=start_seq + 1,
        expected_hashes={seq: ev.hash for seq, ev in run.evidence.items() if start_seq < seq <= head_seq},
        hash_event=event_hash,
    )
    upto = head_seq if limit is None else min(head_seq, start_seq + limit)
    found = _verify_events(verifier, upto, run.acks)
    if found is None and verifier.last_seq < upto:
        found = Break(verifier.last_seq + 1, f"event #{verifier.last_seq + 1} is missing", BreakKind.MISSING)
    if found is not None:
        run.found(found)
    if run.unwitnessed and not run.witness_error:
        witness.backfill(run.unwitnessed)
    unchecked = [cp.pk for cp in checkpoints if cp.seq > verifier.last_seq]
    checked_through = (
        min(unchecked) - 1 if unchecked else max((cp.pk for cp in checkpoints), default=cp_after)
    )
    _remember(tenant, verifier, run, full, checked_through, now, found_by)
    open_, acknowledged, proofs = _known_breaks(tenant)
    state = ChainVerification.objects.filter(tenant=tenant).first()
    return _status(tenant, state, head_seq, open_, acknowledged, proofs, run.witness_error)


def _status(
    tenant: Tenant,
    state: ChainVerification | None,
    head_seq: int,
    open_: Iterable[ChainBreak],
    acknowledged: Iterable[ChainBreak],
    proofs: dict[int, AuditEvent],
    witness_error: str = "",
) -> ChainStatus:
    return ChainStatus(
        tenant_id=tenant.pk,
        head_seq=head_seq,
        verified_seq=state.verified_seq if state is not None else 0,
        verified_at=state.verified_at if state is not None else None,
        breaks=tuple(open_),
        acknowledged=tuple(acknowledged),
        proofs=proofs,
        full_verified_at=state.full_verified_at if state is not None else None,
        witness_error=witness_error,
    )


def _remember(
    tenant: Tenant,
    verifier: ChainVerifier,
    run: _Run,
    full: bool,
    checkpoint_pk: int,
    now: datetime,
    found_by: str,
) -> None:
    with transaction.atomic():
        state = ChainVerification.objects.select_for_update().filter(tenant=tenant).first()
        if state is None:
            state = ChainVerification(tenant=tenant, verified_hash=GENESIS_HASH, verified_at=now)
        if full or verifier.last_seq >= state.verified_seq:
            state.verified_seq, state.verified_hash = verifier.last_seq, verifier.prev_hash
            state.checkpoint_pk = checkpoint_pk
            state.verified_at = now
        if full:
            state.full_verified_at = now
        state.save()
        if run.acks.seen:
            ChainBreak.objects.for_tenant(tenant).filter(pk__in=run.acks.seen).update(last_seen_at=now)
    for found in sorted(run.findings, key=lambda b: b.seq):
        _keep(tenant, found, now, found_by)


def _keep(tenant: Tenant, found: Break, now: datetime, found_by: str) -> None:
    """Persist a finding, or note that an open one was seen again."""
    finding = {"first_bad_seq": found.seq, "kind": found.kind, "detail": found.detail[:200]}
    known = ChainBreak.objects.for_tenant(tenant).filter(**finding)
    if known.update(last_seen_at=now):
        return
    logger.error("audit: tenant %s: %s", tenant.slug, found)
    try:
        with transaction.atomic():
            ChainBreak.objects.create(
                tenant=tenant,
                **finding,
                last_bad_seq=max(found.last_seq or found.seq, found.seq),
                reason=found.reason,
                found_at=now,
                found_by=found_by[:32],
                last_seen_at=now,
            )
    except IntegrityError:  # another verification kept it first
        known.update(last_seen_at=now)
