"""No plaintext at rest and nothing left behind: canaries, aborted and truncated uploads, the sweeper.

The canary tests give this process a private temporary directory (``tempfile.tempdir``), so every temporary
file the code under test could make (Django's upload handlers, S3 buffers, ``tempfile`` anywhere) lands where
the probe looks, and a probe thread searches it, the blob storage and every table of the database while the
upload is still streaming, then again afterwards.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from blobs import services
from blobs.models import Blob, BlobStatus
from blobs.uploads import Upload
from encryption.models import DataKey
from tests.blobs.support import LiveApi, make_token, stored_files

pytestmark = pytest.mark.django_db(transaction=True)
MIB = 1024 * 1024


def _file_with_canary(canary: bytes, size: int) -> Iterator[bytes]:
    """Random bytes with the canary in every 64 KiB, generated piece by piece (never written anywhere)."""
    piece = 128 * 1024
    for _ in range(size // piece):
        chunk = bytearray(os.urandom(piece))
        for at in range(1000, piece - len(canary), 64 * 1024):
            chunk[at : at + len(canary)] = canary
        yield bytes(chunk)


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*") if root.exists() else []:
        try:
            if path.is_file() and needle in path.read_bytes():
                hits.append(path)
        except OSError:
            continue  # vanished while we looked
    return hits


def _tables_containing(needle: bytes) -> list[str]:
    hits = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
        for table in tables:
            cursor.execute(
                f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, %s) > 0 OR strpos(t::text, %s) > 0',  # noqa: S608
                [needle.decode(), needle.hex()],
            )
            if cursor.fetchone()[0]:
                hits.append(table)
    return hits


class Probe(threading.Thread):
    """Looks for the canary again and again until stopped; remembers every place it was found."""

    def __init__(self, canary: bytes, places: list[Path]) -> None:
        super().__init__(daemon=True)
        self.canary, self.places = canary, places
        self.stop = threading.Event()
        self.found: list[str] = []
        # Set once a whole round ran while the upload was in flight (its row "uploading" before and after).
        self.looked_during_upload = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                in_flight = Blob.objects.filter(status=BlobStatus.UPLOADING).exists()
                for place in self.places:
                    self.found += [str(p) for p in _files_containing(place, self.canary)]
                self.found += [f"table {t}" for t in _tables_containing(self.canary)]
                if in_flight and Blob.objects.filter(status=BlobStatus.UPLOADING).exists():
                    self.looked_during_upload.set()
        finally:
            connections.close_all()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: Any) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _send_slowly(
    live_server: Any,
    secret: str,
    head: bytes,
    pieces: Iterator[bytes],
    tail: bytes,
    headers: dict[str, str],
    length: int,
    hold: threading.Event,
) -> bytes:
    """Send the body slowly; hold back its last piece until ``hold`` is set (the probe has looked)."""
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        lines = [
            "POST /api/v1/blobs?name=secret.bin HTTP/1.1",
            f"Host: {host}:{port}",
            f"Authorization: Bearer {secret}",
            f"Content-Length: {length}",
            "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head)
        *body, last = pieces
        for piece in body:
            sock.sendall(piece)
            time.sleep(0.02)
        assert hold.wait(timeout=60), "the probe never completed a round during the upload"
        sock.sendall(last + tail)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_canary_is_never_found_at_rest(
    live_server: Any, member: Any, blob_root: Path, private_tmp: Path, kind: str
) -> None:
    canary = f"KODORI-CANARY-{secrets.token_hex(16)}".encode()
    size = 6 * MIB  # well past Django's in-memory upload limit: its default handler would use a temp file
    boundary = "kodori-test-boundary"
    if kind == "raw":
        head, tail, headers = b"", b"", {"Content-Type": "application/octet-stream"}
    else:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="secret.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    probe = Probe(canary, [private_tmp, blob_root])
    probe.start()
    try:
        response = _send_slowly(
            live_server,
            make_token(member),
            head,
            _file_with_canary(canary, size),
            tail,
            headers,
            len(head) + size + len(tail),
            probe.looked_during_upload,
        )
    finally:
        probe.stop.set()
        probe.join(timeout=60)
    assert response.startswith(b"HTTP/1.1 201"), response[:300]
    assert probe.found == []
    # And afterwards: the object is there, encrypted.
    (stored,) = stored_files(blob_root)
    assert stored.stat().st_size > size
    assert _files_containing(private_tmp, canary) == []
    assert _files_containing(blob_root, canary) == []
    assert _tables_containing(canary) == []
    assert Blob.objects.get().size == size


def _wait_until(condition: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_an_aborted_upload_leaves_nothing(live_server: Any, member: Any, blob_root: Path, kind: str) -> None:
    secret = make_token(member)
    host, port = live_server.url.removeprefix("http://").split(":")
    content_type = "application/octet-stream" if kind == "raw" else "multipart/form-data; boundary=b0undary"
    prefix = (
        b""
        if kind == "raw"
        else b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n'
    )
    sock = socket.create_connection((host, int(port)), timeout=30)
    request = (
        f"POST /api/v1/blobs?name=cut.bin HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {16 * MIB}\r\n\r\n"
    ).encode()
    sock.sendall(request + prefix)
    for _ in range(8):
        sock.sendall(os.urandom(256 * 1024))
    # The upload is under way: a row reserves its place, but nobody can see it.
    assert _wait_until(lambda: Blob.objects.filter(status=BlobStatus.UPLOADING).exists())
    listed = LiveApi(live_server.url, secret)
    conn = listed.connection()
    conn.request("GET", "/api/v1/blobs", headers={"Authorization": f"Bearer {secret}"})
    assert b'"items": []' in conn.getresponse().read()
    conn.close()
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    assert _wait_until(
        lambda: not Blob.objects.exists() and not DataKey.objects.exists() and not stored_files(blob_root)
    )


def test_a_body_shorter_than_its_content_length_is_refused(
    live_server: Any, member: Any, blob_root: Path
) -> None:
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /api/v1/blobs?name=short.bin HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {make_token(member)}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\n"
            ).encode()
            + b"x" * 1000
        )
        sock.shutdown(socket.SHUT_WR)  # the body ends here, 4000 bytes early; we still read the answer
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert b'"incomplete_body"' in response
    assert not Blob.objects.exists() and not DataKey.objects.exists() and stored_files(blob_root) == []


def test_the_sweeper_removes_uploads_a_crash_left_behind(member: Any, tenant: Any, blob_root: Path) -> None:
    crashed = Upload.begin(tenant, member, "crashed.bin", None, declared_size=10)
    crashed.write(b"0123456789")
    # The process "dies" here: no finish, no abort. A fresh upload must survive the sweep.
    fresh = Upload.begin(tenant, member, "fresh.bin", None, declared_size=3)
    Blob.objects.filter(pk=crashed.blob.pk).update(created_at=crashed.blob.created_at - timedelta(days=1))
    assert services.sweep_stale_uploads(older_than=timedelta(hours=1)) == 1
    assert list(Blob.objects.values_list("name", flat=True)) == ["fresh.bin"]
    assert not DataKey.objects.filter(blob_id=crashed.blob.pk).exists()
    fresh.abort()
    assert stored_files(blob_root) == []
    assert services.sweep_stale_uploads(older_than=timedelta(hours=1)) == 0


def test_beat_runs_the_sweeper(settings: Any) -> None:
    from blobs.tasks import sweep_stale_uploads

    entry = settings.CELERY_BEAT_SCHEDULE["blobs-sweep-stale-uploads"]
    assert entry["task"] == sweep_stale_uploads.name
    assert sweep_stale_uploads.apply().get() == 0
