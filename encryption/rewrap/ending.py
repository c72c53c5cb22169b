"""How a walk ends: completed or failed, with the versions nothing references destroyed and the outcome
audited; and what the ``run_rewrap`` task and its watchdog ask about jobs (``walk`` is the walk itself)."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption.coverage import destroy_unreferenced_versions, unreferenced_keys
from encryption.models import LIVE_REWRAP_STATUSES, RewrapJob, RewrapStatus, TenantKey, TenantKeyVersion
from encryption.sealing import Trigger, seal_tenant
from tenants.models import Tenant


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
    finish(job, tenant, error=error)
    if seal and not tenant.is_sealed:
        seal_tenant(
            tenant,
            error,
            key=TenantKey.objects.filter(pk=job.target_tkv.kek_id).first(),
            trigger=Trigger.REWRAP,
        )
    return job


def finish(job: RewrapJob, tenant: Tenant, *, error: str = "") -> None:
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
