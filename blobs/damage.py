"""Damage to a blob's stored bytes: found by a download or the scrub, recorded once, shown until repaired.

``report`` marks the blob damaged (kind, first failing chunk, when), writes one log line and the audit event
``blob.corrupt`` (blob id, name, chunk index, damage, what found it) in one transaction. The same damage found
again (the same kind at the same chunk) is logged but not recorded a second time, so a client retrying a
damaged download cannot flood the audit log. Different damage is recorded again.

``verified`` is called only when every chunk of the blob has just authenticated (the scrub, or a full download
that reached the end): the mark is removed and ``blob.repaired`` is recorded, e.g. after an operator restored
the object from a backup or an object-store version.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record

from .models import Blob, BlobStatus, Damage

logger = logging.getLogger(__name__)


def report(blob: Blob, kind: Damage, *, chunk: int | None = None, found_by: str, request: Any = None) -> bool:
    """Record that ``blob`` is damaged; True if this is news (an event was recorded)."""
    logger.error(
        "blobs: blob %s of tenant %s is damaged: %s%s (found by %s)",
        blob.pk,
        blob.tenant_id,
        kind.value,
        f" at chunk {chunk}" if chunk is not None else "",
        found_by,
    )
    with transaction.atomic():
        locked = Blob.objects.select_for_update().filter(pk=blob.pk, status=BlobStatus.READY).first()
        if locked is None:
            return False  # deleted meanwhile: nothing left to be damaged
        if locked.damaged_at is not None and locked.damage == kind and locked.damaged_chunk == chunk:
            return False
        now = timezone.now()
        Blob.objects.filter(pk=blob.pk).update(damaged_at=now, damage=kind.value, damaged_chunk=chunk)
        record(
            locked.tenant,
            EventType.BLOB_CORRUPT,
            payload=payloads.blob_corrupt(
                blob_id=str(blob.pk), name=locked.name, chunk=chunk, damage=kind.value, found_by=found_by
            ),
            request=request,
        )
    blob.damaged_at, blob.damage, blob.damaged_chunk = now, kind.value, chunk
    return True


def verified(blob: Blob, *, found_by: str) -> bool:
    """Every chunk of ``blob`` just authenticated: note when, and lift a damage mark (True if lifted)."""
    now = timezone.now()
    # The common case, a whole blob that was whole before: one statement, no lock, nothing to record.
    whole = Blob.objects.filter(pk=blob.pk, status=BlobStatus.READY, damaged_at__isnull=True)
    if whole.update(verified_at=now):
        blob.verified_at = now
        return False
    with transaction.atomic():
        locked = Blob.objects.select_for_update().filter(pk=blob.pk, status=BlobStatus.READY).first()
        if locked is None:
            return False
        Blob.objects.filter(pk=blob.pk).update(
            verified_at=now, damaged_at=None, damage="", damaged_chunk=None
        )
        if locked.damaged_at is None:
            return False
        logger.warning("blobs: damaged blob %s authenticates whole again (%s)", blob.pk, found_by)
        record(
            locked.tenant,
            EventType.BLOB_REPAIRED,
            payload=payloads.blob_repaired(blob_id=str(blob.pk), name=locked.name, found_by=found_by),
        )
    blob.verified_at, blob.damaged_at, blob.damage, blob.damaged_chunk = now, None, "", None
    return True
