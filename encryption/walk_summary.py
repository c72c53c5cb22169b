"""What a re-wrap walk did, in one sentence a person reads after it ended, from the ``RewrapJob`` row itself
(data keys moved, total, started and finished times, unreadable data keys, destroyed versions) and the
``rewrap.paused`` / ``rewrap.resumed`` events in the audit chain (time spent paused is not time spent working,
so it is left out of the duration and the rate). Nothing here is estimated.

Also the way back from a walk to the rotation that made its target key active (the key's page and the
``tenant-kms.rotated`` event on ``/audit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.urls import reverse

from audit.models import AuditEvent, EventType

from .history import Rotation, rotations_to
from .models import RewrapJob, RewrapStatus


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``1 min 02 s``, ``2 h 05 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _versions(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"key version {numbers[0]}"
    return "key versions " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def paused_seconds(job: RewrapJob, until: datetime) -> float:
    """Seconds the walk spent paused, from its own pause and resume events (until ``until`` if it never
    resumed)."""
    events = (
        AuditEvent.objects.for_tenant(job.tenant)
        .filter(type__in=[EventType.REWRAP_PAUSED, EventType.REWRAP_RESUMED], payload__jobId=job.pk)
        .order_by("seq")
        .values_list("type", "created_at")
    )
    total, since = 0.0, None
    for kind, at in events:
        if kind == EventType.REWRAP_PAUSED and since is None:
            since = at
        elif kind == EventType.REWRAP_RESUMED and since is not None:
            total += (at - since).total_seconds()
            since = None
    if since is not None:
        total += max((until - since).total_seconds(), 0.0)
    return total


@dataclass(frozen=True)
class WalkSummary:
    job: RewrapJob
    headline: str
    advice: str
    rotation: Rotation | None
    key_url: str
    key_label: str


def _headline(job: RewrapJob, sources: str, target: int) -> str:
    assert job.finished_at is not None
    working = (job.finished_at - job.created_at).total_seconds()
    paused = paused_seconds(job, job.finished_at)
    working = max(working - paused, 0.0)
    at = job.finished_at.astimezone(UTC).strftime("%H:%M UTC on %Y-%m-%d")
    pause = f", not counting {duration(paused)} paused" if paused >= 0.05 else ""
    if job.status == RewrapStatus.COMPLETED and job.total == 0:
        return f"No data key needed moving to key version {target}; finished {at}."
    if job.status == RewrapStatus.COMPLETED:
        rate = f" ({job.done / working:,.0f} per second)" if working > 0 else ""
        return (
            f"Re-wrapped {job.done:,} data key{'s' if job.done != 1 else ''} from {sources} to {target} "
            f"in {duration(working)}{pause}{rate}, finished {at}."
        )
    verb = "Failed" if job.status == RewrapStatus.FAILED else "Cancelled"
    return (
        f"{verb} after re-wrapping {job.done:,} of {job.total:,} data keys from {sources} to {target} "
        f"in {duration(working)}{pause}, ended {at}."
    )


def _advice(job: RewrapJob) -> str:
    if job.status == RewrapStatus.CANCELLED:
        return (
            "Data keys already re-wrapped stay re-wrapped; the others still open under their own key "
            "version. Start a new re-wrap on the Encryption page to move them."
        )
    if job.status != RewrapStatus.FAILED:
        return ""
    steps = []
    if any(entry.get("error") for entry in job.versions.values()):
        steps.append(
            "A key named above refused Kodori: restore Kodori's access to it in your KMS (its key page "
            "shows the role and identifier), then start a new re-wrap on the Encryption page."
        )
    if job.unreadable:
        steps.append(
            f"{job.unreadable:,} data key{'s' if job.unreadable != 1 else ''} did not authenticate: the "
            "files they belong to cannot be decrypted by anyone, so restore those files from your own copies."
        )
    if not steps:
        steps.append(
            "Data keys already re-wrapped stay re-wrapped and every other data key still opens under its own "
            "key version. Once the problem above is fixed, start a new re-wrap on the Encryption page."
        )
    return " ".join(steps)


def summarize(job: RewrapJob) -> WalkSummary:
    """The walk's summary (``headline`` empty while it is live) and its way back to the rotation."""
    target = job.target_tkv
    key = target.kek
    numbers = sorted(int(entry.get("version", 0)) for entry in job.versions.values())
    sources = _versions(numbers) if numbers else "older key versions"
    headline = "" if job.is_live or job.finished_at is None else _headline(job, sources, target.version)
    # The rotation that made the walk's target key active: the latest one before the walk started.
    earlier = [r for r in rotations_to(job.tenant, [key.pk]).get(key.pk, []) if r.at <= job.created_at]
    return WalkSummary(
        job=job,
        headline=headline,
        advice=_advice(job),
        rotation=earlier[0] if earlier else None,
        key_url=reverse("encryption:key", args=[key.pk]),
        key_label=key.label,
    )
