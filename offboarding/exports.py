"""Exporting every file of a tenant as streamed archives, with a manifest and the audit evidence bundle.

``create_export`` fixes what an export holds: the tenant's finished files at that moment, in upload order,
cut into parts of at most ``EXPORT_PART_BYTES`` and ``EXPORT_PART_FILES``. Each part is one archive, zip or
tar, streamed in constant memory (``offboarding.archive``)::

    files/<name>            every file of the part, byte for byte what was uploaded (authenticated)
    manifest.jsonl          a header line, then one line per file: path, name, size, SHA-256 of the bytes
                            just sent, upload time and uploader, blob id; a last line counting what was sent
    audit-evidence.zip      part 1 only: the tenant's whole audit evidence bundle (/audit's export), to
                            check offline with the verify_audit_bundle.py inside it
    README.txt

A download that breaks is resumed by downloading that part again: parts are fixed when the export is made.
A file deleted since is left out (its row is gone: the last manifest line counts it). A file found damaged
before its first byte is listed as ``skipped`` with the reason; one that fails later, or a file store or key
that fails mid-way, aborts the download (bytes already sent cannot be taken back), and the part is
interrupted: downloaded again, a file now known to be damaged is skipped. Every download is audited
(``tenant.exported``), and its progress (files and file bytes sent) is written to the part row as it
streams, for the page and the API.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import IO, Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone

from audit import export, payloads
from audit.encoding import format_time
from audit.models import EventType
from audit.services import record
from blobs.downloads import DownloadAborted, plaintext
from blobs.errors import BlobError, CorruptBlob, KeyNotUsable, check_readable
from blobs.models import Blob
from encryption import keyring
from encryption.models import DataKey, TenantKeyVersion
from encryption.providers import ProviderError
from tenants.models import Tenant

from .archive import ArchiveWriter, archive_format, safe_member_name
from .models import Export, ExportFormat, ExportPart, PartStatus

logger = logging.getLogger(__name__)

PROGRESS_EVERY_BYTES = 8 * 1024 * 1024
PROGRESS_EVERY_SECONDS = 1.0
SPOOL_IN_MEMORY = 16 * 1024 * 1024
# SHA-256 runs at about 1.8 GB/s on one core here, slower than reading and decrypting the same bytes: a chunk
# at least this big is hashed on a helper thread (hashlib lets go of the GIL for it) while this thread reads
# and decrypts the next one and computes its CRC-32 (zip parts only: ~1.4x faster; a tar part gained ~5% for
# 30% more CPU, so it hashes inline). Measured by bench/export.py (docs/benchmarks.md).
HASH_ON_THREAD_FROM = 256 * 1024


def _ready(tenant: Tenant, snapshot_at: datetime) -> Any:
    return Blob.objects.visible_in(tenant).filter(completed_at__lte=snapshot_at)


def create_export(tenant: Tenant, fmt: str, *, actor: Any) -> Export:
    """An export of every finished file ``tenant`` has now, in parts. Refused once the erasure has begun."""
    check_readable(tenant)
    fmt = ExportFormat(fmt)
    now = timezone.now()
    max_bytes, max_files = int(settings.EXPORT_PART_BYTES), int(settings.EXPORT_PART_FILES)
    with transaction.atomic():
        export_row = Export.objects.create(
            tenant=tenant,
            format=fmt,
            snapshot_at=now,
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
            created_by_email=getattr(actor, "email", "") or "",
        )
        parts: list[ExportPart] = []
        current = ExportPart(export=export_row, number=1)
        previous: tuple[datetime, Any] | None = None
        rows = _ready(tenant, now).order_by("created_at", "id").values_list("created_at", "id", "size")
        for created, blob_id, size in rows.iterator(chunk_size=5000):
            full = current.files >= max_files or (current.files and current.bytes + size > max_bytes)
            if full:
                parts.append(current)
                current = ExportPart(export=export_row, number=current.number + 1)
                current.after_created, current.after_id = previous if previous else (None, None)
            current.files += 1
            current.bytes += size
            current.last_created, current.last_id = created, blob_id
            previous = (created, blob_id)
        parts.append(current)
        ExportPart.objects.bulk_create(parts)
        export_row.files = sum(p.files for p in parts)
        export_row.bytes = sum(p.bytes for p in parts)
        export_row.save(update_fields=["files", "bytes"])
    return export_row


def part_blobs(part: ExportPart) -> Any:
    export_row = part.export
    blobs = _ready(export_row.tenant, export_row.snapshot_at).select_related("tenant")
    if part.after_created is not None:
        blobs = blobs.filter(
            Q(created_at__gt=part.after_created) | Q(created_at=part.after_created, id__gt=part.after_id)
        )
    if part.last_created is None:
        return blobs.none()
    blobs = blobs.filter(
        Q(created_at__lt=part.last_created) | Q(created_at=part.last_created, id__lte=part.last_id)
    )
    return blobs.order_by("created_at", "id")


def check_keys(part: ExportPart) -> None:
    """Before the first byte: every key version the part's files need opens, or a 503 naming the key."""
    blob_ids = part_blobs(part).values("id")
    tkv_ids = DataKey.objects.filter(blob_id__in=blob_ids).values_list("tkv_id", flat=True).distinct()
    for tkv in TenantKeyVersion.objects.filter(pk__in=list(tkv_ids)).select_related("kek"):
        try:
            keyring.tkv_key(tkv)
        except (keyring.KeyUnavailable, ProviderError) as exc:
            raise KeyNotUsable(
                f"This export needs {tkv.kek.label}, which Kodori cannot use now: {exc} Restore it "
                "(re-enable it on the Encryption page, or Kodori's access in your KMS) and download the part "
                "again. Nothing was sent.",
                headers={"Retry-After": "60"},
            ) from exc


class _Progress:
    """Writes the part's progress now and then: every few megabytes or every second, whichever is later.

    Only the part's latest download (``download``, its number) writes the row: an older one still streaming,
    say a stalled connection that fails later, neither overwrites the newer one's progress nor turns a
    finished part into an interrupted one.
    """

    def __init__(self, part: ExportPart, download: int) -> None:
        self.part = part
        self.download = download
        self.files = 0
        self.bytes = 0
        self._saved_bytes = 0
        self._saved_at = time.monotonic()

    def add(self, n: int, *, file_done: bool = False) -> None:
        self.bytes += n
        self.files += int(file_done)
        now = time.monotonic()
        if (
            self.bytes - self._saved_bytes >= PROGRESS_EVERY_BYTES
            and now - self._saved_at >= PROGRESS_EVERY_SECONDS
        ):
            self.save()

    def save(self, **extra: Any) -> None:
        ExportPart.objects.filter(pk=self.part.pk, downloads=self.download).update(
            bytes_sent=self.bytes, files_sent=self.files, progress_at=timezone.now(), **extra
        )
        self._saved_bytes, self._saved_at = self.bytes, time.monotonic()


def begin_download(request: HttpRequest, part: ExportPart) -> Iterator[bytes]:
    """Everything that can refuse before the status line, then the audited, streaming body."""
    export_row = part.export
    tenant = Tenant.objects.get(pk=export_row.tenant_id)
    check_readable(tenant)  # sealed (names the cause) or being erased
    check_keys(part)
    parts = export_row.parts.count()
    with transaction.atomic():
        record(
            tenant,
            EventType.TENANT_EXPORTED,
            actor=request.user,
            request=request,
            payload=payloads.tenant_exported(
                export_id=str(export_row.pk),
                export_format=export_row.format,
                part=part.number,
                parts=parts,
                files=part.files,
                size=part.bytes,
            ),
        )
        ExportPart.objects.filter(pk=part.pk).update(
            status=PartStatus.STREAMING,
            started_at=timezone.now(),
            progress_at=timezone.now(),
            finished_at=None,
            bytes_sent=0,
            files_sent=0,
            error="",
            downloads=F("downloads") + 1,
        )
        download = ExportPart.objects.values_list("downloads", flat=True).get(pk=part.pk)  # row locked
    return stream_part(request, part, parts, tenant, download)


def stream_part(
    request: HttpRequest | None, part: ExportPart, parts: int, tenant: Tenant, download: int
) -> Iterator[bytes]:
    export_row = part.export
    writer = ArchiveWriter(export_row.format)
    progress = _Progress(part, download)
    # zip only: there the helper overlaps the SHA-256 with the CRC-32 (1.4x); tar gains ~5% for 30% more CPU.
    hasher = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-sha256")  # a thread from first use
        if export_row.format == ExportFormat.ZIP
        else None
    )
    current: Blob | None = None
    ok = False
    try:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as manifest:
            header = _manifest_header(export_row, part, parts, tenant)
            manifest.write(orjson.dumps(header) + b"\n")
            taken: set[str] = set()
            found = skipped = 0
            for blob in part_blobs(part).iterator(chunk_size=500):
                current, found = blob, found + 1
                digest = hashlib.sha256()
                try:
                    chunks = plaintext(request, blob)
                except CorruptBlob as exc:
                    # Damage found before the first byte: listed, and the rest of the part goes on. Any
                    # other refusal (key, file store) is passing: the part is interrupted, to be retried.
                    manifest.write(orjson.dumps(_skipped(blob, exc.message)) + b"\n")
                    skipped += 1
                    continue
                path = "files/" + safe_member_name(blob.name, taken)
                uploaded = blob.completed_at or blob.created_at  # the manifest's uploaded_at
                counted = _counted(chunks, digest, progress, hasher)
                yield from writer.member(path, blob.size, uploaded, counted)
                progress.add(0, file_done=True)
                manifest.write(orjson.dumps(_entry(blob, path, digest.hexdigest())) + b"\n")
            current = None
            end = _end(progress, skipped, left_out=max(0, part.files - found))
            manifest.write(orjson.dumps(end) + b"\n")
            yield from _spooled_member(writer, "manifest.jsonl", manifest, export_row.snapshot_at)
        readme = render_to_string(
            "offboarding/export_README.txt", {"export": export_row, "part": part, "parts": parts}
        )
        yield from writer.member(
            "README.txt", len(readme.encode()), export_row.snapshot_at, [readme.encode()]
        )
        if part.number == 1:
            yield from _evidence_member(writer, tenant, request, export_row.snapshot_at)
        yield from writer.finish()
        ok = True
    except BaseException as exc:
        progress.save(
            status=PartStatus.INTERRUPTED, finished_at=timezone.now(), error=_interruption(exc, current)
        )
        raise
    finally:
        if hasher is not None:
            hasher.shutdown()
        if ok:
            progress.save(status=PartStatus.COMPLETE, finished_at=timezone.now())


def _interruption(exc: BaseException, blob: Blob | None) -> str:
    """Why the part stopped, for the page and the API: the file and the cause when a file failed."""
    again = "Download the part again."
    if isinstance(exc, GeneratorExit):
        return f"The download stopped before the end: the connection closed. {again}"
    name = repr(blob.name) if blob is not None else "a file"
    if isinstance(exc, DownloadAborted):
        return (
            f"The file {name} is damaged in storage: a chunk failed authentication after its first bytes "
            f"were sent, so the download was cut short. {again} The file is then listed as skipped."
        )
    if isinstance(exc, BlobError):
        return f"The file {name} could not be read: {exc.message} {again}"
    logger.exception("offboarding: an export part failed at blob %s", blob.pk if blob is not None else "-")
    return f"The download failed while sending {name}. {again}"


def _counted(
    chunks: Iterator[bytes], digest: Any, progress: _Progress, hasher: ThreadPoolExecutor | None
) -> Iterator[bytes]:
    """The chunks, passed on as they come, every byte hashed in order and counted.

    A large chunk is hashed on ``hasher`` while the next one is read; only ``bytes`` go there, which nobody
    can change while the helper reads them. The digest is complete once the iteration ends.
    """
    pending: Future[None] | None = None
    try:
        for chunk in chunks:
            if pending is not None:
                pending.result()
                pending = None
            if hasher is not None and type(chunk) is bytes and len(chunk) >= HASH_ON_THREAD_FROM:
                pending = hasher.submit(digest.update, chunk)
            else:
                digest.update(chunk)
            progress.add(len(chunk))
            yield chunk
    finally:
        if pending is not None:
            pending.result()


def _spooled_member(writer: ArchiveWriter, name: str, spool: IO[bytes], mtime: datetime) -> Iterator[bytes]:
    size = spool.tell()
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        while piece := spool.read(1024 * 1024):
            yield piece

    yield from writer.member(name, size, mtime, chunks())


def _evidence_member(
    writer: ArchiveWriter, tenant: Tenant, request: HttpRequest | None, mtime: datetime
) -> Iterator[bytes]:
    """The tenant's evidence bundle (whole chain, head signed), as /audit exports it, spooled first: an
    archive member's size comes before its bytes."""
    exported_by = getattr(getattr(request, "user", None), "email", "") or "Kodori"
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        for piece in export.whole_chain_bundle(tenant, exported_by=exported_by):
            spool.write(piece)
        yield from _spooled_member(writer, "audit-evidence.zip", spool, mtime)


def _manifest_header(export_row: Export, part: ExportPart, parts: int, tenant: Tenant) -> dict[str, Any]:
    return {
        "record": "header",
        "format": "kodori-export-manifest",
        "version": 1,
        "tenant": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name},
        "export_id": str(export_row.pk),
        "archive_format": export_row.format,
        "snapshot_at": format_time(export_row.snapshot_at),
        "part": part.number,
        "parts": parts,
        "files_in_part": part.files,
        "files_in_export": export_row.files,
        "bytes_in_export": export_row.bytes,
    }


def _entry(blob: Blob, path: str, sha256: str) -> dict[str, Any]:
    return {
        "record": "file",
        "path": path,
        "name": blob.name,
        "size": blob.size,
        "sha256": sha256,
        "content_type": blob.content_type,
        "uploaded_at": format_time(blob.completed_at or blob.created_at),
        "uploaded_by": blob.created_by_email,
        "blob_id": str(blob.pk),
    }


def _skipped(blob: Blob, why: str) -> dict[str, Any]:
    return {"record": "skipped", "name": blob.name, "size": blob.size, "blob_id": str(blob.pk), "reason": why}


def _end(progress: _Progress, skipped: int, *, left_out: int) -> dict[str, Any]:
    """The manifest's last line: what this part holds, and what it was made to hold but no longer could."""
    return {
        "record": "end",
        "files": progress.files,
        "bytes": progress.bytes,
        "skipped": skipped,
        "deleted_since_export": left_out,
    }


def content_disposition(export_row: Export, part: ExportPart) -> str:
    fmt = archive_format(export_row.format)
    stamp = export_row.snapshot_at.strftime("%Y%m%d-%H%M%S")
    name = f"kodori-export-{export_row.tenant.slug}-{stamp}-part{part.number}{fmt.extension}"
    return f'attachment; filename="{name}"'


def status_json(export_row: Export) -> dict[str, Any]:
    parts = list(export_row.parts.all())
    return {
        "id": str(export_row.pk),
        "format": export_row.format,
        "created_at": format_time(export_row.created_at),
        "snapshot_at": format_time(export_row.snapshot_at),
        "files": export_row.files,
        "bytes": export_row.bytes,
        "parts": [p.describe() for p in parts],
        "complete": all(p.status == PartStatus.COMPLETE for p in parts),
    }
