"""Streaming encrypted uploads: plaintext in, ciphertext to storage, and never a plaintext byte at rest.

One ``Upload`` is one blob being written::

    upload = Upload.begin(tenant, user, name, content_type, declared_size)   # data key + "uploading" row
    upload.write(piece) ...                                                  # encrypt, stream to storage
    blob = upload.finish(request=request)                                    # "ready" + audit, one commit
    upload.abort()                                                           # on any error: nothing left

``begin`` creates the data key with ``keyring.new_data_key`` in its own short transaction (never inside a
long one) and the row as ``uploading`` after checking the limits under a lock on the tenant row, so two
concurrent uploads cannot both squeeze under the quota: an uploading row's ``size`` is its reservation.
``abort`` deletes the object, then the row and its data key; if the object cannot be deleted the row stays
``uploading`` (invisible) for ``services.sweep_stale_uploads`` to retry.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption import keyring
from encryption.format import envelope
from encryption.models import DataKey
from encryption.providers import ProviderError
from tenants.models import Tenant
from tenants.units import format_bytes

from .errors import (
    BadRequest,
    BlobError,
    IncompleteUpload,
    LengthRequired,
    QuotaExceeded,
    StorageUnavailable,
    TooLarge,
    check_writable,
    from_key_error,
)
from .models import Blob, BlobStatus, TenantBlobStats, storage_key_for
from .storage import blob_storage, delete_object

logger = logging.getLogger(__name__)

# Plaintext read from a request body per step: large enough that per-call overhead vanishes next to AES-GCM.
READ_SIZE = 1024 * 1024
_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an RFC 9110 token
_MEDIA_TYPE = re.compile(rf"^{_TCHAR}/{_TCHAR}$")
MAX_NAME = 255


def clean_name(raw: str) -> str:
    """A display name: no path, no control characters, at most 255 characters; never used as a storage key."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        raise BadRequest("Give the file a name (for the API: ?name=...).")
    return name[:MAX_NAME]


def clean_content_type(raw: str | None, name: str) -> str:
    """The stored media type: the client's if it is a well-formed type/subtype, else guessed from the name."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    if value and _MEDIA_TYPE.match(value) and value not in ("multipart/form-data",):
        return value[:255]
    guessed, _encoding = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def tenant_usage(tenant: Tenant) -> int:
    """Bytes counted against the quota: finished blobs plus the reservations of uploads in flight (the
    tenant's counters, which PostgreSQL keeps in step with the rows)."""
    return TenantBlobStats.of(tenant.pk).total_bytes


@dataclass(frozen=True)
class Limits:
    """How many plaintext bytes one upload may still send, and which rule says so."""

    max_size: int
    remaining_quota: int

    @property
    def allowance(self) -> int:
        return max(0, min(self.max_size, self.remaining_quota))

    def refuse(self, size: int) -> BlobError:
        if size > self.max_size:
            return TooLarge(
                f"This file is {format_bytes(size)}; files may be at most {format_bytes(self.max_size)}."
            )
        quota = int(settings.BLOB_TENANT_QUOTA)
        return QuotaExceeded(
            f"This file would take the tenant past its storage quota of {format_bytes(quota)} "
            f"({format_bytes(max(0, self.remaining_quota))} left). "
            "Delete files or ask support for more space."
        )

    def check(self, size: int) -> None:
        if size > self.allowance:
            raise self.refuse(size)


def limits_for(tenant: Tenant) -> Limits:
    quota = int(settings.BLOB_TENANT_QUOTA)
    return Limits(max_size=int(settings.BLOB_MAX_SIZE), remaining_quota=quota - tenant_usage(tenant))


class Upload:
    """One blob being written. Not thread-safe: ``begin``, then ``write``, then ``finish`` or ``abort``."""

    def __init__(self, blob: Blob, encryptor: envelope.Encryptor, sink: IO[bytes], limits: Limits) -> None:
        self.blob = blob
        self._encryptor = encryptor
        self._sink: IO[bytes] | None = sink
        self._limits = limits
        self.received = 0
        self._done = False
        self._sealed = False
        # django-storages' S3File takes bytes only; local files take the encryptor's views without a copy.
        self._copy_writes = getattr(sink, "obj", None) is not None

    @classmethod
    @sensitive_variables("dek")
    def begin(
        cls, tenant: Tenant, user: Any, name: str, content_type: str | None, declared_size: int | None = None
    ) -> Upload:
        """Check seal and limits, make the data key and the ``uploading`` row, open the storage object."""
        check_writable(tenant)
        name = clean_name(name)
        content_type = clean_content_type(content_type, name)
        if declared_size is not None:
            limits_for(tenant).check(declared_size)
        blob_id = uuid.uuid4()
        try:
            dek, data_key = keyring.new_data_key(tenant, blob_id, envelope.FORMAT_VERSION)
        except (keyring.KeyUnavailable, ProviderError) as exc:
            raise from_key_error(exc) from exc
        try:
            with transaction.atomic():
                # Under the tenant's lock, the state as it is now: a deletion scheduled (or an erasure begun,
                # which takes this lock) since the check above refuses the reservation; the key goes.
                locked = Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
                check_writable(locked or tenant)
                limits = limits_for(tenant)
                reserved = declared_size or 0
                limits.check(reserved)
                blob = Blob.objects.create(
                    id=blob_id,
                    tenant=tenant,
                    name=name,
                    content_type=content_type,
                    size=reserved,
                    status=BlobStatus.UPLOADING,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                    created_by_email=getattr(user, "email", "") or "",
                    storage_key=storage_key_for(tenant.pk, blob_id),
                    format_version=envelope.FORMAT_VERSION,
                    data_key=data_key,
                )
        except BaseException:
            keyring.delete_data_key(tenant, blob_id)
            raise
        try:
            sink = blob_storage().open(blob.storage_key, "wb")
        except Exception as exc:
            forget_upload(blob)
            raise StorageUnavailable("The file store is not reachable; try again shortly.") from exc
        encryptor = envelope.Encryptor(dek, envelope.blob_context(tenant.pk, blob_id))
        upload = cls(blob, encryptor, sink, limits)
        upload._put(encryptor.header())
        return upload

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and stream the completed chunks to storage; refuse past the size limits."""
        self.received += len(data)
        if self.received > self._limits.allowance:
            raise self._limits.refuse(self.received)
        out = self._encryptor.update(data)
        if out:
            self._put(out)

    def write_stream(self, source: envelope.Readable) -> None:
        """Encrypt everything ``source`` yields, in reused buffers, and seal the final chunk.

        The fast path for raw bodies: no per-piece allocation (``Encryptor.encrypt_stream``). ``source``
        enforces the length; ``finish`` then only closes the object and flips the row.
        """
        self._encryptor.encrypt_stream(source, _CipherSink(self))
        self.received = self._encryptor.plaintext_size
        self._sealed = True
        if self.received > self._limits.allowance:  # the source's length was checked; belt and braces
            raise self._limits.refuse(self.received)

    def _put(self, data: bytes | memoryview) -> None:
        assert self._sink is not None
        try:
            if self._copy_writes and isinstance(data, memoryview):
                data = bytes(data)
            self._sink.write(data)
        except Exception as exc:
            raise StorageUnavailable("Writing to the file store failed; nothing was stored.") from exc

    def finish(self, *, request: HttpRequest | None = None, expected_size: int | None = None) -> Blob:
        """Seal the last chunk, close the object, and make the blob visible (with its audit event)."""
        if expected_size is not None and self.received != expected_size:
            raise IncompleteUpload(
                f"The upload ended after {self.received} of {expected_size} bytes; nothing was stored."
            )
        if not self._sealed:
            self._put(self._encryptor.finalize())
        sink, self._sink = self._sink, None
        assert sink is not None
        try:
            sink.close()
        except Exception as exc:
            raise StorageUnavailable("The file store did not accept the file; nothing was stored.") from exc
        blob = self.blob
        with transaction.atomic():
            updated = Blob.objects.filter(pk=blob.pk, status=BlobStatus.UPLOADING).update(
                status=BlobStatus.READY, size=self.received, completed_at=timezone.now()
            )
            if updated != 1:
                raise IncompleteUpload("This upload was cancelled before it finished; nothing was stored.")
            blob.refresh_from_db()
            key_version = DataKey.objects.filter(pk=blob.data_key_id).values_list("tkv__version", flat=True)
            record(
                blob.tenant,
                EventType.BLOB_UPLOADED,
                actor=blob.created_by,
                payload=payloads.blob_uploaded(
                    blob_id=str(blob.pk), name=blob.name, size=blob.size, key_version=key_version.first()
                ),
                request=request,
            )
        self._done = True
        return blob

    def abort(self) -> None:
        """Throw the upload away: object first, then row and data key. Safe to call more than once."""
        if self._done:
            return
        self._done = True
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception:  # the object may be half-written or never created; delete below decides
                logger.warning("blobs: closing aborted upload %s failed", self.blob.pk, exc_info=True)
        forget_upload(self.blob)


class _CipherSink:
    """``Writable`` for ``encrypt_stream``: views into its reused buffers go straight to the object."""

    def __init__(self, upload: Upload) -> None:
        self._upload = upload

    def write(self, data: memoryview, /) -> int:
        self._upload._put(data)
        return len(data)


class _BodySource:
    """The request body as a ``Readable`` of at most ``length`` bytes; a broken connection is incomplete."""

    def __init__(self, request: HttpRequest, length: int) -> None:
        self._request = request
        self.remaining = length

    def read(self, size: int = -1, /) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if size is None or size < 0 else min(size, self.remaining)
        try:
            data = self._request.read(want)
        except OSError as exc:
            raise IncompleteUpload("The connection broke during the upload; nothing was stored.") from exc
        self.remaining -= len(data)
        return data


def forget_upload(blob: Blob) -> bool:
    """Delete an unfinished blob's object, then its row and data key; say whether the row went.

    The clean-up of both an aborted upload and ``services.sweep_stale_uploads``. When the object cannot be
    deleted, the row stays ``uploading`` (invisible) for the sweeper to retry; a row that is no longer
    ``uploading`` (finished, or removed meanwhile) is left alone.
    """
    try:
        delete_object(blob.storage_key, unfinished=True)
    except Exception:
        logger.warning("blobs: object of unfinished upload %s left for the sweeper", blob.pk, exc_info=True)
        return False
    with transaction.atomic():
        deleted, _ = Blob.objects.filter(pk=blob.pk, status=BlobStatus.UPLOADING).delete()
        if deleted:
            keyring.delete_data_key(blob.tenant, blob.pk)
    return bool(deleted)


def declared_length(request: HttpRequest) -> int:
    """The request's Content-Length, required for raw-body uploads (411 without it)."""
    raw = request.META.get("CONTENT_LENGTH", "")
    if not raw or request.META.get("HTTP_TRANSFER_ENCODING"):
        raise LengthRequired("Send the file with a Content-Length header (chunked bodies are not accepted).")
    try:
        length = int(raw)
    except ValueError:
        raise BadRequest("Content-Length is not a number.") from None
    if length < 0:
        raise BadRequest("Content-Length is not a number.")
    return length


def receive_raw(request: HttpRequest, tenant: Tenant, user: Any, name: str, content_type: str | None) -> Blob:
    """Stream a raw request body into a new blob: ~1 MiB at a time through the encryptor's reused buffers."""
    length = declared_length(request)
    upload = Upload.begin(tenant, user, name, content_type, declared_size=length)
    try:
        upload.write_stream(_BodySource(request, length))
        return upload.finish(request=request, expected_size=length)
    except BaseException:
        upload.abort()
        raise
