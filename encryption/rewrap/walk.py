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

A worker killed at any point loses at most its open transaction; the watchdog (``resume_stalled_rewraps``)
re-queues a running job whose checkpoint went stale. Uploads go on throughout: new data keys are wrapped by
the active version, which is never a source. When no source has rows left, the walk destroys every retired
version that nothing references any more (the row stays as a tombstone, its key material is erased) and
reports which KEKs now protect nothing: those are safe to delete from the customer's KMS.

Plaintext keys exist only in locals of ``aead.Rewrapper`` and in the process's TKV cache; job rows, task
arguments and audit payloads carry ids and counts only.
"""

from __future__ import annotations

import datetime
import enum
import logging
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption import aead, keyring
from encryption.coverage import destroy_unreferenced_versions, unreferenced_keys
from encryption.format.errors import NotAuthentic
from encryption.models import (
    LIVE_REWRAP_STATUSES,
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
)
from encryption.providers import FailureKind, ProviderError
from encryption.sealing import Trigger, seal_tenant
from tenants.models import Tenant

logger = logging.getLogger(__name__)

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
    while True:
        outcome = run_batch(job_pk)
        if outcome != Outcome.MORE:
            return outcome
        if deadline is not None and time.monotonic() >= deadline:
            return Outcome.MORE


def run_batch(job_pk: int) -> Outcome:
    """One checkpointed step of the walk (see the module docstring). Safe to call from many workers at once.

    Raises ``ProviderError`` (transient: try again later, nothing changed) and database errors (the
    transaction rolled back, nothing changed). A definite refusal of the active key fails the job and seals
    the tenant; a refusal of a retired key skips that version and is reported when the walk ends.
    """
    try:
        with transaction.atomic():
            return _batch(job_pk)
    except _SourceBlocked as blocked:
        _skip_source(job_pk, blocked.tkv, str(blocked))
        return Outcome.MORE
    except (keyring.KeyUnavailable, ProviderError) as exc:
        if isinstance(exc, ProviderError) and exc.kind == FailureKind.TRANSIENT:
            note_error(job_pk, f"{exc} Kodori retries on its own.")
            raise
        fail_job(job_pk, f"The active key could not be used: {exc}", seal=exc.kind.seals)
        return Outcome.FINISHED


def _batch(job_pk: int) -> Outcome:
    """Steps 1-6 of the module docstring. Five statements a batch: lock the job, read the rows, read the two
    versions, count the wraps, write the rows (and save the job). A rotation shows up as the count failing
    (the target is no longer active) or, at the end, as another active version: then the walk retargets."""
    started = time.monotonic()
    job = RewrapJob.objects.select_for_update(of=("self",)).select_related("tenant").filter(pk=job_pk).first()
    if job is None or job.status != RewrapStatus.RUNNING:
        return Outcome.STOPPED
    tenant = job.tenant
    if tenant.is_sealed:
        _finish(job, tenant, error=f"Stopped because {tenant.name} was sealed: {tenant.seal_reason}")
        return Outcome.FINISHED
    rows = _fetch(job, tenant)
    while not rows:
        source_id = _next_source(tenant, job.target_tkv_id, after=job.cursor_tkv_id or 0)
        if source_id is None:
            return _end_or_retarget(job, tenant)
        job.cursor_tkv_id, job.cursor_id = source_id, 0
        rows = _fetch(job, tenant)
    tkvs = TenantKeyVersion.objects.select_related("kek").in_bulk([job.cursor_tkv_id, job.target_tkv_id])
    source, target = tkvs[job.cursor_tkv_id], tkvs[job.target_tkv_id]
    if source.kek.status == KeyStatus.ACTIVE:
        _drop_source(job, source)  # its key was made active again during the walk: its data stays put
        return Outcome.MORE
    if not _count_wraps(target, len(rows)):
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
    moved, unreadable = _rewrap_rows(tenant, source, target, rows)
    job.done += moved
    job.unreadable += unreadable
    entry = job.versions.setdefault(str(source.pk), _entry(source, 0))
    entry["done"] = entry.get("done", 0) + moved
    if unreadable:
        entry["unreadable"] = entry.get("unreadable", 0) + unreadable
    job.cursor_id = rows[-1][0]
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = len(rows) / elapsed
    job.rate = rate if job.rate <= 0 else (1 - _RATE_WEIGHT) * job.rate + _RATE_WEIGHT * rate
    job.last_error = ""
    job.save()
    return Outcome.MORE


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


def _fetch(job: RewrapJob, tenant: Tenant) -> list[tuple[int, bytes, bytes, int]]:
    if job.cursor_tkv_id is None:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            # uuid_send: the blob id's 16 bytes, as the associated data needs them (no UUID objects).
            "SELECT id, uuid_send(blob_id), wrapped_dek, format_version FROM data_keys "
            "WHERE tenant_id = %s AND tkv_id = %s AND id > %s ORDER BY id LIMIT %s",
            # Never more than one version may wrap: a batch larger than the wrap limit would rotate forever.
            [
                tenant.pk,
                job.cursor_tkv_id,
                job.cursor_id,
                min(settings.KODORI_REWRAP_BATCH_SIZE, settings.KODORI_TKV_MAX_WRAPS),
            ],
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


@sensitive_variables("source_key", "target_key", "rewrapper")
def _rewrap_rows(
    tenant: Tenant,
    source: TenantKeyVersion,
    target: TenantKeyVersion,
    rows: list[tuple[int, bytes, bytes, int]],
) -> tuple[int, int]:
    """Re-wrap ``rows`` from ``source`` to ``target`` and write them back; (moved, unreadable)."""
    try:
        source_key = keyring.tkv_key(source)
    except (keyring.KeyUnavailable, ProviderError) as exc:
        if isinstance(exc, ProviderError) and exc.kind == FailureKind.TRANSIENT:
            raise
        raise _SourceBlocked(source, exc) from exc
    target_key = keyring.tkv_key(target)
    rewrapper = aead.Rewrapper(source_key, target_key)
    ids: list[int] = []
    wrapped: list[bytes] = []
    unreadable = 0
    # The associated data around each blob id, per format version (``keyring.dek_aad``, built once a batch).
    parts: dict[int, tuple[bytes, bytes, bytes]] = {}
    for pk, blob_id, old, format_version in rows:
        if format_version not in parts:
            prefix, old_suffix = keyring.dek_aad_parts(tenant.pk, source.pk, format_version)
            _, new_suffix = keyring.dek_aad_parts(tenant.pk, target.pk, format_version)
            parts[format_version] = (prefix, old_suffix, new_suffix)
        prefix, old_suffix, new_suffix = parts[format_version]
        try:
            new = rewrapper.rewrap(bytes(old), prefix + blob_id + old_suffix, prefix + blob_id + new_suffix)
        except NotAuthentic:
            logger.error(
                "rewrap: data key %s of tenant %s does not authenticate; left in place", pk, tenant.pk
            )
            unreadable += 1
            continue
        ids.append(pk)
        wrapped.append(new)
    if not ids:
        return 0, unreadable
    # Django's connection and transaction, with a server-side binding cursor; errors come out as Django's
    # DatabaseError, as from ``connection.cursor()``.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_MOVE, [target.pk, ids, wrapped, source.pk, tenant.pk], prepare=False)
        return cursor.rowcount, unreadable


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


def note_error(job_pk: int, error: str) -> None:
    """Show a transient problem on the job (the page says Kodori retries); nothing else changes."""
    RewrapJob.objects.filter(pk=job_pk, status=RewrapStatus.RUNNING).update(
        last_error=error[:1000], updated_at=timezone.now()
    )


@transaction.atomic
def fail_job(job_pk: int, error: str, *, seal: bool = False) -> RewrapJob | None:
    """End a running job as failed (the moved data keys stay moved), audit it, and seal on a refusal."""
    job = RewrapJob.objects.select_for_update().filter(pk=job_pk).first()
    if job is None or job.status != RewrapStatus.RUNNING:
        return job
    tenant = Tenant.objects.get(pk=job.tenant_id)
    _finish(job, tenant, error=error)
    if seal and not tenant.is_sealed:
        seal_tenant(
            tenant,
            error,
            key=TenantKey.objects.filter(pk=job.target_tkv.kek_id).first(),
            trigger=Trigger.REWRAP,
        )
    return job


def _finish(job: RewrapJob, tenant: Tenant, *, error: str = "") -> None:
    """Destroy what nothing references, then mark the job completed (or failed) and audit it."""
    destroyed = destroy_unreferenced_versions(tenant)
    unreferenced = unreferenced_keys(tenant, [kek for _, _, kek in destroyed])
    problems = [error] if error else []
    for entry in job.versions.values():
        if entry.get("error"):
            left = entry.get("total", 0) - entry.get("done", 0)
            problems.append(f"{left:,} data keys under key version {entry['version']}: {entry['error']}")
    if job.unreadable:
        problems.append(
            f"{job.unreadable:,} data keys did not authenticate under their own key version and were left "
            "in place; the files they belong to cannot be decrypted."
        )
    job.status = RewrapStatus.FAILED if problems else RewrapStatus.COMPLETED
    job.last_error = " ".join(problems)[:4000]
    job.finished_at = timezone.now()
    job.destroyed_versions = [version for _, version, _ in destroyed]
    job.unreferenced_keys = unreferenced
    job.save()
    target = TenantKeyVersion.objects.select_related("kek").get(pk=job.target_tkv_id)
    common = {
        "to_key_row_id": target.kek_id,
        "to_provider": target.kek.wrap_method,
        "to_key_id": target.kek.key_id,
        "rewrapped": job.done,
        "job_id": job.pk,
        "total": job.total,
    }
    if problems:
        record(
            tenant, EventType.REWRAP_FAILED, payload=payloads.rewrap_failed(error=job.last_error, **common)
        )
    else:
        payload = payloads.rewrap_completed(
            retired_key_row_ids=unreferenced,
            unreadable=job.unreadable,
            destroyed_versions=job.destroyed_versions,
            **common,
        )
        record(tenant, EventType.REWRAP_COMPLETED, payload=payload)


def moved_any(job_pk: int) -> bool:
    """Whether a finished job rewrote data keys (its task then queues a VACUUM of the table)."""
    return RewrapJob.objects.filter(pk=job_pk, done__gt=0).exclude(status__in=LIVE_REWRAP_STATUSES).exists()


def stalled_jobs() -> list[int]:
    """Running jobs whose checkpoint is older than ``KODORI_REWRAP_STALL_SECONDS``: their worker died."""
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.KODORI_REWRAP_STALL_SECONDS)
    return list(
        RewrapJob.objects.filter(status=RewrapStatus.RUNNING, updated_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
