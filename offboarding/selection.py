"""Download several files of ``/blobs`` as one zip archive, streamed in constant memory.

It lives here, not in ``blobs``, because the streaming archive writer (``offboarding.archive``) does and the
apps import only downwards (docs/architecture.md); ``blobs.selection`` decides which files may go in.

``POST /blobs/archive`` with ``ids`` (one per selected file) and the CSRF token. POST rather than a GET with
the ids in its query: a selection of up to 100 ids makes a long URL that would be kept in history, proxies'
and server logs, and the reply records audit events, which a GET must not (prefetching would fire them).

The whole selection is checked before the first byte (``blobs.selection.choose``): another tenant's id, a file
deleted meanwhile or one known to be damaged refuses the reply with a page that says so, rather than leaving
the file out or stopping the archive half-way. Each file is then read, authenticated and written in turn,
about 1 MiB at a time, so memory does not grow with the files' sizes; each is audited when it starts as a
download of it would be (``blob.downloaded`` when ``AUDIT_BLOB_DOWNLOADS`` is on). Damage found later in a
large file (a chunk that fails mid-way) aborts the connection, as a single download does: a truncated zip
has no central directory, so no reader takes it for complete. Member names are the files' names made safe
to extract (``safe_member_name``): no paths, no control or bidirectional characters, duplicates numbered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from blobs import downloads, selection
from blobs.errors import BlobError
from blobs.models import Blob
from blobs.views import error_page
from tenants.access import TenantRequest, tenant_required

from .archive import ArchiveWriter, archive_format, safe_member_name

_FORMAT = archive_format("zip")


def archive_chunks(request: HttpRequest, blobs: list[Blob]) -> Iterator[bytes]:
    """The zip of ``blobs``' plaintext, one member after the other, each audited as it begins."""
    writer = ArchiveWriter(_FORMAT.name)
    taken: set[str] = set()
    for blob in blobs:
        name = safe_member_name(blob.name, taken)
        downloads.record_download(request, blob)
        when = blob.completed_at or blob.created_at
        yield from writer.member(name, blob.size, when, downloads.plaintext(request, blob))
    yield from writer.finish()


def archive_name(tenant_slug: str) -> str:
    return f"{tenant_slug}-files-{timezone.now():%Y%m%d-%H%M%S}{_FORMAT.extension}"


@require_POST
@tenant_required()
def download_selected(request: TenantRequest) -> HttpResponse:
    try:
        blobs = selection.choose(request, request.tenant, request.POST.getlist("ids"))
    except BlobError as exc:
        return error_page(request, exc)
    response = StreamingHttpResponse(archive_chunks(request, blobs), content_type=_FORMAT.content_type)
    response["Content-Disposition"] = (
        content_disposition_header(True, archive_name(request.tenant.slug)) or "attachment"
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["X-Archive-Files"] = str(len(blobs))
    response["Cache-Control"] = "private, no-store"
    return cast(HttpResponse, response)  # tenant_required's typing names HttpResponse for every view
