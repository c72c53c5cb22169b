"""Streaming, decrypting downloads with single byte ranges, validators and safe headers.

Range rules (RFC 9110 section 14), the same for pages and the API:

* ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` (the last ``n`` bytes) are served as 206 with Content-Range;
  ``b`` past the end is clipped to the end; only the chunks covering the range are read and decrypted.
* A range that starts at or past the end, or ``bytes=-0``, is 416 with ``Content-Range: bytes */<size>``.
  A zero-length blob has no satisfiable first-byte range (416); a suffix range there is served as the
  whole (empty) blob, 200, since no 206 can describe zero bytes.
* Several ranges (``bytes=0-1,5-6``) and malformed Range headers are ignored: the whole blob, 200. Serving a
  multipart/byteranges body would let one request multiply the server's decryption work.
* ``If-Range`` with the current ETag or Last-Modified keeps the range; anything else gets the whole blob.
  ``If-None-Match`` / ``If-Modified-Since`` that match answer 304.

Every response is an attachment with a safe filename (RFC 6266, ``filename*`` for non-ASCII), carries
``X-Content-Type-Options: nosniff`` and a sandboxing Content-Security-Policy, and never has an active media
type: HTML, SVG, XML and script types are served as ``application/octet-stream``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.http import content_disposition_header, http_date, parse_http_date_safe
from django.views.decorators.debug import sensitive_variables

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption import keyring
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE
from encryption.format.errors import EnvelopeError
from encryption.providers import ProviderError

from . import damage
from .errors import CorruptBlob, RangeNotSatisfiable, StorageUnavailable, check_readable, from_key_error
from .models import Blob, Damage
from .storage import open_stored

logger = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Media types a browser would run or render as a document: never sent as such.
ACTIVE_TYPES = {
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/ecmascript",
    "application/x-shockwave-flash",
    "text/xsl",
    "application/rdf+xml",
    "multipart/x-mixed-replace",
}


@dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    def header(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class Unsatisfiable(Exception):
    """The Range header names no byte of the blob: 416."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """The single byte range ``header`` asks for, None to serve everything, or raise ``Unsatisfiable``."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None  # several ranges, another unit, or malformed: ignored (RFC 9110 allows it)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable
        if size == 0:
            return None
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        raise Unsatisfiable
    stop = size if not last else min(int(last) + 1, size)
    return ByteRange(start, stop)


def served_content_type(stored: str) -> str:
    """The media type sent: the stored one unless a browser could run or render it as a document."""
    media = stored.split(";", 1)[0].strip().lower()
    if (
        media in ACTIVE_TYPES
        or media.endswith("+xml")
        or (media.startswith("text/") and media != "text/plain")
    ):
        return "application/octet-stream"
    return media or "application/octet-stream"


def safe_filename(name: str) -> str:
    return "".join(ch for ch in name if ch.isprintable()).strip() or "download"


def _base_headers(response: HttpResponseBase, blob: Blob) -> None:
    response["Content-Type"] = served_content_type(blob.content_type)
    response["Content-Disposition"] = (
        content_disposition_header(True, safe_filename(blob.name)) or "attachment"
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = blob.etag
    response["Last-Modified"] = http_date(blob.completed_at.timestamp()) if blob.completed_at else ""
    response["Cache-Control"] = "private, no-cache"


def _last_modified(blob: Blob) -> int:
    return int(blob.completed_at.timestamp()) if blob.completed_at else 0


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


def _not_modified(request: HttpRequest, blob: Blob) -> bool:
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        return _etag_matches(if_none_match, blob.etag)
    since = parse_http_date_safe(request.META.get("HTTP_IF_MODIFIED_SINCE", ""))
    return since is not None and _last_modified(blob) <= since


def _range_applies(request: HttpRequest, blob: Blob) -> bool:
    if_range = request.META.get("HTTP_IF_RANGE")
    if if_range is None:
        return True
    if if_range.strip().startswith(('"', "W/")):
        return if_range.strip() == blob.etag  # strong comparison only
    date = parse_http_date_safe(if_range)
    return date is not None and date == _last_modified(blob)


def blob_response(request: HttpRequest, blob: Blob) -> HttpResponseBase:
    """The GET or HEAD answer for ``blob``: 200, 206, 304 or 416, streaming decrypted bytes for GET.

    HEAD runs every check GET runs before its first byte (key, stored length, header, the chunks that decide
    the answer), so both answer the same status and headers.
    """
    check_readable(blob.tenant)
    size = blob.size
    if _not_modified(request, blob):
        not_modified = HttpResponse(status=304)
        _base_headers(not_modified, blob)
        return not_modified
    byte_range: ByteRange | None = None
    header = request.META.get("HTTP_RANGE")
    if header and _range_applies(request, blob):
        try:
            byte_range = parse_range(header, size)
        except Unsatisfiable:
            raise RangeNotSatisfiable(
                f"The range {header!r} names no byte of this {size}-byte file.",
                headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
            ) from None
    start, stop = (byte_range.start, byte_range.stop) if byte_range else (0, size)
    opened = _open(request, blob, start, stop)
    status = 206 if byte_range else 200
    response: HttpResponseBase
    if request.method == "HEAD":
        opened.close()
        response = HttpResponse(status=status)
    elif opened.verified is not None:
        opened.close()
        if blob.is_damaged and start == 0 and stop == size:
            damage.verified(blob, found_by="download")  # every chunk just authenticated: restored
        response = StreamingHttpResponse(iter((opened.verified,)), status=status)
    else:
        response = StreamingHttpResponse(_stream(request, opened), status=status)
    if request.method != "HEAD":
        record_download(request, blob, (header or "") if byte_range else "")
    _base_headers(response, blob)
    response["Content-Length"] = str(stop - start)
    if byte_range:
        response["Content-Range"] = byte_range.header(size)
    return response


@dataclass
class _Opened:
    """A blob whose key, stored length, header and deciding chunks checked out, ready to send."""

    blob: Blob
    reader: envelope.RandomAccessReader
    source: Any
    start: int
    stop: int
    verified: bytes | None = None  # the whole answer, authenticated before the first byte (small answers)

    def close(self) -> None:
        self.source.close()


def _corrupt(request: HttpRequest | None, blob: Blob, kind: Damage, chunk: int | None = None) -> CorruptBlob:
    damage.report(blob, kind, chunk=chunk, found_by="download", request=request)
    where = f" (chunk {chunk})" if chunk is not None else ""
    return CorruptBlob(
        f"This file is damaged in storage: {Damage(kind).label.lower()}{where}. Kodori does not serve bytes "
        "that fail authentication. Restore the object from a backup or an earlier object version, or "
        "delete the file."
    )


@sensitive_variables("dek")
def _open(request: HttpRequest | None, blob: Blob, start: int, stop: int) -> _Opened:
    """Check everything that decides the answer before a status line is sent; raise a BlobError otherwise.

    * the data key unwraps (503 if the tenant's key cannot be used; 500 ``blob_corrupt`` if it is the wrong
      one);
    * the stored object exists and is exactly the format's length for the blob's size, so bytes appended
      after the final chunk or a truncated final chunk are refused even for a range that does not reach them;
    * the header and the final chunk (which fixes the length every Content-Length and Content-Range states)
      authenticate, and so does the first chunk of the answer and a chunk found damaged before;
    * an answer of at most ``BLOB_VERIFY_BEFORE_SEND_BYTES`` is decrypted whole here, so it is sent complete
      or not at all. A larger one streams; a chunk that fails then aborts the connection (``_stream``).
    """
    try:
        dek = keyring.open_data_key(blob.tenant, blob.pk)
    except (keyring.KeyUnavailable, ProviderError) as exc:
        if isinstance(exc, keyring.DataKeyMismatch):
            raise _corrupt(request, blob, Damage.DATA_KEY) from exc
        raise from_key_error(exc) from exc
    expected = envelope.ciphertext_size(blob.size)
    try:
        opened_object = open_stored(blob.storage_key)
    except Exception as exc:
        logger.warning("blobs: the file store did not answer for blob %s: %s", blob.pk, type(exc).__name__)
        raise StorageUnavailable(
            "The file store is not reachable; try again shortly.", headers={"Retry-After": "30"}
        ) from exc
    if opened_object is None:
        raise _corrupt(request, blob, Damage.MISSING)
    source, stored = opened_object
    if stored != expected:
        source.close()
        raise _corrupt(request, blob, Damage.LENGTH)
    try:
        reader = envelope.RandomAccessReader(
            dek, envelope.blob_context(blob.tenant_id, blob.pk), source, expected
        )
    except (EnvelopeError, ValueError) as exc:
        source.close()
        raise _corrupt(request, blob, Damage.HEADER) from exc
    opened = _Opened(blob, reader, source, start, stop)
    try:
        _check_deciding_chunks(opened)
    except EnvelopeError as exc:
        source.close()
        raise _corrupt(request, blob, Damage.CHUNK, reader.failed_chunk) from exc
    return opened


def _check_deciding_chunks(opened: _Opened) -> None:
    reader, start, stop = opened.reader, opened.start, opened.stop
    reader.authenticate_length()
    if stop - start <= settings.BLOB_VERIFY_BEFORE_SEND_BYTES:
        opened.verified = reader.read_range(start, stop)
        return
    first, last = start // CHUNK_SIZE, (stop - 1) // CHUNK_SIZE
    reader.verify_chunks(first, first)
    known = opened.blob.damaged_chunk
    if known is not None and first <= known <= last:
        reader.verify_chunks(known, known)


def plaintext(request: HttpRequest | None, blob: Blob) -> Iterator[bytes]:
    """Every byte of ``blob``, authenticated, for a whole-file reader (the tenant export).

    The same checks as a download before the first byte (a ``BlobError`` then); a chunk that fails later
    raises ``DownloadAborted`` inside the iteration.
    """
    opened = _open(request, blob, 0, blob.size)
    if opened.verified is not None:
        opened.close()
        if blob.is_damaged:
            damage.verified(blob, found_by="download")  # every chunk just authenticated: restored
        return iter((opened.verified,))
    return _stream(request, opened)


class DownloadAborted(Exception):
    """Raised inside a streaming body: the WSGI server closes the connection before Content-Length bytes."""


def _stream(request: HttpRequest | None, opened: _Opened) -> Iterator[bytes]:
    """Yield the answer in ~1 MiB pieces of authenticated plaintext; abort the connection on damage.

    The status line and Content-Length are gone already, so ending the body early with an exception is the
    one signal every HTTP/1.1 client understands: the server closes the connection short of Content-Length
    and the client reports a failed transfer, never a complete file.
    """
    blob, reader = opened.blob, opened.reader
    try:
        yield from reader.iter_range(opened.start, opened.stop)
    except EnvelopeError:
        damage.report(blob, Damage.CHUNK, chunk=reader.failed_chunk, found_by="download", request=request)
        raise DownloadAborted(f"blob {blob.pk}: chunk {reader.failed_chunk} failed authentication") from None
    finally:
        opened.close()
    if blob.is_damaged and opened.start == 0 and opened.stop == blob.size:
        damage.verified(blob, found_by="download")


def check_servable(request: HttpRequest | None, blob: Blob) -> None:
    """Raise the ``BlobError`` a download of ``blob`` would meet before its first byte (key, stored object
    and its exact length, header, final chunk), reading no more than those; damage found is recorded.

    For a reply that promises several files at once (``blobs.selection``): checked for all of them first,
    so a file known to be unreadable refuses the reply rather than cutting it short."""
    _open(request, blob, 0, 0).close()


def record_download(request: HttpRequest, blob: Blob, byte_range: str = "") -> None:
    """``blob.downloaded`` for one file sent whole (``byte_range`` empty) or in part, when
    ``AUDIT_BLOB_DOWNLOADS`` is on: a single download and each file of an archive of several."""
    if not settings.AUDIT_BLOB_DOWNLOADS:
        return
    with transaction.atomic():
        record(
            blob.tenant,
            EventType.BLOB_DOWNLOADED,
            actor=request.user,
            payload=payloads.blob_downloaded(blob_id=str(blob.pk), name=blob.name, byte_range=byte_range),
            request=request,
        )
