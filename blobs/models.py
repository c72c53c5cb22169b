"""Blobs (tenants' files) and the API tokens programs use to reach them.

A ``Blob`` row describes one encrypted object in the ``blobs`` storage. Its primary key is also the blob id
bound into the ciphertext's context and into its wrapped data key (``encryption.DataKey.blob_id``), and its
storage key is derived from the tenant id and that id only, never from a name a user chose.

Only ``ready`` blobs exist for users: an ``uploading`` row is a reservation that the upload either flips to
``ready`` in one short transaction or deletes (with its object and data key); the sweeper removes the ones a
crash left behind.
"""

from __future__ import annotations

import uuid
from typing import Any, Self

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import connection, models
from django.db.models.functions import Coalesce, Upper
from django.utils import timezone

from encryption.models import DataKey
from tenants.models import Tenant
from tenants.querysets import TenantScopedQuerySet


class BlobStatus(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    READY = "ready", "Ready"


class Damage(models.TextChoices):
    """What was found wrong with a blob's stored bytes (``blobs.damage``)."""

    MISSING = "missing", "The stored object is missing"
    LENGTH = "length", "The stored object has the wrong length (truncated or extended)"
    HEADER = "header", "The header does not authenticate"
    CHUNK = "chunk", "A chunk does not authenticate"
    DATA_KEY = "data-key", "The data key does not match the file"


class BlobQuerySet(TenantScopedQuerySet):
    def ready(self) -> Self:
        """What users see: finished uploads only."""
        return self.filter(status=BlobStatus.READY)

    def visible_in(self, tenant: Tenant) -> Self:
        """The one door for pages and the API: this tenant's finished blobs."""
        return self.for_tenant(tenant).ready()

    def damaged(self) -> Self:
        return self.filter(damaged_at__isnull=False)


def storage_key_for(tenant_id: int, blob_id: uuid.UUID) -> str:
    """Where a blob's ciphertext lives in the ``blobs`` storage: tenant and blob id only."""
    return f"tenants/{tenant_id}/{blob_id.hex}.kdrb"


class Blob(models.Model):
    """One encrypted file of a tenant. ``size`` is the plaintext size (the declared size while uploading)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="blobs")
    name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=BlobStatus.choices, default=BlobStatus.UPLOADING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Copied so the uploader stays known after their account is gone.
    created_by_email = models.CharField(max_length=254, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    storage_key = models.CharField(max_length=255, unique=True)
    format_version = models.PositiveSmallIntegerField()
    data_key = models.OneToOneField(DataKey, on_delete=models.PROTECT, related_name="blob")
    # Damage found by a download or the scrub (``blobs.damage``): set until a scrub authenticates every
    # chunk again. ``damaged_chunk`` is the first chunk that failed (None for a missing object or a wrong
    # length). ``verified_at``: when every chunk last authenticated (the scrub's resume point).
    damaged_at = models.DateTimeField(null=True, blank=True)
    damage = models.CharField(max_length=16, choices=Damage.choices, blank=True)
    damaged_chunk = models.BigIntegerField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    objects = BlobQuerySet.as_manager()

    class Meta:
        db_table = "blobs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "status", "-created_at", "-id"], name="blobs_tenant_recent"),
            # One index per sort of the list, each ending in the id: keyset pages (``blobs.listing``).
            models.Index(fields=["tenant", "status", "name", "id"], name="blobs_tenant_name_id"),
            models.Index(fields=["tenant", "status", "size", "id"], name="blobs_tenant_size_id"),
            # Name search: ``name__icontains`` is ``UPPER(name) LIKE UPPER('%q%')``, served by trigrams of it.
            GinIndex(OpClass(Upper("name"), name="gin_trgm_ops"), name="blobs_name_trgm"),
            models.Index(fields=["status", "created_at"], name="blobs_status_created"),
            models.Index(
                fields=["tenant"], condition=models.Q(damaged_at__isnull=False), name="blobs_tenant_damaged"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in BlobStatus]), name="blob_status_valid"
            ),
            models.CheckConstraint(condition=models.Q(size__gte=0), name="blob_size_not_negative"),
            models.CheckConstraint(
                condition=models.Q(status=BlobStatus.UPLOADING) | models.Q(completed_at__isnull=False),
                name="blob_ready_has_completed_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"

    @property
    def etag(self) -> str:
        """Strong validator: a blob's bytes never change, so its id names its content."""
        return f'"{self.pk.hex}"'

    @property
    def is_damaged(self) -> bool:
        return self.damaged_at is not None

    @property
    def damage_text(self) -> str:
        """The damage in one sentence for pages and the API ("" when whole)."""
        if self.damaged_at is None:
            return ""
        where = f" (chunk {self.damaged_chunk})" if self.damaged_chunk is not None else ""
        return f"{Damage(self.damage).label}{where}." if self.damage else "Damaged."

    def owned_by(self, user: Any) -> bool:
        return self.created_by_id is not None and self.created_by_id == getattr(user, "pk", None)


class TenantBlobStats(models.Model):
    """A tenant's blob totals as of the last fold; what they are now is this plus the tenant's pending
    ``BlobStatDelta`` rows, which triggers on ``blobs`` append in the same transaction as the rows (migration
    0004). Read them with :meth:`of`.

    ``ready_count``/``ready_bytes``: the files users see; ``total_bytes``: those plus the declared sizes of
    uploads in flight, which is what the quota counts.
    """

    tenant = models.OneToOneField(Tenant, primary_key=True, on_delete=models.CASCADE, related_name="+")
    ready_count = models.BigIntegerField(default=0)
    ready_bytes = models.BigIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)

    class Meta:
        db_table = "blob_tenant_stats"
        verbose_name_plural = "tenant blob stats"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ready_count__gte=0, ready_bytes__gte=0, total_bytes__gte=0),
                name="blob_tenant_stats_not_negative",
            )
        ]

    def __str__(self) -> str:
        return f"{self.ready_count} files, {self.ready_bytes} bytes"

    @classmethod
    def of(cls, tenant_id: int) -> TenantBlobStats:
        """The tenant's totals now (an unsaved instance): base plus pending deltas, in one statement, so a
        fold committing in between cannot make a delta count twice or not at all."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(ready_count), 0), coalesce(sum(ready_bytes), 0), "
                "coalesce(sum(total_bytes), 0) FROM ("
                "SELECT ready_count, ready_bytes, total_bytes FROM blob_tenant_stats WHERE tenant_id = %s "
                "UNION ALL "
                "SELECT ready_count, ready_bytes, total_bytes FROM blob_stat_deltas WHERE tenant_id = %s) x",
                [tenant_id, tenant_id],
            )
            count, ready, total = cursor.fetchone()
        return cls(
            tenant_id=tenant_id, ready_count=int(count), ready_bytes=int(ready), total_bytes=int(total)
        )


class BlobStatDelta(models.Model):
    """What one statement changed in a tenant's totals, not yet folded into ``TenantBlobStats``. Written only
    by the triggers on ``blobs``; no foreign key, so appending one never waits for a lock."""

    tenant_id = models.BigIntegerField(db_index=True)
    ready_count = models.BigIntegerField()
    ready_bytes = models.BigIntegerField()
    total_bytes = models.BigIntegerField()

    class Meta:
        db_table = "blob_stat_deltas"

    def __str__(self) -> str:
        return f"tenant {self.tenant_id}: {self.ready_count:+d} files"


def fold_counters() -> int:
    """Move pending deltas into the bases (blob totals and per key version data-key counts); how many delta
    rows were folded. Safe to run at any time, concurrently too: reads are exact either way."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT fold_blob_stats() + fold_data_key_counts()")
        return int(cursor.fetchone()[0])


class PassStatus(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    ABANDONED = "abandoned", "Abandoned (restarted)"


class ScrubPass(models.Model):
    """One pass of the scrub over every tenant's ready blobs (``tenant`` empty) or one tenant's.

    The counts add up over every run that worked on the pass: ``verified`` (every chunk authenticated),
    ``damaged`` (any damage but a missing object), ``missing``, ``not_checked`` (sealed tenant, key or store
    unavailable).
    """

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=PassStatus.choices, default=PassStatus.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The last blob done (keyset cursor on the primary key); None before the first.
    cursor = models.UUIDField(null=True, blank=True)
    # A run whose time ran out inside a large blob: that blob's next chunk to check.
    resume_blob = models.UUIDField(null=True, blank=True)
    resume_chunk = models.BigIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0)
    verified = models.BigIntegerField(default=0)
    damaged = models.BigIntegerField(default=0)
    missing = models.BigIntegerField(default=0)
    not_checked = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)

    class Meta:
        app_label = "blobs"
        db_table = "blob_scrub_passes"
        ordering = ["-started_at", "-id"]
        verbose_name_plural = "scrub passes"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in PassStatus]), name="blob_scrub_status_valid"
            ),
            # One running pass per scope (every tenant, or one tenant).
            models.UniqueConstraint(
                Coalesce("tenant", models.Value(0)),
                condition=models.Q(status=PassStatus.RUNNING),
                name="blob_scrub_one_running_pass",
            ),
        ]

    def __str__(self) -> str:
        return f"scrub pass {self.pk} ({self.scope}, {self.status})"

    @property
    def scope(self) -> str:
        return "every tenant" if self.tenant is None else f"tenant {self.tenant.slug}"

    @property
    def checked(self) -> int:
        return self.verified + self.damaged + self.missing


class ApiTokenQuerySet(TenantScopedQuerySet):
    def active(self) -> Self:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A program's credential for one user in one tenant. Only the SHA-256 of the secret is stored.

    What it may do is the user's *current* role in the tenant, read on every request: a demoted member's
    token is demoted with them on their next request. Removing a member revokes their tokens in the tenant
    for good (``blobs.receivers``), so adding them again later does not bring an old token back.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # The first characters of the secret ("kdr_" and 6 more): enough to recognise a token in a list.
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        db_table = "blob_api_tokens"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
