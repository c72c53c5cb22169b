"""Multipart uploads that are encrypted as they arrive.

Django's default upload handlers keep small files in memory and write large ones to a plaintext temporary
file. ``EncryptingUploadHandler`` replaces them: each file part starts an ``Upload`` and every chunk the
parser hands over is encrypted and streamed to storage at once. ``parse_multipart`` runs Django's own
``MultiPartParser`` with only this handler over a counting reader, so a body that ends before its
Content-Length is noticed (the parser alone would treat the cut-off part as complete).
"""

from __future__ import annotations

import io
from typing import IO, Any, cast

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, QueryDict
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils.datastructures import MultiValueDict

from tenants.models import Tenant

from .errors import BadRequest, IncompleteUpload
from .uploads import READ_SIZE, Upload, declared_length, limits_for

# Boundaries and part headers around the file: generous, so a file within the limits is never refused early.
MULTIPART_SLACK = 64 * 1024


class EncryptingUploadHandler(FileUploadHandler):
    """Encrypts each uploaded file while it streams in; never holds or writes plaintext."""

    chunk_size = READ_SIZE

    def __init__(
        self, tenant: Tenant, user: Any, *, max_files: int | None = None, name: str | None = None
    ) -> None:
        super().__init__(None)
        self.tenant = tenant
        self.user = user
        self.max_files = max_files
        self.name_override = name
        self.uploads: list[Upload] = []
        self._current: Upload | None = None

    def new_file(self, field_name: str, file_name: str, content_type: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, content_type, *args, **kwargs)
        if self.max_files is not None and len(self.uploads) >= self.max_files:
            raise BadRequest("Send one file per request.")
        self._current = Upload.begin(self.tenant, self.user, self.name_override or file_name, content_type)
        self.uploads.append(self._current)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self._current is not None
        self._current.write(raw_data)

    def file_complete(self, file_size: int) -> UploadedFile:
        # A placeholder for request.FILES: the bytes are already encrypted in storage, never kept here.
        assert self._current is not None
        blob = self._current.blob
        self._current = None
        return UploadedFile(io.BytesIO(), name=blob.name, content_type=blob.content_type, size=file_size)

    def abort_all(self) -> None:
        for upload in self.uploads:
            upload.abort()


class _CountingReader:
    """Counts what the parser read, to tell a complete body from one that stopped early."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._request.read(size)
        except OSError as exc:
            raise IncompleteUpload("The connection broke during the upload; nothing was stored.") from exc
        self.count += len(data)
        return data


def parse_multipart(
    request: HttpRequest, handler: EncryptingUploadHandler
) -> tuple[QueryDict, MultiValueDict[str, UploadedFile]]:
    """Parse a multipart body with ``handler`` only; on any error the handler's uploads are aborted."""
    length = declared_length(request)
    allowance = limits_for(handler.tenant).allowance
    if length > allowance + int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0) + MULTIPART_SLACK:
        raise limits_for(handler.tenant).refuse(length)
    reader = _CountingReader(request)
    try:
        parser = MultiPartParser(request.META, cast(IO[bytes], reader), [handler], request.encoding)
        post, files = parser.parse()
        if reader.count < length:
            raise IncompleteUpload(
                f"The upload ended after {reader.count} of {length} bytes; nothing was stored."
            )
    except MultiPartParserError as exc:
        handler.abort_all()
        raise BadRequest(f"The multipart body could not be read: {exc}") from exc
    except BaseException:
        handler.abort_all()
        raise
    return post, files
