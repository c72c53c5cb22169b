"""Blob bytes through Django's storage API: the ``STORAGES["blobs"]`` alias.

Two backends are supported and tested: ``BlobFileSystemStorage`` (the default, under ``MEDIA_ROOT``) and
django-storages' ``S3Storage`` for any S3-compatible service. Ciphertext is written with
``storage.open(key, "wb")`` in pieces, so neither backend ever holds a whole blob, and no plaintext
ever reaches either (encryption happens before the first write).

Reads need random access for HTTP Range. A filesystem file seeks natively; an ``S3File`` opened for reading
would download the whole object into a temporary file on first read, so ``open_stored`` reads S3 objects with
ranged GETs instead (``S3RangeReader``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from storages.utils import clean_name

# One ranged GET fetches at most this much: the random-access reader asks for ~1 MiB at a time, in order.
S3_WINDOW = 8 * 1024 * 1024


def blob_storage() -> Storage:
    return storages["blobs"]


class BlobFileSystemStorage(FileSystemStorage):
    """Local-disk blob storage: ``open(key, "wb")`` creates parent directories and a new private file.

    Django's ``FileSystemStorage.open`` in write mode neither creates directories nor refuses to overwrite;
    a blob object is written exactly once, by the upload that owns its (unique) key.
    """

    def _open(self, name: str, mode: str = "rb") -> File[Any]:
        if not any(flag in mode for flag in "wax+"):
            return super()._open(name, mode)  # type: ignore[misc]  # missing from django-stubs
        path = Path(self.path(name))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)
        return File(os.fdopen(fd, "wb"), name)


class S3RangeReader:
    """A read-only, seekable view of an S3 object that fetches only the byte windows that are read."""

    def __init__(self, obj: Any, size: int) -> None:
        self._obj = obj
        self._size = size
        self._pos = 0
        self._body: Any = None
        self._body_pos = 0
        self._body_end = 0

    def seek(self, offset: int, whence: int = 0, /) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        size = min(size, self._size - self._pos)
        if size <= 0:
            return b""
        if self._body is None or self._body_pos != self._pos or self._body_pos >= self._body_end:
            self._open_window(size)
        data: bytes = self._body.read(min(size, self._body_end - self._body_pos))
        self._pos += len(data)
        self._body_pos += len(data)
        return data

    def _open_window(self, size: int) -> None:
        self._close_body()
        end = min(self._size, self._pos + max(size, S3_WINDOW))
        self._body = self._obj.get(Range=f"bytes={self._pos}-{end - 1}")["Body"]
        self._body_pos, self._body_end = self._pos, end

    def _close_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._close_body()


Reader = IO[bytes] | S3RangeReader


def open_stored(key: str) -> tuple[Reader, int] | None:
    """A seekable reader of the object at ``key`` and its stored length, or None if there is no such object.

    Both come from opening the object once: a file is opened and ``fstat``-ed; an S3 object's ``HEAD`` (which
    django-storages sends on open) gives its length, and ``S3RangeReader`` then fetches only what is read.
    Any other failure (the store is down, access denied) propagates: it says nothing about the object.
    """
    try:
        handle = blob_storage().open(key, "rb")
    except FileNotFoundError:
        return None
    obj = getattr(handle, "obj", None)
    if obj is not None and hasattr(obj, "get"):
        # django-storages' S3File: keep its object handle, never let it download the whole object.
        length = int(obj.content_length)
        return S3RangeReader(obj, length), length
    return handle, os.fstat(handle.fileno()).st_size


def delete_object(key: str, *, unfinished: bool = False) -> None:
    """Remove ``key``'s object; an object that is already gone is not an error.

    ``unfinished``: the object of an upload that never finished. On S3 such an upload, cut off mid-body,
    leaves no object but the parts of a multipart upload, which the bucket keeps (and bills) until aborted:
    abort every one for exactly this key too (only then: it costs a listing call finished blobs do not need).
    """
    storage = blob_storage()
    storage.delete(key)
    bucket = getattr(storage, "bucket", None)
    if unfinished and bucket is not None:
        name = storage._normalize_name(clean_name(key))  # type: ignore[attr-defined]  # with the prefix
        for upload in bucket.multipart_uploads.filter(Prefix=name):
            if upload.object_key == name:
                upload.abort()
