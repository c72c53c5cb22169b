"""Cryptographic erasure of a tenant whose waiting period has ended. Idempotent, resumable after a crash at
any step, and independent of the customer's KMS.

The steps, in order (``DeletionRequest.step`` is the last one finished, so a new run starts after it):

1. **Destroy the keys** (one transaction): every tenant key version's wrapped key and every wrapped data key
   of the tenant is overwritten with nothing, live re-wraps are cancelled, the tenant becomes ``erasing`` and
   ``tenant.erasure-started`` is recorded. From that commit no blob of the tenant can be decrypted, from the
   object store, from an old object version or from any copy: the only keys that opened them are gone. No
   KMS is called (a revoked or deleted BYOK key cannot block it): destroying Kodori's wrapped copies needs no
   unwrap.
2. **Remove the stored objects** in batches: each batch's objects are deleted, then their blob and data-key
   rows; finally anything left under the tenant's storage prefix (an object whose row a crash took first).
3. **Remove the rows** in batches: API tokens, memberships, exports, re-wrap jobs, scrub passes, the
   tenant's ExternalId, data keys, key versions and key registrations.
4. **Certify** (one transaction): ``tenant.erased`` is recorded, the tenant becomes ``erased``, and the
   erasure certificate (``offboarding.certificate``) is signed over the final chain head and kept; owners
   get it by e-mail once it commits.

What stays: the tenant row (a tombstone: id, name, state) and its audit chain, read-only and support only,
until ``TENANT_AUDIT_RETENTION_DAYS`` have passed (``purge_expired_audit``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from audit import payloads
from audit.hygiene import key_id_suffix
from audit.models import CheckpointReason, EventType
from audit.services import record, sign_head
from blobs.models import ApiToken, Blob, BlobStatus, ScrubPass
from blobs.storage import blob_storage, delete_object
from encryption.models import (
    LIVE_REWRAP_STATUSES,
    DataKey,
    RewrapJob,
    RewrapStatus,
    TenantExternalId,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
)
from tenants import lifecycle
from tenants.lifecycle import Transition
from tenants.models import Membership, Tenant

from . import certificate
from .models import DeletionRequest, DeletionStatus, ErasureStep, Export
from .services import owner_emails

logger = logging.getLogger(__name__)

STEPS = [s for s in ErasureStep if s != ErasureStep.NOT_STARTED]


def _crash_point(name: str) -> None:
    """Tests only: die here as a SIGKILL would (``KODORI_ERASURE_CRASH_AT``, with DJANGO_ENV=test)."""
    if settings.DJANGO_ENV == "test" and os.environ.get("KODORI_ERASURE_CRASH_AT") == name:
        logger.warning("offboarding: crash point %s reached; killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def batch_size() -> int:
    return int(getattr(settings, "TENANT_ERASURE_BATCH_SIZE", 500))


def due_requests() -> list[DeletionRequest]:
    """Scheduled deletions whose date has passed, and erasures a crash left unfinished."""
    now = timezone.now()
    scheduled = DeletionRequest.objects.filter(status=DeletionStatus.SCHEDULED, due_at__lte=now)
    running = DeletionRequest.objects.filter(status=DeletionStatus.ERASING)
    unmailed = DeletionRequest.objects.filter(
        status=DeletionStatus.ERASED, certificate_mailed_at__isnull=True, completed_at__gte=now - MAIL_RETRY
    )
    return list((scheduled | running | unmailed).order_by("due_at"))


def erase_due() -> list[str]:
    """Erase every tenant that is due (or resume one); returns the slugs finished by this run."""
    finished = []
    for deletion in due_requests():
        try:
            if erase(deletion.pk):
                finished.append(deletion.tenant.slug)
        except Exception as exc:
            # One tenant's failure (a storage outage) must not hold up the others; the next run resumes it.
            logger.exception(
                "offboarding: erasure of tenant %s stopped; it resumes next run", deletion.tenant_id
            )
            DeletionRequest.objects.filter(pk=deletion.pk).update(
                last_error=f"{type(exc).__name__}: {exc}"[:500]
            )
    return finished


class _TenantLock:
    """A PostgreSQL advisory lock per tenant, so two workers never run the same erasure at once."""

    def __init__(self, tenant_id: int) -> None:
        digest = hashlib.sha256(f"kodori-erasure-{tenant_id}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.held = False

    def __enter__(self) -> _TenantLock:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
            self.held = bool(cursor.fetchone()[0])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [self.key])


def erase(deletion_pk: Any) -> bool:
    """Run (or resume) one erasure to its end. True when the tenant is erased; False when it is not due,
    was cancelled, or another worker is running it."""
    deletion = DeletionRequest.objects.select_related("tenant").get(pk=deletion_pk)
    with _TenantLock(deletion.tenant_id) as lock:
        if not lock.held:
            return False
        deletion.refresh_from_db()
        if deletion.status == DeletionStatus.ERASED:
            deliver_certificate(deletion)
            return True
        if deletion.step == ErasureStep.NOT_STARTED and not destroy_keys(deletion):
            return False
        _crash_point("keys-destroyed")
        deletion.refresh_from_db()
        if deletion.step == ErasureStep.KEYS_DESTROYED:
            remove_objects(deletion)
            _crash_point("objects-removed")
        if deletion.step == ErasureStep.OBJECTS_REMOVED:
            remove_rows(deletion)
            _crash_point("rows-removed")
        if deletion.step == ErasureStep.ROWS_REMOVED:
            certify(deletion)
        return True


# --- 1. Keys ------------------------------------------------------------------------------------------------


def destroy_keys(deletion: DeletionRequest) -> bool:
    """Step 1, in one transaction. False (nothing changed) when the deletion is not due or was cancelled."""
    now = timezone.now()
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=deletion.tenant_id)
        deletion = DeletionRequest.objects.select_for_update().get(pk=deletion.pk)
        if deletion.status != DeletionStatus.SCHEDULED or deletion.due_at > now:
            return False
        erasing = lifecycle.check(tenant, Transition.BEGIN_ERASURE)
        versions = TenantKeyVersion.objects.for_tenant(tenant)
        blobs = Blob.objects.for_tenant(tenant)
        ready = blobs.filter(status=BlobStatus.READY)
        counts = {
            "dataKeys": DataKey.objects.for_tenant(tenant).count(),
            "keyVersions": versions.exclude(status=VersionStatus.DESTROYED).count(),
            "keyVersionsDestroyedBefore": versions.filter(status=VersionStatus.DESTROYED).count(),
            "blobs": ready.count(),
            "blobBytes": int(ready.aggregate(total=Sum("size"))["total"] or 0),
            "uploadsInProgress": blobs.filter(status=BlobStatus.UPLOADING).count(),
            "keys": TenantKey.objects.for_tenant(tenant).count(),
            "apiTokens": ApiToken.objects.for_tenant(tenant).count(),
            "memberships": Membership.objects.for_tenant(tenant).count(),
        }
        # The destruction itself: two statements, no KMS call.
        DataKey.objects.for_tenant(tenant).update(wrapped_dek=b"")
        versions.exclude(status=VersionStatus.DESTROYED).update(
            wrapped_key=b"", status=VersionStatus.DESTROYED, destroyed_at=now
        )
        RewrapJob.objects.for_tenant(tenant).filter(status__in=LIVE_REWRAP_STATUSES).update(
            status=RewrapStatus.CANCELLED, finished_at=now, updated_at=now
        )
        tenant.state = erasing
        tenant.save(update_fields=["state"])
        deletion.status = DeletionStatus.ERASING
        deletion.step = ErasureStep.KEYS_DESTROYED
        deletion.keys_destroyed_at = now
        deletion.counts = counts
        deletion.keys = [
            {
                "wrapMethod": k.wrap_method,
                "provider": payloads.provider_label(k.wrap_method),
                "keyIdSuffix": key_id_suffix(k.key_id),
                "status": k.status,
            }
            for k in TenantKey.objects.for_tenant(tenant).order_by("created_at", "pk")
        ]
        deletion.owner_emails = owner_emails(tenant)
        deletion.last_error = ""
        deletion.save()
        record(
            tenant,
            EventType.TENANT_ERASURE_STARTED,
            payload=payloads.erasure_counts(counts, _payload_keys(deletion)),
        )
    logger.info("offboarding: tenant %s: keys destroyed (%s data keys)", tenant.slug, counts["dataKeys"])
    return True


# --- 2. Objects ---------------------------------------------------------------------------------------------


def tenant_prefix(tenant_id: int) -> str:
    return f"tenants/{tenant_id}"


def remove_objects(deletion: DeletionRequest) -> None:
    """Step 2: each batch's objects first, then its rows; then whatever is left under the tenant's prefix."""
    tenant = deletion.tenant
    removed = _remove_blobs(deletion)
    prefix = tenant_prefix(tenant.pk)
    _save_counts(
        deletion,
        objectsRemoved=removed,
        strayObjectsRemoved=_sweep_prefix(prefix),
        unfinishedUploadsAborted=_abort_unfinished_uploads(prefix),
        step=ErasureStep.OBJECTS_REMOVED,
    )


def _remove_blobs(deletion: DeletionRequest) -> int:
    """Every blob of the tenant, a batch at a time: objects first, then rows. Returns the running count."""
    tenant = deletion.tenant
    removed = int(deletion.counts.get("objectsRemoved", 0))
    while True:
        batch = list(
            Blob.objects.for_tenant(tenant).order_by("pk").values_list("pk", "storage_key")[: batch_size()]
        )
        if not batch:
            break
        for _, key in batch:
            delete_object(key)
        _crash_point("object-batch")
        ids = [pk for pk, _ in batch]
        with transaction.atomic():
            Blob.objects.for_tenant(tenant).filter(pk__in=ids).delete()
            DataKey.objects.for_tenant(tenant).filter(blob_id__in=ids).delete()
            removed += len(ids)
            _save_counts(deletion, objectsRemoved=removed)
    return removed


def _sweep_prefix(prefix: str) -> int:
    """Delete every object under ``prefix`` (a blob whose row went first in an earlier crash, an upload that
    never got its row); returns how many there were."""
    store = blob_storage()
    removed = 0
    try:
        folders, files = store.listdir(prefix)
    except FileNotFoundError:
        return 0
    for name in files:
        store.delete(f"{prefix}/{name}")
        removed += 1
    for folder in folders:
        removed += _sweep_prefix(f"{prefix}/{folder}")
    return removed


def _abort_unfinished_uploads(prefix: str) -> int:
    """S3 only: abort the multipart uploads under ``prefix`` that were begun and never completed (an upload
    in progress when the erasure ran). Their parts are stored ciphertext that no listing of objects shows and
    that S3 keeps until the upload is aborted; returns how many there were."""
    store = blob_storage()
    bucket = getattr(store, "bucket", None)
    if bucket is None:
        return 0
    location = str(getattr(store, "location", "") or "").strip("/")
    key_prefix = f"{location}/{prefix}/" if location else f"{prefix}/"
    aborted = 0
    for upload in bucket.multipart_uploads.filter(Prefix=key_prefix):
        upload.abort()
        aborted += 1
    return aborted


def _save_counts(deletion: DeletionRequest, *, step: ErasureStep | None = None, **values: int) -> None:
    deletion.counts = {**deletion.counts, **values}
    fields = ["counts"]
    if step is not None:
        deletion.step = step
        fields.append("step")
    deletion.save(update_fields=fields)


# --- 3. Rows ------------------------------------------------------------------------------------------------


def _delete_in_batches(queryset: Any) -> int:
    total = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: batch_size()])
        if not ids:
            return total
        with transaction.atomic():
            queryset.model.objects.filter(pk__in=ids).delete()
        total += len(ids)
        _crash_point("row-batch")


def remove_rows(deletion: DeletionRequest) -> None:
    """Step 3: every remaining row of the tenant but its audit chain and this request."""
    tenant = deletion.tenant
    # An upload that passed its writability check just before the schedule and reserved its row after step 2
    # would otherwise protect its data key forever: its object and row go now, the same way.
    if Blob.objects.for_tenant(tenant).exists():
        _save_counts(deletion, objectsRemoved=_remove_blobs(deletion))
        _sweep_prefix(tenant_prefix(tenant.pk))
    _delete_in_batches(ApiToken.objects.for_tenant(tenant))
    _delete_in_batches(Membership.objects.for_tenant(tenant))
    _delete_in_batches(Export.objects.for_tenant(tenant))
    _delete_in_batches(ScrubPass.objects.filter(tenant=tenant))
    _delete_in_batches(RewrapJob.objects.for_tenant(tenant))
    TenantExternalId.objects.filter(tenant=tenant).delete()
    _delete_in_batches(DataKey.objects.for_tenant(tenant))  # keys of uploads that never got a blob row
    _delete_in_batches(TenantKeyVersion.objects.for_tenant(tenant))
    _delete_in_batches(TenantKey.objects.for_tenant(tenant))
    _save_counts(deletion, step=ErasureStep.ROWS_REMOVED)


# --- 4. Certificate -----------------------------------------------------------------------------------------


def certify(deletion: DeletionRequest) -> None:
    """Step 4: ``tenant.erased``, the signed certificate, the tenant's final state; owners mailed after."""
    now = timezone.now()
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=deletion.tenant_id)
        deletion = DeletionRequest.objects.select_for_update().get(pk=deletion.pk)
        if deletion.status == DeletionStatus.ERASED:
            return
        event = record(
            tenant,
            EventType.TENANT_ERASED,
            payload=payloads.erasure_counts(deletion.counts, _payload_keys(deletion)),
        )
        assert event is not None
        tenant.state = lifecycle.check(tenant, Transition.FINISH_ERASURE)
        tenant.erased_at = now
        tenant.save(update_fields=["state", "erased_at"])
        deletion.status = DeletionStatus.ERASED
        deletion.step = ErasureStep.CERTIFIED
        deletion.completed_at = now
        deletion.last_error = ""  # an outage an earlier run stopped on is over: it finished
        retained_until = now + timedelta(days=int(settings.TENANT_AUDIT_RETENTION_DAYS))
        deletion.certificate = certificate.issue(deletion, tenant, event, retained_until=retained_until)
        deletion.save()
        transaction.on_commit(lambda: _after_certified(deletion.pk))
    logger.info("offboarding: tenant %s erased; certificate issued", tenant.slug)


def _payload_keys(deletion: DeletionRequest) -> list[dict[str, str]]:
    # The request keeps suffixes only; the payload builder takes a key id and keeps its last 12 characters.
    return [{"wrap_method": k["wrapMethod"], "key_id": k["keyIdSuffix"]} for k in deletion.keys]


def _after_certified(deletion_pk: Any) -> None:
    deletion = DeletionRequest.objects.select_related("tenant").get(pk=deletion_pk)
    try:
        sign_head(deletion.tenant, reason=CheckpointReason.MANUAL)
    except Exception:
        logger.exception("offboarding: could not sign the final checkpoint of tenant %s", deletion.tenant_id)
    _crash_point("certified")
    deliver_certificate(deletion)


# A certificate e-mail that failed (mail server down, a crash right after the commit) is tried again by each
# run of the erasure task for this long after the erasure; support can always download it in the admin.
MAIL_RETRY = timedelta(days=7)


def deliver_certificate(deletion: DeletionRequest) -> bool:
    """E-mail the certificate unless that was done; note when it was. At least once: a crash between the send
    and the note sends it again on the next run. False when the mail server refused (logged)."""
    if deletion.certificate_mailed_at is not None:
        return True
    try:
        mail_certificate(deletion)
    except Exception:
        # After the commit: the tenant is erased and certified whatever the mail server says; a refused
        # e-mail must not mark the erasure as failed. The next run tries again.
        logger.exception(
            "offboarding: could not e-mail the erasure certificate of tenant %s", deletion.tenant_id
        )
        return False
    DeletionRequest.objects.filter(pk=deletion.pk).update(certificate_mailed_at=timezone.now())
    return True


def mail_certificate(deletion: DeletionRequest) -> int:
    """E-mail the certificate to the owners the tenant had when its keys were destroyed."""
    if not deletion.owner_emails or deletion.certificate is None:
        return 0
    tenant = deletion.tenant
    message = EmailMessage(
        subject=f"{tenant.name} was erased: your erasure certificate",
        body="\n\n".join(certificate.mail_lines(deletion)),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(deletion.owner_emails),
    )
    message.attach(
        certificate.filename(deletion), certificate.as_bytes(deletion.certificate), "application/json"
    )
    return message.send()
