"""The scrub: walk every stored blob at a limited rate and authenticate every chunk, sending no byte anywhere.

One blob (``scrub_blob``), in this order:

1. The object exists (else ``Damage.MISSING``) and is exactly ``envelope.ciphertext_size(blob.size)`` bytes
   long (else ``Damage.LENGTH``: truncated, or bytes appended). This needs no key, so it is done for every
   blob, a sealed tenant's too.
2. The tenant is not sealed and its key opens the blob's data key. A sealed tenant, a disabled or refusing
   key, an unreachable KMS: the blob is *not checked*, with the reason, and never marked damaged. A data key
   that does not authenticate under its own tenant key version (``keyring.DataKeyMismatch``, an ``INTEGRITY``
   ``ProviderError``) is ``Damage.DATA_KEY``; an integrity refusal by the KMS concerns the tenant key, not the
   blob: not checked.
3. The header authenticates (else ``Damage.HEADER``: wrong magic or version, a changed salt or commitment, or
   another blob's object in its place).
4. Every chunk authenticates, ~1 MiB at a time (``RandomAccessReader.verify_chunks``; else ``Damage.CHUNK`` at
   the first chunk that fails). Plaintext goes into the reader's reused buffer and is dropped there.

Findings go through ``blobs.damage``: ``report`` (one ``blob.corrupt`` audit event per new finding, none for
the same finding again) or ``verified`` (sets ``verified_at``; lifts a mark and records ``blob.repaired``). An
error of the blob store is neither damage nor proof of health: the blob is not checked.

The walk (``run``) goes over the ready blobs of every tenant, or of one, in blob id order (keyset on the
primary key; ids are random UUIDs, so tenants interleave). A pass is a ``ScrubPass`` row: its ``cursor`` (the
last blob done), its counts, and where to resume inside a large blob; it is written every second
(``CHECKPOINT_SECONDS``) and whenever a run stops, so a run that is killed continues where it stopped, having
re-checked at most a second's worth of blobs and the blob it was on. A run ends at the end of
the pass (the next run starts a new one), after ``limit`` blobs, when its time is up (between two batches of
chunks, even inside a blob), or when the blob store fails twice in a row (the cursor then stays before those
blobs). Reads are paced to ``rate`` bytes per second (``Throttle``). A PostgreSQL session advisory lock keeps
the periodic task and the command from ever scrubbing at the same time; a killed process's lock goes with its
database session. Blobs uploaded behind the cursor during a pass are checked by the next pass.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Max, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from encryption import keyring
from encryption.format import envelope
from encryption.format.cobblestone import BATCH_CHUNKS, SEALED_CHUNK_SIZE
from encryption.format.errors import EnvelopeError
from encryption.models import DataKey
from encryption.providers import FailureKind, ProviderError
from tenants.models import Tenant

from . import damage
from .models import Blob, BlobStatus, Damage, PassStatus, ScrubPass
from .storage import open_stored

logger = logging.getLogger(__name__)

FOUND_BY = "scrub"
# The scrub's session advisory lock ("KDSC"). One-key locks: the audit chain's two-key locks never collide.
LOCK_KEY = 0x4B445343
# Blobs read from the database at a time (the walk's keyset page), and finished passes kept per scope.
PAGE = 200
KEEP_PASSES = 20
# The pass (cursor and counts) is written at most this often, and whenever a run stops: a killed run re-checks
# at most this many seconds' worth of blobs (idempotently: the same damage is not recorded twice). Writing it
# after every blob cost a third of the time per small blob (bench/scrub.py).
CHECKPOINT_SECONDS = 1.0


# --- Progress ----------------------------------------------------------------------------------------------


def last_finished(tenant: Tenant) -> datetime | None:
    """When the last pass that covered ``tenant`` (every tenant, or this one) finished."""
    passes = ScrubPass.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant), status=PassStatus.FINISHED)
    result: datetime | None = passes.aggregate(at=Max("ended_at"))["at"]
    return result


# --- One blob ----------------------------------------------------------------------------------------------


class Outcome(StrEnum):
    VERIFIED = "verified"  # every chunk authenticated
    DAMAGED = "damaged"  # reported through blobs.damage (a missing object too)
    NOT_CHECKED = "not-checked"  # sealed tenant, key or store unavailable: ``reason`` says which
    PAUSED = "paused"  # time ran out between two batches of chunks: resume at ``next_chunk``
    GONE = "gone"  # the blob was deleted while it was being checked


@dataclass
class BlobResult:
    blob: Blob
    outcome: Outcome
    damage: Damage | None = None
    chunk: int | None = None
    reason: str = ""
    storage_error: bool = False
    next_chunk: int = 0
    bytes_read: int = 0
    news: bool = False  # an audit event was recorded (blob.corrupt or blob.repaired)


class Throttle:
    """Paces reads to ``rate`` bytes per second (0: unlimited). ``take(n)`` waits until ``n`` more bytes are
    within the budget, before they are read, so ``total / rate`` seconds have passed once ``total`` bytes
    were allowed. Idle time earns no credit: there are no bursts after a pause."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = max(0, rate)
        self._clock = clock
        self._sleep = sleep
        self._free_at = 0.0

    def take(self, n: int) -> None:
        if self.rate == 0 or n <= 0:
            return
        now = self._clock()
        self._free_at = max(self._free_at, now) + n / self.rate
        if self._free_at > now:
            self._sleep(self._free_at - now)


def _stored_span(first: int, last: int, stored: int) -> int:
    """How many stored bytes chunks ``first..last`` of a ``stored``-byte blob occupy."""
    begin = envelope.HEADER_SIZE + first * SEALED_CHUNK_SIZE
    return min(envelope.HEADER_SIZE + (last + 1) * SEALED_CHUNK_SIZE, stored) - begin


def _still_there(blob: Blob) -> bool:
    return Blob.objects.filter(pk=blob.pk, status=BlobStatus.READY).exists()


def _damaged(blob: Blob, kind: Damage, *, chunk: int | None = None, bytes_read: int = 0) -> BlobResult:
    news = damage.report(blob, kind, chunk=chunk, found_by=FOUND_BY)
    if not news and not _still_there(blob):
        return BlobResult(blob, Outcome.GONE, bytes_read=bytes_read)
    return BlobResult(blob, Outcome.DAMAGED, damage=kind, chunk=chunk, bytes_read=bytes_read, news=news)


def _not_checked(blob: Blob, reason: str, *, storage_error: bool = False, bytes_read: int = 0) -> BlobResult:
    return BlobResult(
        blob, Outcome.NOT_CHECKED, reason=reason, storage_error=storage_error, bytes_read=bytes_read
    )


def _storage_failure(blob: Blob, exc: Exception, bytes_read: int = 0) -> BlobResult:
    logger.warning("blobs: the scrub could not read the object of blob %s: %r", blob.pk, exc)
    return _not_checked(
        blob, f"blob store error ({type(exc).__name__})", storage_error=True, bytes_read=bytes_read
    )


def _key_reason(exc: Exception) -> str:
    if isinstance(exc, ProviderError) and exc.kind == FailureKind.TRANSIENT:
        return f"key provider unreachable: {exc}"
    return f"key unavailable: {exc}"


@sensitive_variables("dek")
def scrub_blob(
    blob: Blob, *, throttle: Throttle | None = None, first_chunk: int = 0, deadline: float | None = None
) -> BlobResult:
    """Check ``blob`` (its ``tenant`` loaded) as the module docstring says, and record what was found.

    ``first_chunk`` resumes a check that an earlier run of the same pass paused; ``deadline`` (a
    ``time.monotonic()`` value) pauses this one between two batches of chunks, after at least one.
    """
    throttle = throttle or Throttle(0)
    stored = envelope.ciphertext_size(blob.size)
    try:
        opened = open_stored(blob.storage_key)
    except Exception as exc:
        return _storage_failure(blob, exc)
    if opened is None:
        return _damaged(blob, Damage.MISSING)
    source, length = opened
    try:
        if length != stored:
            return _damaged(blob, Damage.LENGTH)
        tenant = blob.tenant
        if tenant.is_sealed:
            return _not_checked(blob, f"tenant sealed: {tenant.seal_reason or 'Kodori cannot use its key.'}")
        try:
            dek = keyring.open_data_key(tenant, blob.pk)
        except DataKey.DoesNotExist:
            return BlobResult(blob, Outcome.GONE)  # a blob row never outlives its data key: deleted meanwhile
        except keyring.DataKeyMismatch:
            return _damaged(blob, Damage.DATA_KEY)
        except (ProviderError, keyring.KeyUnavailable) as exc:
            return _not_checked(blob, _key_reason(exc))
        return _authenticate(blob, dek, source, stored, throttle, first_chunk, deadline)
    finally:
        source.close()


@sensitive_variables("dek")
def _authenticate(
    blob: Blob, dek: bytes, source: Any, stored: int, throttle: Throttle, first: int, deadline: float | None
) -> BlobResult:
    throttle.take(envelope.HEADER_SIZE)
    read = envelope.HEADER_SIZE
    try:
        reader = envelope.RandomAccessReader(
            dek, envelope.blob_context(blob.tenant_id, blob.pk), source, stored
        )
    except EnvelopeError:
        return _damaged(blob, Damage.HEADER, bytes_read=read)
    except ValueError:
        raise  # a programming error, not the store's
    except Exception as exc:  # the store failed while reading (OSError, botocore's errors...)
        return _storage_failure(blob, exc, read)
    last = reader.chunks - 1
    for batch_first in range(min(first, last), last + 1, BATCH_CHUNKS):
        if deadline is not None and batch_first > first and time.monotonic() >= deadline:
            return BlobResult(blob, Outcome.PAUSED, next_chunk=batch_first, bytes_read=read)
        batch_last = min(batch_first + BATCH_CHUNKS - 1, last)
        span = _stored_span(batch_first, batch_last, stored)
        throttle.take(span)
        try:
            reader.verify_chunks(batch_first, batch_last)
        except EnvelopeError:
            return _damaged(blob, Damage.CHUNK, chunk=reader.failed_chunk, bytes_read=read + span)
        except ValueError:
            raise
        except Exception as exc:
            return _storage_failure(blob, exc, read)
        read += span
    news = damage.verified(blob, found_by=FOUND_BY)
    return BlobResult(blob, Outcome.VERIFIED, bytes_read=read, news=news)


# --- The walk ----------------------------------------------------------------------------------------------


class Stop(StrEnum):
    """Why a run ended."""

    FINISHED = "pass finished; the next run starts a new pass"
    LIMIT = "limit reached; the next run continues from the cursor"
    TIME = "time budget used; the next run continues from the cursor"
    STORAGE = "the blob store failed twice in a row; the next run retries from the cursor"
    NOT_DUE = "the last pass started less than BLOB_SCRUB_PASS_INTERVAL_SECONDS ago; no new pass yet"


@dataclass
class TenantTally:
    """What one run found in one tenant."""

    slug: str
    name: str
    verified: int = 0
    damaged: int = 0
    missing: int = 0
    not_checked: Counter[str] = field(default_factory=Counter)

    @property
    def checked(self) -> int:
        return self.verified + self.damaged + self.missing

    def line(self) -> str:
        skipped = sum(self.not_checked.values())
        return (
            f"tenant {self.slug} ({self.name}): checked {self.checked} (ok {self.verified}, damaged "
            f"{self.damaged}, missing {self.missing}), not checked {skipped}"
        )


@dataclass
class ScrubReport:
    """What one run did (``tallies``, ``findings``) and where its pass stands now (``scrub_pass``)."""

    scrub_pass: ScrubPass | None
    resumed: bool
    rate: int
    tallies: dict[int, TenantTally] = field(default_factory=dict)
    findings: list[BlobResult] = field(default_factory=list)
    blobs: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    stopped: Stop = Stop.FINISHED
    store_error: str = ""  # what the store answered when it stopped the run (Stop.STORAGE)

    @property
    def damage_found(self) -> bool:
        return bool(self.findings)

    def count(self, result: BlobResult) -> None:
        self.blobs += 1
        self.bytes_read += result.bytes_read
        if result.outcome in (Outcome.GONE, Outcome.PAUSED):
            return
        tenant = result.blob.tenant
        tally = self.tallies.setdefault(tenant.pk, TenantTally(tenant.slug, tenant.name))
        if result.outcome == Outcome.VERIFIED:
            tally.verified += 1
        elif result.outcome == Outcome.NOT_CHECKED:
            tally.not_checked[result.reason] += 1
        elif result.damage == Damage.MISSING:
            tally.missing += 1
            self.findings.append(result)
        else:
            tally.damaged += 1
            self.findings.append(result)

    def lines(self, *, names: bool = True) -> list[str]:
        """The summary for people: per tenant, then each damaged or missing blob (named if ``names``)."""
        scrub_pass = self.scrub_pass
        if scrub_pass is None:
            return [f"Scrub: nothing to do: {self.stopped.value}."]
        rate = f"{self.rate / 2**20:.1f} MiB/s" if self.rate else "unlimited"
        speed = self.bytes_read / self.seconds / 1e6 if self.seconds else 0.0
        out = [
            f"Scrub pass {scrub_pass.pk} over {scrub_pass.scope}, started "
            f"{scrub_pass.started_at:%Y-%m-%d %H:%M} UTC{' (resumed)' if self.resumed else ''}: "
            f"{self.blobs} blob(s), {self.bytes_read / 2**20:.1f} MiB in {self.seconds:.1f} s "
            f"({speed:.1f} MB/s; rate limit {rate})."
        ]
        for tally in sorted(self.tallies.values(), key=lambda t: t.slug):
            out.append(f"  {tally.line()}")
            out.extend(f"    not checked, {reason}: {n}" for reason, n in sorted(tally.not_checked.items()))
        if self.findings:
            out.append("Damaged or missing blobs:")
            for found in self.findings:
                blob = found.blob
                name = f" name={blob.name!r}" if names else ""
                chunk = "-" if found.chunk is None else str(found.chunk)
                kind = found.damage.value if found.damage else "?"
                news = "" if found.news else " (already marked)"
                out.append(
                    f"  tenant={blob.tenant.slug} blob={blob.pk}{name} damage={kind} chunk={chunk}{news}"
                )
        out.append(
            f"Pass so far: checked {scrub_pass.checked:,} (ok {scrub_pass.verified:,}, damaged "
            f"{scrub_pass.damaged:,}, missing {scrub_pass.missing:,}), not checked "
            f"{scrub_pass.not_checked:,}, {scrub_pass.bytes_read / 2**20:,.1f} MiB read over "
            f"{scrub_pass.runs} run(s)."
        )
        out.append(f"Stopped: {self.stopped.value}{f' ({self.store_error})' if self.store_error else ''}.")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON for the task's result: counts and blob ids, no file names."""
        return {
            "pass": self.scrub_pass.pk if self.scrub_pass else None,
            "resumed": self.resumed,
            "blobs": self.blobs,
            "bytes": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped.name.lower(),
            "tenants": {
                t.slug: {
                    "verified": t.verified,
                    "damaged": t.damaged,
                    "missing": t.missing,
                    "not_checked": dict(t.not_checked),
                }
                for t in self.tallies.values()
            },
            "damaged": [
                {
                    "tenant": r.blob.tenant.slug,
                    "blob": str(r.blob.pk),
                    "damage": r.damage.value if r.damage else None,
                    "chunk": r.chunk,
                }
                for r in self.findings
            ],
        }


@contextmanager
def exclusive() -> Iterator[bool]:
    """Hold the scrub's session advisory lock while the block runs; yields False (and holds nothing) if
    another process has it. A session lock outlives transactions and goes with the session if the process
    dies."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        (acquired,) = cursor.fetchone()
    try:
        yield bool(acquired)
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
            except DatabaseError:
                logger.warning(
                    "blobs: could not release the scrub lock (it goes with the session)", exc_info=True
                )


def _open_pass(
    tenant: Tenant | None, restart: bool, pass_interval: float | None
) -> tuple[ScrubPass | None, bool]:
    """The running pass of this scope, or a new one (None if the last one started too recently)."""
    scope = ScrubPass.objects.filter(tenant=tenant)
    current = scope.filter(status=PassStatus.RUNNING).first()
    now = timezone.now()
    if current is not None and restart:
        current.status, current.ended_at = PassStatus.ABANDONED, now
        current.save(update_fields=["status", "ended_at", "updated_at"])
        current = None
    if current is not None:
        return current, True
    if pass_interval and not restart:
        latest = scope.order_by("-started_at").first()
        if latest is not None and latest.started_at > now - timedelta(seconds=pass_interval):
            return None, False
    return ScrubPass.objects.create(tenant=tenant, started_at=now), False


def _pages(tenant: Tenant | None, after: uuid.UUID | None) -> Iterator[Blob]:
    """Ready blobs in id order after ``after``, a page at a time (each page is a fresh, short query)."""
    blobs = Blob.objects.filter(status=BlobStatus.READY).select_related("tenant").order_by("pk")
    if tenant is not None:
        blobs = blobs.for_tenant(tenant)
    while True:
        page = list((blobs if after is None else blobs.filter(pk__gt=after))[:PAGE])
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].pk


class _Walk:
    def __init__(self, scrub_pass: ScrubPass, report: ScrubReport, limit: int | None, deadline: float | None):
        self.scrub_pass = scrub_pass
        self.report = report
        self.limit = limit
        self.deadline = deadline
        self.throttle = Throttle(report.rate)
        # Blobs the store failed on, not yet counted: a success after them counts them, a second failure
        # stops the run with the cursor before them.
        self.pending: list[BlobResult] = []
        self.saved_at = time.monotonic()

    def run(self) -> Stop:
        stop = self._walk()
        self._checkpoint(force=True)
        return stop

    def _checkpoint(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.saved_at >= CHECKPOINT_SECONDS:
            self.scrub_pass.save()
            self.saved_at = now

    def _walk(self) -> Stop:
        for blob in _pages(self.scrub_pass.tenant, self.scrub_pass.cursor):
            if self.limit is not None and self.report.blobs + len(self.pending) >= self.limit:
                return Stop.LIMIT
            done = self.report.blobs + len(self.pending)
            if self.deadline is not None and done and time.monotonic() >= self.deadline:
                return Stop.TIME  # after one blob at least: every run makes progress
            first = self.scrub_pass.resume_chunk if blob.pk == self.scrub_pass.resume_blob else 0
            if blob.is_damaged:
                first = 0  # damage found meanwhile: the chunks checked before prove nothing now
            result = scrub_blob(blob, throttle=self.throttle, first_chunk=first, deadline=self.deadline)
            if result.storage_error:
                if self.pending:
                    self.report.store_error = result.reason
                    return Stop.STORAGE
                self.pending.append(result)
                continue
            if result.outcome == Outcome.PAUSED:
                self._pause(result)
                return Stop.TIME
            self._done(result)
        self._flush()
        return Stop.FINISHED

    def _flush(self) -> None:
        for waiting in self.pending:
            self._done(waiting, flush=False)
        self.pending.clear()

    def _done(self, result: BlobResult, *, flush: bool = True) -> None:
        if flush:
            self._flush()
        self.report.count(result)
        p = self.scrub_pass
        p.bytes_read += result.bytes_read
        if result.outcome == Outcome.VERIFIED:
            p.verified += 1
        elif result.outcome == Outcome.NOT_CHECKED:
            p.not_checked += 1
        elif result.outcome == Outcome.DAMAGED:
            if result.damage == Damage.MISSING:
                p.missing += 1
            else:
                p.damaged += 1
        p.cursor, p.resume_blob, p.resume_chunk = result.blob.pk, None, 0
        self._checkpoint()

    def _pause(self, result: BlobResult) -> None:
        self._flush()
        self.report.count(result)
        p = self.scrub_pass
        p.bytes_read += result.bytes_read
        p.resume_blob, p.resume_chunk = result.blob.pk, result.next_chunk


def _finish(scrub_pass: ScrubPass) -> None:
    scrub_pass.status, scrub_pass.ended_at = PassStatus.FINISHED, timezone.now()
    scrub_pass.save()
    ended = ScrubPass.objects.filter(tenant=scrub_pass.tenant_id).exclude(status=PassStatus.RUNNING)
    old = list(ended.order_by("-started_at", "-id").values_list("pk", flat=True)[KEEP_PASSES:])
    if old:
        ScrubPass.objects.filter(pk__in=old).delete()


def run(
    *,
    tenant: Tenant | None = None,
    limit: int | None = None,
    rate: int | None = None,
    seconds: float | None = None,
    restart: bool = False,
    pass_interval: float | None = None,
) -> ScrubReport | None:
    """Scrub from where the running pass of this scope stopped; None if another scrub holds the lock.

    ``tenant``: one tenant's blobs (its own pass) instead of every tenant's. ``limit``: at most this many
    blobs. ``rate``: bytes per second (0 unlimited; default ``BLOB_SCRUB_BYTES_PER_SECOND``). ``seconds``:
    stop after this long. ``restart``: abandon the running pass and start over. ``pass_interval``: start a new
    pass only if the last one started at least this many seconds ago (the periodic task's rule; the command
    has none).
    """
    rate = settings.BLOB_SCRUB_BYTES_PER_SECOND if rate is None else rate
    started = time.monotonic()
    with exclusive() as acquired:
        if not acquired:
            return None
        scrub_pass, resumed = _open_pass(tenant, restart, pass_interval)
        report = ScrubReport(scrub_pass, resumed, rate)
        if scrub_pass is None:
            report.stopped = Stop.NOT_DUE
            return report
        scrub_pass.runs += 1
        scrub_pass.save(update_fields=["runs", "updated_at"])
        deadline = started + seconds if seconds is not None else None
        report.stopped = _Walk(scrub_pass, report, limit, deadline).run()
        if report.stopped == Stop.FINISHED:
            _finish(scrub_pass)
    report.seconds = time.monotonic() - started
    return report


def scheduled_run() -> dict[str, Any]:
    """The periodic task's work: at most ``BLOB_SCRUB_RUN_SECONDS`` of the running pass, then a log summary
    (a WARNING naming the damaged blobs by id when this run found any)."""
    seconds = float(settings.BLOB_SCRUB_RUN_SECONDS)
    if seconds <= 0:
        return {"skipped": "the periodic scrub is off (BLOB_SCRUB_RUN_SECONDS=0)"}
    report = run(seconds=seconds, pass_interval=float(settings.BLOB_SCRUB_PASS_INTERVAL_SECONDS))
    if report is None:
        logger.info("blobs: another scrub holds the lock; this run did nothing")
        return {"skipped": "another scrub is running"}
    summary = "\n".join(report.lines(names=False))
    if report.damage_found or report.stopped == Stop.STORAGE:
        logger.warning(
            "blobs: the scrub found damaged or missing blobs or could not read the store:\n%s", summary
        )
    else:
        logger.info("blobs: scrub run:\n%s", summary)
    return report.as_dict()
