"""Helpers of the erasure tests (``test_erasure.py``, ``test_erasure_live.py``, ``test_certificate.py``): what
a tenant holds, read straight from the tables, and a deletion that is already due."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.models import AuditEvent
from blobs.models import ApiToken, Blob, BlobStatus, ScrubPass
from encryption.models import (
    DataKey,
    RewrapJob,
    TenantExternalId,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
)
from offboarding.models import DeletionRequest, Export, Via
from offboarding.services import schedule_deletion
from offboarding.tasks import erase_due_tenants
from tenants.models import Membership, Tenant


def snapshot_counts(tenant: Tenant) -> dict[str, int]:
    """What the deletion request and the certificate must count, read straight from the tables."""
    blobs = Blob.objects.for_tenant(tenant)
    versions = TenantKeyVersion.objects.for_tenant(tenant)
    return {
        "dataKeys": DataKey.objects.for_tenant(tenant).count(),
        "keyVersions": versions.exclude(status=VersionStatus.DESTROYED).count(),
        "keyVersionsDestroyedBefore": versions.filter(status=VersionStatus.DESTROYED).count(),
        "blobs": blobs.filter(status=BlobStatus.READY).count(),
        "blobBytes": sum(blobs.filter(status=BlobStatus.READY).values_list("size", flat=True)),
        "uploadsInProgress": blobs.filter(status=BlobStatus.UPLOADING).count(),
        "keys": TenantKey.objects.for_tenant(tenant).count(),
        "apiTokens": ApiToken.objects.for_tenant(tenant).count(),
        "memberships": Membership.objects.for_tenant(tenant).count(),
    }


def tenant_rows(tenant: Tenant) -> dict[str, int]:
    """How many rows of ``tenant`` each table the erasure empties still holds."""
    return {
        "data_keys": DataKey.objects.filter(tenant=tenant).count(),
        "tenant_key_versions": TenantKeyVersion.objects.filter(tenant=tenant).count(),
        "tenant_kms_keys": TenantKey.objects.filter(tenant=tenant).count(),
        "tenant_external_ids": TenantExternalId.objects.filter(tenant=tenant).count(),
        "rewrap_jobs": RewrapJob.objects.filter(tenant=tenant).count(),
        "blobs": Blob.objects.filter(tenant=tenant).count(),
        "blob_api_tokens": ApiToken.objects.filter(tenant=tenant).count(),
        "memberships": Membership.objects.filter(tenant=tenant).count(),
        "tenant_exports": Export.objects.filter(tenant=tenant).count(),
        "blob_scrub_passes": ScrubPass.objects.filter(tenant=tenant).count(),
    }


def rows_left(tenant: Tenant) -> dict[str, int]:
    """The tables that still hold rows of ``tenant`` (empty once it is erased), with how many."""
    return {table: count for table, count in tenant_rows(tenant).items() if count}


def wrapped_state(tenant: Tenant) -> tuple[dict[uuid.UUID, bytes], dict[int, tuple[bytes, str]]]:
    """Every data key (blob id -> wrapped DEK) and key version (id -> wrapped key, status) of ``tenant``."""
    keys = DataKey.objects.filter(tenant=tenant).values_list("blob_id", "wrapped_dek")
    versions = TenantKeyVersion.objects.filter(tenant=tenant).values_list("pk", "wrapped_key", "status")
    return {b: bytes(w) for b, w in keys}, {pk: (bytes(w), s) for pk, w, s in versions}


def schedule_due(
    tenant: Tenant, actor: Any, *, via: Via = Via.OWNER, days: int = 7, reason: str = "moving on"
) -> DeletionRequest:
    """Schedule the deletion as an owner (or support) does, then let its waiting period pass."""
    deletion = schedule_deletion(tenant, actor=actor, via=via, days=days, reason=reason)
    DeletionRequest.objects.filter(pk=deletion.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    deletion.refresh_from_db()
    return deletion


def event_types(tenant: Tenant) -> list[str]:
    return list(AuditEvent.objects.filter(tenant=tenant).order_by("seq").values_list("type", flat=True))


def run_task(capture: Any) -> list[str]:
    """The beat task, with what it leaves for after its commits (checkpoint, e-mail) run as they would."""
    with capture(execute=True):
        return erase_due_tenants()


def certificate_of(deletion: DeletionRequest) -> dict[str, Any]:
    """The signed certificate of an erased tenant's request (a test fails here if there is none)."""
    assert deletion.certificate is not None, f"deletion {deletion.pk} has no certificate ({deletion.status})"
    return deletion.certificate


def purge_record_of(deletion: DeletionRequest) -> dict[str, Any]:
    assert deletion.purge_record is not None, f"deletion {deletion.pk} has no purge record"
    return deletion.purge_record


def when(moment: datetime | None) -> datetime:
    """A time the erasure must have set by now."""
    assert moment is not None
    return moment


def body(response: Any) -> bytes:
    """A response's whole body, streamed or not."""
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)
