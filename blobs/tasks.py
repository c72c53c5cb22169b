"""Celery tasks of the blobs app: thin, idempotent, named as verbs."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import models, scrub, services


@shared_task(name="blobs.tasks.sweep_stale_uploads")
def sweep_stale_uploads() -> int:
    """Remove uploads a crash left ``uploading`` (older than ``BLOB_STALE_UPLOAD_SECONDS``), objects too."""
    return services.sweep_stale_uploads()


@shared_task(name="blobs.tasks.scrub_blobs")
def scrub_blobs() -> dict[str, Any]:
    """Scrub for at most ``BLOB_SCRUB_RUN_SECONDS`` from where the last run stopped (``blobs.scrub``); skip
    if the command or another run holds the scrub's lock. Logs a WARNING with the per-tenant summary on
    damage."""
    return scrub.scheduled_run()


@shared_task(name="blobs.tasks.fold_counters")
def fold_counters() -> int:
    """Fold the counters' pending deltas into their bases (blob totals, data keys per key version); how many
    delta rows were folded. Reads are exact either way; folding keeps the deltas few."""
    return models.fold_counters()
