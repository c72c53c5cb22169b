"""Re-wrap jobs as custody verbs: start (by an owner or after a rotation), pause, resume, cancel.

Each verb is atomic and audited (``rewrap.started`` / ``.paused`` / ``.resumed`` / ``.cancelled``) and queues
the ``run_rewrap`` task after commit; the walk itself (``encryption.rewrap.walk``) records
``rewrap.completed`` or ``rewrap.failed``. At most one live (running or paused) job per tenant, enforced by
the database.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption import keyring, queue
from encryption.coverage import VersionCoverage, version_coverage
from encryption.models import (
    LIVE_REWRAP_STATUSES,
    RewrapJob,
    RewrapStatus,
    RewrapTrigger,
)
from tenants.models import Tenant


class RewrapError(Exception):
    """A re-wrap request the rules refuse; ``str()`` says what to do instead."""


def live_job(tenant: Tenant) -> RewrapJob | None:
    return RewrapJob.objects.for_tenant(tenant).filter(status__in=LIVE_REWRAP_STATUSES).first()


def rewrap_refusal(tenant: Tenant, versions: list[VersionCoverage] | None = None) -> str | None:
    """Why an owner cannot start a re-wrap of ``tenant`` now (and what to do instead), or None when they can.

    The one rule behind both ``start_rewrap``'s refusals and the /encryption page's "Start re-wrap" button, so
    the page never offers a walk the service would refuse. ``versions`` is ``version_coverage(tenant)``, when
    the caller has it already.
    """
    if tenant.is_read_only:
        return "No re-wrap can start while the tenant is scheduled for deletion or being erased."
    existing = live_job(tenant)
    if existing is not None:
        return (
            f"A re-wrap is already {existing.get_status_display().lower()} "
            f"({existing.done:,} of {existing.total:,} data keys). "
            + ("Resume it or cancel it first." if existing.status == RewrapStatus.PAUSED else "")
        )
    if tenant.is_sealed:
        return f"{tenant.name} is sealed: {tenant.seal_reason} Start the re-wrap once your key answers again."
    target = keyring.current_tkv(tenant)
    if target is None or not target.kek.usable:
        return "There is no active key to re-wrap to."
    if versions is None:
        versions = version_coverage(tenant)
    if not any(v.movable or v.unused for v in versions):
        return "Nothing to re-wrap: every data key is already under the active key version."
    return None


def _sources(versions: list[VersionCoverage]) -> dict[str, dict[str, Any]]:
    """The per-version entries of a new job: the versions with data keys to move."""
    return {
        str(v.tkv.pk): {"version": v.tkv.version, "kek": v.tkv.kek_id, "total": v.movable, "done": 0}
        for v in versions
        if v.movable
    }


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
    if existing is not None and not manual:
        return existing
    coverage = version_coverage(tenant)
    refusal = rewrap_refusal(tenant, coverage)
    if refusal is not None:
        if manual:
            raise RewrapError(refusal)
        return None
    target = keyring.current_tkv(tenant)
    assert target is not None  # rewrap_refusal said there is an active key
    versions = _sources(coverage)
    job = RewrapJob.objects.create(
        tenant=tenant,
        trigger=trigger,
        started_by=actor if manual else None,
        target_tkv=target,
        total=sum(entry["total"] for entry in versions.values()),
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
    queue.run_rewrap(job.pk)
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
    tenant = Tenant.objects.select_for_update().get(pk=job.tenant_id)
    if tenant.is_read_only:
        raise RewrapError("No re-wrap can resume while the tenant is scheduled for deletion or being erased.")
    job = _control(
        job,
        (RewrapStatus.PAUSED,),
        RewrapStatus.RUNNING,
        EventType.REWRAP_RESUMED,
        "This re-wrap is {status}; only a paused one can be resumed.",
        actor=actor,
        request=request,
    )
    queue.run_rewrap(job.pk)
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
