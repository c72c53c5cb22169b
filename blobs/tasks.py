"""Celery tasks of the blobs app: thin, idempotent, named as verbs."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="blobs.tasks.sweep_stale_uploads")
def sweep_stale_uploads() -> int:
    """Remove uploads a crash left ``uploading`` (older than ``BLOB_STALE_UPLOAD_SECONDS``), objects too."""
    return services.sweep_stale_uploads()
