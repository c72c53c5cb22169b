"""Periodic audit work (kodori/settings.py, CELERY_BEAT_SCHEDULE): sign chain heads, verify chains in full."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="audit.tasks.sign_checkpoints")
def sign_checkpoints() -> int:
    """Sign every chain head that moved since its last checkpoint. Idempotent: a signed head is skipped."""
    return services.sign_checkpoints()


@shared_task(name="audit.tasks.verify_chains")
def verify_chains() -> dict[str, int | None]:
    """Re-verify every chain from genesis; returns tenant id → first broken sequence (None when intact)."""
    return {str(s.tenant_id): (s.broken.seq if s.broken else None) for s in services.verify_chains(full=True)}
