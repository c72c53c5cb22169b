"""Cancelling an upload of the page (``POST /blobs/upload?name=...``, a raw body sent by blobs.js).

Cancel aborts the browser's request: the connection ends before Content-Length. The server throws the partial
file away in that same request, at once (not hours later by the sweeper): no row, no data key, no stored
object, no ``blob.uploaded`` event. While it is in flight nobody sees it in the list. Other uploads and files
are untouched. ``tests/browser/test_file_control.py`` presses the button in Chromium.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent, EventType
from blobs.models import Blob, BlobStatus
from encryption.models import DataKey
from tests.blobs.support import make_blob, stored_files
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class PageSession:
    """A signed-in browser session against the live server: its cookies and CSRF token, raw sockets."""

    def __init__(self, live_server: Any, user: Any) -> None:
        self.host, port = live_server.url.removeprefix("http://").split(":")
        self.port = int(port)
        client = client_for(user)
        self.session = client.cookies["sessionid"].value
        self.csrf = self._csrf_cookie()

    def _csrf_cookie(self) -> str:
        with socket.create_connection((self.host, self.port), timeout=30) as sock:
            sock.sendall(
                f"GET /blobs/upload HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Cookie: sessionid={self.session}\r\nConnection: close\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head and (piece := sock.recv(65536)):
                head += piece
        for line in head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n"):
            if line.lower().startswith("set-cookie:") and "csrftoken=" in line:
                return SimpleCookie(line.split(":", 1)[1])["csrftoken"].value
        raise AssertionError(f"no CSRF cookie in {head[:300]!r}")

    def start_upload(self, name: str, size: int, *, csrf: bool = True) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        token = f"X-CSRFToken: {self.csrf}\r\n" if csrf else ""
        sock.sendall(
            (
                f"POST /blobs/upload?name={name} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Cookie: sessionid={self.session}; csrftoken={self.csrf}\r\n{token}"
                f"Origin: http://{self.host}:{self.port}\r\nReferer: http://{self.host}:{self.port}/blobs\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        return sock


def _answer(sock: socket.socket) -> bytes:
    response = b""
    while piece := sock.recv(65536):
        response += piece
    return response


def _nothing_left(blob_root: Path) -> bool:
    return not Blob.objects.exists() and not DataKey.objects.exists() and not stored_files(blob_root)


def test_a_cancelled_upload_disappears_at_once(live_server: Any, member: Any, blob_root: Path) -> None:
    page = PageSession(live_server, member)
    sock = page.start_upload("holiday.mov", 64 * MIB)
    for _ in range(8):
        sock.sendall(b"\x5a" * (256 * 1024))
    assert _wait_until(lambda: Blob.objects.filter(status=BlobStatus.UPLOADING).exists(), 15)
    assert stored_files(blob_root), "the upload is under way: its object is being written"
    # In flight, it is a reservation nobody sees.
    listing = client_for(member).get("/blobs").content.decode()
    assert "holiday.mov" not in listing and "No files yet" in listing

    sock.shutdown(socket.SHUT_RDWR)  # what the browser does when Cancel aborts its request
    sock.close()
    started = time.monotonic()
    assert _wait_until(lambda: _nothing_left(blob_root), 5), "the server kept the cancelled upload"
    assert time.monotonic() - started < 5  # promptly: the sweeper runs every 15 minutes, for 6-hour-old rows
    assert not AuditEvent.objects.filter(type=EventType.BLOB_UPLOADED).exists()
    assert "holiday.mov" not in client_for(member).get("/blobs").content.decode()


def test_cancelling_one_upload_leaves_the_others(live_server: Any, member: Any, blob_root: Path) -> None:
    kept = make_blob(member, b"already here", name="kept.txt")
    page = PageSession(live_server, member)
    cancelled = page.start_upload("cancelled.bin", 32 * MIB)
    cancelled.sendall(b"c" * MIB)
    assert _wait_until(lambda: Blob.objects.filter(name="cancelled.bin").exists(), 15)

    finished = page.start_upload("finished.txt", 11)
    finished.sendall(b"hello world")
    answer = _answer(finished)
    finished.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]

    cancelled.shutdown(socket.SHUT_RDWR)
    cancelled.close()
    assert _wait_until(lambda: not Blob.objects.filter(name="cancelled.bin").exists(), 5)
    ready = set(Blob.objects.filter(status=BlobStatus.READY).values_list("name", flat=True))
    assert ready == {"kept.txt", "finished.txt"}
    assert DataKey.objects.count() == 2
    assert len(stored_files(blob_root)) == 2
    assert Blob.objects.get(pk=kept.pk).size == len(b"already here")


def test_an_upload_without_the_csrf_token_never_starts(
    live_server: Any, member: Any, blob_root: Path
) -> None:
    page = PageSession(live_server, member)
    sock = page.start_upload("forged.bin", 5, csrf=False)
    sock.sendall(b"12345")
    answer = _answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert _nothing_left(blob_root)


def test_a_viewer_cannot_start_an_upload_to_cancel(live_server: Any, viewer: Any, blob_root: Path) -> None:
    page = PageSession(live_server, viewer)
    sock = page.start_upload("nope.bin", 5)
    sock.sendall(b"12345")
    answer = _answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert _nothing_left(blob_root)
