"""Re-wrap jobs as custody verbs: start (by an owner or after a rotation), pause, resume, cancel.

Each verb is atomic and audited (``rewrap.started`` / ``.paused`` / ``.resumed`` / ``.cancelled``) and queues
the ``run_rewrap`` task after commit; the walk itself (``encryption.walk``) records ``rewrap.completed`` or
``rewrap.failed``. At most one live (running or paused) job per tenant, enforced by the database.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from tenants.models import Tenant

from .models import (
    LIVE_REWRAP_STATUSES,
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    RewrapTrigger,
    TenantKeyVersion,
    VersionStatus,
)
from .walk import _active_target


class RewrapError(Exception):
    """A re-wrap request the rules refuse; ``str()`` says what to do instead."""


def live_job(tenant: Tenant) -> RewrapJob | None:
    return RewrapJob.objects.for_tenant(tenant).filter(status__in=LIVE_REWRAP_STATUSES).first()


def _source_counts(tenant: Tenant, target: TenantKeyVersion) -> dict[int, int]:
    """Data keys per version the walk must move: every version but the target, whose KEK can still open it.

    Versions under a disabled KEK are left alone: an owner disabled that key on purpose and Kodori no longer
    uses it for anything.
    """
    return dict(
        DataKey.objects.for_tenant(tenant)
        .exclude(tkv_id=target.pk)
        .filter(tkv__kek__status__in=[KeyStatus.ACTIVE, KeyStatus.RETIRED])
        .values("tkv_id")
        .annotate(n=Count("id"))
        .values_list("tkv_id", "n")
    )


def _version_entries(counts: dict[int, int]) -> dict[str, dict[str, Any]]:
    tkvs = TenantKeyVersion.objects.in_bulk(list(counts))
    return {
        str(pk): {"version": tkvs[pk].version, "kek": tkvs[pk].kek_id, "total": n, "done": 0}
        for pk, n in counts.items()
    }


def _has_unused_retired_versions(tenant: Tenant) -> bool:
    """Whether a retired version wraps no data key any more: a walk would destroy it at once."""
    return (
        TenantKeyVersion.objects.for_tenant(tenant)
        .filter(status=VersionStatus.RETIRED, data_keys__isnull=True)
        .exists()
    )


def _queue(job_pk: int) -> None:
    from .tasks import run_rewrap

    transaction.on_commit(lambda: run_rewrap.delay(job_pk))


@transaction.atomic
def start_rewrap(
    tenant: Tenant,
    *,
    actor: Any = None,
    trigger: RewrapTrigger = RewrapTrigger.MANUAL,
    request: HttpRequest | None = None,
) -> RewrapJob | None:
    """Create a running job that moves every data key of ``tenant`` to its active version; queue it.

    After a rotation (``trigger=ROTATION``) an existing live job is returned as it is (a running walk
    retargets itself; a paused one stays paused) and a tenant with nothing retired gets no job (None). An
    owner's request is refused with ``RewrapError`` when a walk is already live, the tenant is sealed, or
    there is nothing to do.
    """
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    manual = trigger == RewrapTrigger.MANUAL
    existing = live_job(tenant)
    if existing is not None:
        if manual:
            raise RewrapError(
                f"A re-wrap is already {existing.get_status_display().lower()} "
                f"({existing.done:,} of {existing.total:,} data keys). "
                + ("Resume it or cancel it first." if existing.status == RewrapStatus.PAUSED else "")
            )
        return existing
    if tenant.is_sealed:
        if manual:
            raise RewrapError(
                f"{tenant.name} is sealed: {tenant.seal_reason} "
                "Start the re-wrap once your key answers again."
            )
        return None
    target = _active_target(tenant)
    if target is None or not target.kek.usable:
        if manual:
            raise RewrapError("There is no active key to re-wrap to.")
        return None
    counts = _source_counts(tenant, target)
    if not counts and not _has_unused_retired_versions(tenant):
        if manual:
            raise RewrapError("Nothing to re-wrap: every data key is already under the active key version.")
        return None
    versions = _version_entries(counts)
    job = RewrapJob.objects.create(
        tenant=tenant,
        trigger=trigger,
        started_by=actor if manual else None,
        target_tkv=target,
        total=sum(counts.values()),
        versions=versions,
    )
    record(
        tenant,
        EventType.REWRAP_STARTED,
        actor=actor if manual else None,
        request=request,
        payload=payloads.rewrap_started(
            to_key_row_id=target.kek_id,
            to_provider=target.kek.wrap_method,
            to_key_id=target.kek.key_id,
            data_keys=job.total,
            job_id=job.pk,
            trigger=trigger,
            versions={str(v["version"]): v["total"] for v in versions.values()},
        ),
    )
    _queue(job.pk)
    return job


def after_rotation(tenant: Tenant) -> None:
    """Called inside a rotation's transaction: start a walk with it when the deployment wants that."""
    if settings.KODORI_REWRAP_AFTER_ROTATION:
        start_rewrap(tenant, trigger=RewrapTrigger.ROTATION)


def _control(
    job: RewrapJob,
    allowed: tuple[RewrapStatus, ...],
    new_status: RewrapStatus,
    event: EventType,
    refusal: str,
    *,
    actor: Any,
    request: HttpRequest | None,
) -> RewrapJob:
    job = RewrapJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in allowed:
        raise RewrapError(refusal.format(status=job.get_status_display().lower()))
    job.status = new_status
    fields = ["status", "updated_at"]
    if new_status == RewrapStatus.CANCELLED:
        job.finished_at = timezone.now()
        fields.append("finished_at")
    job.save(update_fields=fields)
    record(
        job.tenant,
        event,
        actor=actor,
        request=request,
        payload=payloads.rewrap_control(job_id=job.pk, rewrapped=job.done, total=job.total),
    )
    return job


@transaction.atomic
def pause_rewrap(job: RewrapJob, *, actor: Any, request: HttpRequest | None = None) -> RewrapJob:
    """Stop after the batch in flight; the checkpoint stays, ``resume_rewrap`` carries on from it."""
    return _control(
        job,
        (RewrapStatus.RUNNING,),
        RewrapStatus.PAUSED,
        EventType.REWRAP_PAUSED,
        "This re-wrap is {status}; only a running one can be paused.",
        actor=actor,
        request=request,
    )


@transaction.atomic
def resume_rewrap(job: RewrapJob, *, actor: Any, request: HttpRequest | None = None) -> RewrapJob:
    job = _control(
        job,
        (RewrapStatus.PAUSED,),
        RewrapStatus.RUNNING,
        EventType.REWRAP_RESUMED,
        "This re-wrap is {status}; only a paused one can be resumed.",
        actor=actor,
        request=request,
    )
    _queue(job.pk)
    return job


@transaction.atomic
def cancel_rewrap(job: RewrapJob, *, actor: Any, request: HttpRequest | None = None) -> RewrapJob:
    """Stop for good. Data keys already moved stay moved (they open under the active version)."""
    return _control(
        job,
        LIVE_REWRAP_STATUSES,
        RewrapStatus.CANCELLED,
        EventType.REWRAP_CANCELLED,
        "This re-wrap is {status} already.",
        actor=actor,
        request=request,
    )
