"""Blob bytes through Django's storage API: the ``STORAGES["blobs"]`` alias.

Two backends are supported and tested: ``BlobFileSystemStorage`` (the default, under ``MEDIA_ROOT``) and
django-storages' ``S3Storage`` for any S3-compatible service. Ciphertext is written with
``storage.open(key, "wb")`` in pieces, so neither backend ever holds a whole blob, and no plaintext
ever reaches either (encryption happens before the first write).

Reads need random access for HTTP Range. A filesystem file seeks natively; an ``S3File`` opened for reading
would download the whole object into a temporary file on first read, so ``open_ranged`` reads S3 objects with
ranged GETs instead (``S3RangeReader``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

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


def open_ranged(key: str, size: int) -> IO[bytes] | S3RangeReader:
    """A seekable reader of the object at ``key`` (``size`` bytes), fetching only what is read."""
    handle = blob_storage().open(key, "rb")
    obj = getattr(handle, "obj", None)
    if obj is not None and hasattr(obj, "get"):
        # django-storages' S3File: keep its object handle, never let it download the whole object.
        return S3RangeReader(obj, size)
    return handle


def object_length(key: str) -> int | None:
    """The stored length of ``key``'s object, or None if there is no such object.

    Any other failure (the store is down, access denied) propagates: it says nothing about the object.
    """
    try:
        return blob_storage().size(key)
    except FileNotFoundError:
        return None
    except Exception as exc:
        response = getattr(exc, "response", None)
        code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def delete_object(key: str) -> None:
    """Remove ``key``'s object; an object that is already gone is not an error."""
    blob_storage().delete(key)
