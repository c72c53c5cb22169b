"""Offboarding: a tenant's exports, its scheduled deletion, and the erasure that ends it.

``DeletionRequest`` is one scheduling of a tenant's deletion, from the moment an owner (or support, on the
customer's written request) schedules it to its cancellation or to the signed erasure certificate. The
tenant's own ``state`` (``tenants.lifecycle``) is what every other app reads; this row keeps who, why and
when, the erasure's progress (so a crashed erasure resumes where it stopped) and the certificate.

``Export`` is one export of a tenant's files, cut into ``ExportPart`` archives that can each be downloaded
(and downloaded again) on their own: an interrupted download is resumed by downloading that part again.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import Tenant
from tenants.querysets import TenantScopedQuerySet


class DeletionStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    CANCELLED = "cancelled", "Cancelled"
    ERASING = "erasing", "Erasing"
    ERASED = "erased", "Erased"


OPEN_STATUSES = (DeletionStatus.SCHEDULED, DeletionStatus.ERASING)


class Via(models.TextChoices):
    OWNER = "owner", "an owner, on the Tenant deletion page"
    SUPPORT = "support", "Kodori support, on the customer's written request"


class ErasureStep(models.TextChoices):
    """The erasure's steps in order (``offboarding.erasure``); ``step`` is the last one finished."""

    NOT_STARTED = "", "Not started"
    KEYS_DESTROYED = "keys-destroyed", "Keys destroyed"
    OBJECTS_REMOVED = "objects-removed", "Stored objects removed"
    ROWS_REMOVED = "rows-removed", "Rows removed"
    CERTIFIED = "certified", "Certificate issued"


class DeletionRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="deletion_requests")
    status = models.CharField(max_length=16, choices=DeletionStatus.choices, default=DeletionStatus.SCHEDULED)
    via = models.CharField(max_length=16, choices=Via.choices)
    reason = models.TextField(blank=True)
    waiting_days = models.PositiveSmallIntegerField()
    requested_at = models.DateTimeField()
    due_at = models.DateTimeField()
    # People are copied, not linked: the erasure removes the tenant's memberships, and accounts may go.
    requested_by_id = models.BigIntegerField(null=True, blank=True)
    requested_by_name = models.CharField(max_length=200)
    requested_by_email = models.CharField(max_length=254, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by_name = models.CharField(max_length=200, blank=True)
    cancelled_by_email = models.CharField(max_length=254, blank=True)
    cancel_via = models.CharField(max_length=16, choices=Via.choices, blank=True)
    cancel_reason = models.TextField(blank=True)
    # The erasure: its progress, what it destroyed (fixed when the keys are destroyed), the certificate.
    step = models.CharField(max_length=24, choices=ErasureStep.choices, blank=True, default="")
    keys_destroyed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    keys = models.JSONField(default=list, blank=True)
    owner_emails = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)
    certificate = models.JSONField(null=True, blank=True)
    certificate_mailed_at = models.DateTimeField(null=True, blank=True)
    # After ``TENANT_AUDIT_RETENTION_DAYS`` the tenant's audit chain is removed; this signed record remains.
    audit_purged_at = models.DateTimeField(null=True, blank=True)
    purge_record = models.JSONField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "tenant_deletion_requests"
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(status__in=[s.value for s in OPEN_STATUSES]),
                name="deletion_one_open_per_tenant",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in DeletionStatus]), name="deletion_status_valid"
            ),
            models.CheckConstraint(
                condition=~models.Q(via=Via.SUPPORT) | ~models.Q(reason=""),
                name="deletion_support_has_reason",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=DeletionStatus.ERASED) | models.Q(certificate__isnull=False),
                name="deletion_erased_has_certificate",
            ),
        ]

    def __str__(self) -> str:
        return f"deletion of tenant {self.tenant_id} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


STALLED_AFTER = timedelta(minutes=10)


class ExportFormat(models.TextChoices):
    ZIP = "zip", "zip"
    TAR = "tar", "tar"


class PartStatus(models.TextChoices):
    READY = "ready", "Ready to download"
    STREAMING = "streaming", "Downloading"
    COMPLETE = "complete", "Downloaded"
    INTERRUPTED = "interrupted", "Interrupted: download it again"


class Export(models.Model):
    """An export of every file a tenant had when it was made (``snapshot_at``), in ``parts`` archives."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="exports")
    format = models.CharField(max_length=8, choices=ExportFormat.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    snapshot_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_email = models.CharField(max_length=254, blank=True)
    files = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        db_table = "tenant_exports"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(format__in=[f.value for f in ExportFormat]), name="export_format_valid"
            )
        ]

    def __str__(self) -> str:
        return f"export {self.pk} of tenant {self.tenant_id}"


class ExportPart(models.Model):
    """Part ``number`` of an export: the files whose (created_at, id) is after ``after`` and up to ``last``.

    ``after_created``/``after_id`` empty means from the first file. Progress (``bytes_sent``) is written by
    the download as it streams, at most every few megabytes, so the page can show it.
    """

    export = models.ForeignKey(Export, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    after_created = models.DateTimeField(null=True, blank=True)
    after_id = models.UUIDField(null=True, blank=True)
    last_created = models.DateTimeField(null=True, blank=True)
    last_id = models.UUIDField(null=True, blank=True)
    files = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=PartStatus.choices, default=PartStatus.READY)
    bytes_sent = models.BigIntegerField(default=0)
    files_sent = models.BigIntegerField(default=0)
    downloads = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    # Last written by the streaming download: a part "streaming" with no progress for STALLED_AFTER is shown
    # as interrupted (its process died, or the client stopped reading).
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        db_table = "tenant_export_parts"
        ordering = ["export", "number"]
        constraints = [
            models.UniqueConstraint(fields=["export", "number"], name="export_part_unique_number"),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in PartStatus]), name="export_part_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"part {self.number} of {self.export_id}"

    @property
    def stalled(self) -> bool:
        if self.status != PartStatus.STREAMING:
            return False
        last = self.progress_at or self.started_at
        return last is None or timezone.now() - last > STALLED_AFTER

    @property
    def shown_status(self) -> str:
        """The status as it is true now: a download that stopped making progress is interrupted."""
        return PartStatus.INTERRUPTED if self.stalled else self.status

    @property
    def shown_error(self) -> str:
        if self.stalled:
            return "The download stopped making progress (the connection or server went away). Retry it."
        return self.error

    @property
    def progress_percent(self) -> int:
        if self.status == PartStatus.COMPLETE:
            return 100
        return min(99, int(100 * self.files_sent / self.files)) if self.files else 0

    def describe(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "files": self.files,
            "bytes": self.bytes,
            "status": self.shown_status,
            "files_sent": self.files_sent,
            "bytes_sent": self.bytes_sent,
            "downloads": self.downloads,
            "error": self.shown_error or None,
        }
