"""Helpers for the blobs tests: blobs and tokens made by the real services, HTTP to a live server, and the
stored objects behind Kodori's back."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from blobs import services
from blobs.models import Blob
from blobs.uploads import Upload
from tenants.models import Membership, Tenant


def make_blob(
    user: Any, data: bytes = b"hello, world\n", name: str = "hello.txt", tenant: Tenant | None = None
) -> Blob:
    """A ready blob uploaded by ``user`` (in their first tenant unless ``tenant`` is given)."""
    if tenant is None:
        tenant = Membership.objects.filter(user=user).select_related("tenant").first().tenant  # type: ignore[union-attr]
    upload = Upload.begin(tenant, user, name, "text/plain", declared_size=len(data))
    try:
        for start in range(0, len(data), 1 << 20):
            upload.write(data[start : start + (1 << 20)])
        return upload.finish(expected_size=len(data))
    except BaseException:
        upload.abort()
        raise


def make_token(user: Any, tenant: Tenant | None = None) -> str:
    if tenant is None:
        tenant = Membership.objects.filter(user=user).select_related("tenant").first().tenant  # type: ignore[union-attr]
    _token, secret = services.create_token(tenant, user, "tests")
    return secret


def bearer(secret: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def pattern(size: int, seed: int = 7) -> bytes:
    """Deterministic, non-repeating-looking bytes (fast to make, good at catching off-by-one errors)."""
    block = bytes((i * 131 + seed * 17 + (i >> 8) * 7) & 0xFF for i in range(65536))
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


class LiveApi:
    """A tiny HTTP client for the live server: real sockets, streamed bodies, no test client shortcuts."""

    def __init__(self, base_url: str, secret: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.secret = secret

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=120, blocksize=1 << 20)

    def upload(
        self,
        name: str,
        body: Iterable[bytes] | bytes,
        size: int,
        content_type: str = "application/octet-stream",
    ) -> tuple[int, dict[str, Any]]:
        import json

        conn = self.connection()
        try:
            conn.putrequest("POST", f"/api/v1/blobs?name={quote(name)}")
            conn.putheader("Authorization", f"Bearer {self.secret}")
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            for piece in [body] if isinstance(body, bytes) else body:
                conn.send(piece)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def download(
        self, blob_id: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], Iterator[bytes]]:
        conn = self.connection()
        conn.request(
            method,
            f"/api/v1/blobs/{blob_id}",
            headers={"Authorization": f"Bearer {self.secret}", **(headers or {})},
        )
        response = conn.getresponse()

        def chunks() -> Iterator[bytes]:
            try:
                while piece := response.read(1 << 20):
                    yield piece
            finally:
                conn.close()

        return response.status, {k.lower(): v for k, v in response.getheaders()}, chunks()


def random_stream(size: int, piece: int = 1 << 20, seed: bytes = b"") -> Iterator[bytes]:
    """``size`` bytes of fast pseudo-random data, generated on the fly (nothing on disk, little in memory)."""
    block = os.urandom(piece) if not seed else (seed * (piece // len(seed) + 1))[:piece]
    counter = 0
    sent = 0
    while sent < size:
        take = min(piece, size - sent)
        # Vary each piece so that a reordering on the way would show in the hash.
        head = counter.to_bytes(8, "big")
        chunk = (head + block[8:take]) if take > 8 else block[:take]
        yield chunk
        sent += take
        counter += 1


# --- where a blob's bytes are: the filesystem or S3 ---------------------------------------------------------


class Store(Protocol):
    """Read, replace and remove a blob's stored object behind Kodori's back, as damage in storage would."""

    def read(self, blob: Blob) -> bytes: ...

    def write(self, blob: Blob, data: bytes) -> None: ...

    def remove(self, blob: Blob) -> None: ...


class FileStore:
    """The objects of ``BlobFileSystemStorage`` under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, blob: Blob) -> bytes:
        return (self.root / blob.storage_key).read_bytes()

    def write(self, blob: Blob, data: bytes) -> None:
        (self.root / blob.storage_key).write_bytes(data)

    def remove(self, blob: Blob) -> None:
        (self.root / blob.storage_key).unlink()


class S3Store:
    """The objects of an ``S3Storage`` (``tests.s3.storage_options``) in ``bucket``."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def key(self, blob: Blob) -> str:
        return f"prefix/{blob.storage_key}"

    def read(self, blob: Blob) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(blob))["Body"].read())

    def write(self, blob: Blob, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(blob), Body=data)

    def remove(self, blob: Blob) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(blob))
