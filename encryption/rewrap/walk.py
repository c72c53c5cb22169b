"""The re-wrap walk itself: checkpointed batches that move data keys to the active key version.

After a rotation, old blobs' DEKs are still wrapped by tenant key versions (TKVs) under the retired KEK. A
walk (a ``RewrapJob``, driven by the ``run_rewrap`` Celery task) visits those data-key rows one source
version at a time, in keyset-paginated batches ordered by id. Each batch is one transaction:

1. lock the job row (``SELECT … FOR UPDATE``): two workers on one job take turns and each starts from the
   checkpoint the other committed, so no batch is ever applied twice;
2. retarget if the tenant rotated since the last batch (the old target becomes one more source);
3. read up to ``KODORI_REWRAP_BATCH_SIZE`` rows of the current source after the cursor;
4. open each DEK with the source TKV and seal it under the target TKV with the new associated data (the
   DEK itself, and so the blob's bytes, never change); count the wraps on the target first;
5. ``UPDATE … FROM unnest(ids, wrapped)`` with a compare-and-swap on the old version id: a row deleted or
   moved meanwhile is simply not updated;
6. advance the cursor and the counts in the same transaction.

``walk`` (what the task runs) also reads and counts batch N+1 in batch N's transaction, before its UPDATE, and
seals it in a background thread while PostgreSQL writes batch N and commits (``ahead``: the crypto then costs
no wall-clock time); batch N+1 uses it only if the job still stands where it was prepared.

A worker killed at any point loses at most its open transaction; the watchdog (``resume_stalled_rewraps``)
re-queues a running job whose checkpoint went stale. Uploads go on throughout: new data keys are wrapped by
the active version, which is never a source. When no source has rows left, the walk destroys every retired
version that nothing references any more (the row stays as a tombstone, its key material is erased) and
reports which KEKs now protect nothing: those are safe to delete from the customer's KMS.

Plaintext keys exist only in locals of ``aead.Rewrapper`` and in the process's TKV cache; job rows, task
arguments and audit payloads carry ids and counts only.
"""

from __future__ import annotations

import enum
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery

from encryption import keyring
from encryption.models import (
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKeyVersion,
    VersionStatus,
)
from encryption.providers import FailureKind, ProviderError
from encryption.rewrap.ahead import Ahead, Plan, Row, Sealed, seal_rows
from encryption.rewrap.ending import fail_job, note_error
from encryption.rewrap.ending import finish as _finish
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# The KEK status of the version a job's cursor is on, read in the same statement as the job.
_SOURCE_KEK_STATUS = TenantKeyVersion.objects.filter(pk=OuterRef("cursor_tkv_id")).values("kek__status")[:1]
# Past any real id: a source whose cursor sits here has nothing left to read.
_END = 2**63 - 1
# How much a new batch's throughput moves the smoothed rate.
_RATE_WEIGHT = 0.3
# Step 5: the compare-and-swap on the old version id. The two arrays are binary parameters (``%b``): Django's
# cursor binds on the client, spelling out every wrapped key as escaped text that the server then parses
# again, about 10 ms of CPU per 1,000 rows against 1 ms in binary (bench/rewrap.py, docs/benchmarks.md).
_MOVE = (
    "UPDATE data_keys AS d SET tkv_id = %s, wrapped_dek = v.w "
    "FROM unnest(%b::bigint[], %b::bytea[]) AS v(id, w) "
    "WHERE d.id = v.id AND d.tkv_id = %s AND d.tenant_id = %s"
)


class Outcome(enum.StrEnum):
    MORE = "more"  # a batch was applied (or a source skipped): call again
    FINISHED = "finished"  # the job completed or failed just now
    STOPPED = "stopped"  # the job is not running (paused, cancelled, finished, or gone)


class _SourceBlocked(Exception):
    """A source version cannot be opened (its KEK refuses); the walk records why and goes on without it."""

    def __init__(self, tkv: TenantKeyVersion, cause: Exception) -> None:
        super().__init__(str(cause))
        self.tkv = tkv


def walk(job_pk: int, *, seconds: float | None = None) -> Outcome:
    """Apply batches until the job stops or finishes (or ``seconds`` pass: then ``Outcome.MORE``)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewrap-seal") as pool:
        prepared = Ahead(pool)
        while True:
            outcome = run_batch(job_pk, prepared)
            if outcome != Outcome.MORE:
                return outcome
            if deadline is not None and time.monotonic() >= deadline:
                return Outcome.MORE


def run_batch(job_pk: int, prepared: Ahead | None = None) -> Outcome:
    """One checkpointed step of the walk (see the module docstring). Safe to call from many workers at once.

    With ``prepared``, the step also reads and counts the next batch and seals it in the background while
    this one is written, and uses what the previous step prepared if the job still stands there (``ahead``).

    Raises ``ProviderError`` (transient: try again later, nothing changed) and database errors (the
    transaction rolled back, nothing changed). A definite refusal of the active key fails the job and seals
    the tenant; a refusal of a retired key skips that version and is reported when the walk ends.
    """
    if connection.in_atomic_block:
        prepared = None  # nothing commits here, so nothing prepared here could be known to stand
    try:
        with transaction.atomic():
            outcome = _batch(job_pk, prepared)
        if prepared is not None:
            prepared.committed()
        return outcome
    except _SourceBlocked as blocked:
        _skip_source(job_pk, blocked.tkv, str(blocked))
        return Outcome.MORE
    except (keyring.KeyUnavailable, ProviderError) as exc:
        if isinstance(exc, ProviderError) and exc.kind == FailureKind.TRANSIENT:
            note_error(job_pk, f"{exc} Kodori retries on its own.")
            raise
        fail_job(job_pk, f"The active key could not be used: {exc}", seal=exc.kind.seals)
        return Outcome.FINISHED
    finally:
        if prepared is not None:
            prepared.drop_pending()  # after committed() there is nothing pending; otherwise it rolled back


def _batch(job_pk: int, prepared: Ahead | None) -> Outcome:
    """Steps 1-6 of the module docstring. A batch's statements: lock the job, read the rows, read the two
    versions, count the wraps, write the rows, save the job (with ``prepared``: the next batch's rows and
    count come before the write, and this one's were done by the previous batch). A rotation
    shows up as the count failing (the target is no longer active) or, at the end, as another active
    version: then the walk retargets."""
    started = time.monotonic()
    job = (
        RewrapJob.objects.select_for_update(of=("self",))
        .select_related("tenant", "target_tkv__kek")
        # Read with the lock: a prepared batch needs no second read to know its source key is still retired.
        .annotate(source_kek_status=Subquery(_SOURCE_KEK_STATUS))
        .filter(pk=job_pk)
        .first()
    )
    if job is None or job.status != RewrapStatus.RUNNING:
        return Outcome.STOPPED
    tenant = job.tenant
    if tenant.is_sealed:
        _finish(job, tenant, error=f"Stopped because {tenant.name} was sealed: {tenant.seal_reason}")
        return Outcome.FINISHED
    ready = _take_prepared(job, prepared)
    if ready is None:
        rows = _fetch(tenant.pk, job.cursor_tkv_id, job.cursor_id)
        while not rows:
            source_id = _next_source(tenant, job.target_tkv_id, after=job.cursor_tkv_id or 0)
            if source_id is None:
                return _end_or_retarget(job, tenant)
            job.cursor_tkv_id, job.cursor_id = source_id, 0
            rows = _fetch(tenant.pk, source_id, 0)
        source, target = _versions(job)
        if source.kek.status == KeyStatus.ACTIVE:
            _drop_source(job, source)  # its key was made active again during the walk: its data stays put
            return Outcome.MORE
        if not _count_wraps(target, len(rows)):
            return _wrap_limit(job, tenant, target)
        sealed = _seal(tenant, source, target, rows)
    else:
        source, target, sealed = ready
    if prepared is not None:
        _prepare_next(prepared, job, tenant, source, target, after=sealed.last_id)
    moved = _write(tenant, source, target, sealed)
    job.done += moved
    job.unreadable += sealed.unreadable
    entry = job.versions.setdefault(str(source.pk), _entry(source, 0))
    entry["done"] = entry.get("done", 0) + moved
    if sealed.unreadable:
        entry["unreadable"] = entry.get("unreadable", 0) + sealed.unreadable
    job.cursor_id = sealed.last_id
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = sealed.read / elapsed
    job.rate = rate if job.rate <= 0 else (1 - _RATE_WEIGHT) * job.rate + _RATE_WEIGHT * rate
    job.last_error = ""
    job.save()
    return Outcome.MORE


def _versions(job: RewrapJob) -> tuple[TenantKeyVersion, TenantKeyVersion]:
    """The job's current source and target versions, read now (with their KEKs)."""
    tkvs = TenantKeyVersion.objects.select_related("kek").in_bulk([job.cursor_tkv_id, job.target_tkv_id])
    return tkvs[job.cursor_tkv_id], tkvs[job.target_tkv_id]


def _take_prepared(
    job: RewrapJob, prepared: Ahead | None
) -> tuple[TenantKeyVersion, TenantKeyVersion, Sealed] | None:
    """The batch the previous step prepared, if the job still stands where it was prepared for and both
    versions are still what they were then (source under a retired KEK, target active), as read with the
    job's lock. The source version's row is the one read when the batch was prepared (its id, number and KEK
    do not change); the target's is the one read now."""
    if prepared is None or job.cursor_tkv_id is None:
        return None
    taken = prepared.take(Plan(job.pk, job.cursor_tkv_id, job.target_tkv_id, job.cursor_id))
    if taken is None:
        return None
    sealed, source = taken
    target = job.target_tkv
    if getattr(job, "source_kek_status", None) != KeyStatus.RETIRED or target.status != VersionStatus.ACTIVE:
        return None  # the ordinary path re-reads the rows and decides (drop the source, retarget)
    return source, target, sealed


def _wrap_limit(job: RewrapJob, tenant: Tenant, target: TenantKeyVersion) -> Outcome:
    """The wraps could not be counted on the target: it is no longer active, or it is full."""
    active = keyring.current_tkv(tenant)
    if active is None:
        _finish(job, tenant, error="The tenant has no active key version any more.")
        return Outcome.FINISHED
    if active.pk != target.pk:
        _retarget(job, tenant, active)
    else:  # full (KODORI_TKV_MAX_WRAPS): add a version under the same key; the next batch retargets
        keyring.add_key_version(tenant)
    job.save()
    return Outcome.MORE


def _prepare_next(
    prepared: Ahead,
    job: RewrapJob,
    tenant: Tenant,
    source: TenantKeyVersion,
    target: TenantKeyVersion,
    *,
    after: int,
) -> None:
    """Read and count the source's next batch in this transaction and start sealing it (``ahead``). Anything
    in the way (no rows left, the target full, a key not at hand) leaves it to the next batch's ordinary
    path, which handles each case."""
    try:
        source_key, target_key = keyring.tkv_key(source), keyring.tkv_key(target)
    except (keyring.KeyUnavailable, ProviderError):
        return
    rows = _fetch(tenant.pk, source.pk, after)
    if rows and _count_wraps(target, len(rows)):
        plan = Plan(job.pk, source.pk, target.pk, after)
        prepared.prepare(plan, source, source_key, target_key, tenant.pk, rows)


def _end_or_retarget(job: RewrapJob, tenant: Tenant) -> Outcome:
    """No source has rows left: finish, unless the tenant rotated meanwhile (then walk the old target too)."""
    active = keyring.current_tkv(tenant)
    if active is None:
        _finish(job, tenant, error="The tenant has no active key version any more.")
        return Outcome.FINISHED
    if active.pk != job.target_tkv_id:
        _retarget(job, tenant, active)
        job.save()
        return Outcome.MORE
    _finish(job, tenant)
    return Outcome.FINISHED


def _drop_source(job: RewrapJob, tkv: TenantKeyVersion) -> None:
    """Stop walking ``tkv``: its KEK is active again. What was not moved leaves the job's totals, so
    ``done`` never exceeds ``total``; the coverage table still counts those data keys."""
    entry = job.versions.setdefault(str(tkv.pk), _entry(tkv, 0))
    left = max(entry.get("total", 0) - entry.get("done", 0), 0)
    entry["total"] = entry.get("done", 0)
    job.total = max(job.total - left, job.done + job.unreadable)
    job.cursor_id = _END
    logger.info("rewrap job %s leaves key version %s: its key is %s", job.pk, tkv.version, tkv.kek.status)
    job.save()


def _entry(tkv: TenantKeyVersion, total: int) -> dict[str, Any]:
    return {"version": tkv.version, "kek": tkv.kek_id, "total": total, "done": 0}


def _retarget(job: RewrapJob, tenant: Tenant, target: TenantKeyVersion) -> None:
    """The active version changed during the walk. If the tenant rotated to another key, the previous target
    (now under a retired key) becomes a source, walked after the others. If the target only filled up
    (``KODORI_TKV_MAX_WRAPS``) and a new version of the same key took over, the previous target stays as it
    is: versions under the active key are never walked, so a walk cannot chase its own filled targets."""
    previous = TenantKeyVersion.objects.select_related("kek").get(pk=job.target_tkv_id)
    if previous.kek.status == KeyStatus.RETIRED:
        n = DataKey.objects.for_tenant(tenant).filter(tkv_id=previous.pk).count()
        entry = job.versions.setdefault(str(previous.pk), _entry(previous, 0))
        entry["total"] = entry.get("total", 0) + n
        job.total += n
    logger.info(
        "rewrap job %s retargeted from key version %s to %s", job.pk, previous.version, target.version
    )
    job.target_tkv = target


def _fetch(tenant_id: int, tkv_id: int | None, after: int) -> list[Row]:
    """Up to a batch of the tenant's data keys under ``tkv_id`` after the id ``after``, in id order. Binary
    results: the wrapped keys and blob ids come as their bytes, not as hex text to encode and parse again."""
    if tkv_id is None:
        return []
    # Never more than one version may wrap: a batch larger than the wrap limit would rotate forever.
    limit = min(settings.KODORI_REWRAP_BATCH_SIZE, settings.KODORI_TKV_MAX_WRAPS)
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            # uuid_send: the blob id's 16 bytes, as the associated data needs them (no UUID objects).
            "SELECT id, uuid_send(blob_id), wrapped_dek, format_version FROM data_keys "
            "WHERE tenant_id = %s AND tkv_id = %s AND id > %s ORDER BY id LIMIT %s",
            [tenant_id, tkv_id, after, limit],
            binary=True,
        )
        return cursor.fetchall()


def _next_source(tenant: Tenant, target_id: int, *, after: int) -> int | None:
    """The next version (by id) after ``after`` that still wraps data keys under a retired KEK (one Kodori can
    still open and no longer wraps new data under; versions of the active KEK stay where they are).

    Versions are walked in id order and a retargeted walk's previous target has a larger id than every
    older version, so every source is visited once and the walk ends.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.id FROM tenant_key_versions t JOIN tenant_kms_keys k ON k.id = t.kek_id "
            "WHERE t.tenant_id = %s AND t.id > %s AND t.id <> %s AND t.status <> %s AND k.status = %s "
            "AND EXISTS (SELECT 1 FROM data_keys d WHERE d.tkv_id = t.id) ORDER BY t.id LIMIT 1",
            [
                tenant.pk,
                after,
                target_id,
                VersionStatus.DESTROYED,
                KeyStatus.RETIRED,
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _seal(tenant: Tenant, source: TenantKeyVersion, target: TenantKeyVersion, rows: list[Row]) -> Sealed:
    """Re-wrap ``rows`` from ``source`` to ``target`` in this thread (``ahead.seal_rows``)."""
    try:
        source_key = keyring.tkv_key(source)
    except (keyring.KeyUnavailable, ProviderError) as exc:
        if isinstance(exc, ProviderError) and exc.kind == FailureKind.TRANSIENT:
            raise
        raise _SourceBlocked(source, exc) from exc
    return seal_rows(tenant.pk, source.pk, target.pk, source_key, keyring.tkv_key(target), rows)


def _write(tenant: Tenant, source: TenantKeyVersion, target: TenantKeyVersion, sealed: Sealed) -> int:
    """Step 5: the compare-and-swap UPDATE of the sealed rows; how many moved."""
    if not sealed.ids:
        return 0
    # Django's connection and transaction, with a server-side binding cursor; errors come out as Django's
    # DatabaseError, as from ``connection.cursor()``.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_MOVE, [target.pk, sealed.ids, sealed.wrapped, source.pk, tenant.pk], prepare=False)
        return cursor.rowcount


def _count_wraps(target: TenantKeyVersion, n: int) -> bool:
    """Count ``n`` wraps under ``target`` before making them, as uploads do (the counter may run ahead of
    the nonces used, never behind); False when that would pass ``KODORI_TKV_MAX_WRAPS``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tenant_key_versions SET wrap_count = wrap_count + %s "
            "WHERE id = %s AND status = %s AND wrap_count + %s <= %s",
            [n, target.pk, VersionStatus.ACTIVE, n, settings.KODORI_TKV_MAX_WRAPS],
        )
        return cursor.rowcount == 1


@transaction.atomic
def _skip_source(job_pk: int, tkv: TenantKeyVersion, cause: str) -> None:
    job = RewrapJob.objects.select_for_update().get(pk=job_pk)
    # The batch that hit the refusal may have moved the cursor onto this source itself, and that move was
    # rolled back with it: the saved cursor then still sits on an earlier source with nothing left to read.
    if job.status != RewrapStatus.RUNNING or (job.cursor_tkv_id or 0) > tkv.pk:
        return
    entry = job.versions.setdefault(str(tkv.pk), _entry(tkv, 0))
    entry["error"] = cause
    job.cursor_tkv_id, job.cursor_id = tkv.pk, _END
    job.save()
