"""Helpers of the erasure tests (``test_erasure_*.py``, ``test_crypto_erasure.py``, ``test_erasure_live.py``,
``test_certificate_*.py``): what a tenant holds, read straight from the tables, its objects seen behind
Kodori's back (on the filesystem or S3), a deletion that is already due, and an erased tenant with its
certificate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core import mail
from django.utils import timezone

from audit import verify_bundle
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
from offboarding import certificate
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


# --- where the objects are: the filesystem or S3 ------------------------------------------------------------

BUCKET = "kodori-test-erasure"
MiB = 1 << 20


class Objects:
    """The objects of the ``blobs`` storage, seen behind Kodori's back."""

    def __init__(self, root: Path | None = None, client: Any = None) -> None:
        self.root, self.client = root, client

    def under(self, prefix: str) -> dict[str, bytes]:
        """Every object whose key starts with ``prefix``: key -> bytes."""
        if self.client is None:
            assert self.root is not None
            base = self.root / prefix
            files = [p for p in base.rglob("*") if p.is_file()] if base.exists() else []
            return {str(p.relative_to(self.root)): p.read_bytes() for p in files}
        listing = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"prefix/{prefix}")
        return {
            item["Key"].removeprefix("prefix/"): self.read(item["Key"].removeprefix("prefix/"))
            for item in listing.get("Contents", [])
        }

    def read(self, key: str) -> bytes:
        if self.client is None:
            assert self.root is not None
            return (self.root / key).read_bytes()
        return bytes(self.client.get_object(Bucket=BUCKET, Key=f"prefix/{key}")["Body"].read())

    def unfinished_uploads(self, prefix: str) -> list[str]:
        """S3 multipart uploads begun and never completed nor aborted (their parts are stored bytes too)."""
        if self.client is None:
            return []
        found = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"prefix/{prefix}")
        return [upload["Key"].removeprefix("prefix/") for upload in found.get("Uploads", [])]


# --- an erased tenant and its certificate -------------------------------------------------------------------

RETENTION_DAYS = 400
REASON = "Ticket 4711: the customer's signed letter of 2 March asks us to close the account."


@dataclass
class Erased:
    tenant: Tenant
    deletion: DeletionRequest
    counts: dict[str, int]  # what the tables held right before the erasure
    message: Any  # the certificate e-mail


def erase(tenant: Tenant, actor: Any, capture: Any, **schedule: Any) -> Erased:
    deletion = schedule_due(tenant, actor, **schedule)
    counts = snapshot_counts(tenant)
    mail.outbox.clear()
    assert run_task(capture) == [tenant.slug]
    deletion.refresh_from_db()
    tenant.refresh_from_db()
    (message,) = mail.outbox
    return Erased(tenant, deletion, counts, message)


def write(signed: dict[str, Any], path: Path) -> Path:
    path.write_bytes(certificate.as_bytes(signed))
    return path


def verify(path: Path, *keys: str) -> int:
    return verify_bundle.main([str(path), *[a for key in keys for a in ("--public-key", key)]])
