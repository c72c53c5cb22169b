"""Two downloads at once go to two worker processes of the production gunicorn configuration.

The rule, shown deterministically on ``KodoriWorker.accept`` with a real listening socket and a sibling that
accepts from it: a worker serving a request lets an idle sibling take a new connection, and takes it itself
only if nobody did within the grace; an idle worker (kept-alive connections are idle) accepts at once. Then
end to end:

A download keeps its thread on the CPU holding the GIL (AES-GCM), so two in one process share one core. Every
gthread worker polls the shared listening socket and the first to ``accept`` wins; a busy one won often
(``docs/benchmarks.md``, "Blobs"), so ``KodoriWorker`` lets idle siblings take a connection first. Here a
real ``gunicorn kodori.wsgi --config python:kodori.gunicorn_conf`` with two workers serves a download that the
client does not read (its thread blocks in ``sendall``: serving, not idle), then a second download arrives:
the process holding each server-side socket is read from ``/proc``. The grace is raised to 100 ms
(``KODORI_ACCEPT_GRACE_MS``) so that a loaded test machine, slow to wake the idle process, still shows the
rule rather than its timing.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from blobs.models import Blob
from kodori import gunicorn_conf
from kodori.devtools.servers import free_port
from tests.blobs.support import make_blob, make_token, pattern
from tests.conftest import stop_process, subprocess_env, wait_for_listener

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = 16 * 1024 * 1024  # more than the socket buffers hold, so an unread download stays in sendall


GRACE = 0.3  # seconds: long next to the sibling's head start below, on any machine


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[gunicorn_conf.KodoriWorker]:
    """A KodoriWorker as gunicorn builds it, whose accepted connections are kept instead of handled."""
    from gunicorn.config import Config

    monkeypatch.setattr(gunicorn_conf, "ACCEPT_GRACE_SECONDS", GRACE)
    made = gunicorn_conf.KodoriWorker(1, os.getpid(), [], None, 30, Config(), logging.getLogger("test"))
    accepted: list[Any] = []
    made.enqueue_req = accepted.append  # gunicorn's method, not Kodori's
    made.accepted = accepted
    try:
        yield made
    finally:
        for conn in accepted:
            conn.sock.close()
        made.tmp.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)  # as gunicorn's worker sets it
    try:
        yield sock
    finally:
        sock.close()


def connect(listener: socket.socket) -> socket.socket:
    return socket.create_connection(listener.getsockname())


def timed_accept(worker: Any, listener: socket.socket) -> float:
    started = time.monotonic()
    worker.accept(listener)
    return time.monotonic() - started


def test_an_idle_worker_accepts_at_once(worker: Any, listener: socket.socket) -> None:
    with connect(listener):
        assert timed_accept(worker, listener) < GRACE / 2
        assert len(worker.accepted) == 1 and worker.nr_conns == 1
        # A kept-alive connection is idle: the worker is still idle.
        worker.keepalived_conns = deque([worker.accepted[0]])
        with connect(listener):
            assert timed_accept(worker, listener) < GRACE / 2
            assert len(worker.accepted) == 2 and worker.nr_conns == 2


def test_a_serving_worker_leaves_the_connection_to_an_idle_sibling(
    worker: Any, listener: socket.socket
) -> None:
    worker.nr_conns = 1  # one request in its threads
    taken: list[socket.socket] = []

    def sibling() -> None:
        time.sleep(GRACE / 10)
        deadline = time.monotonic() + 2 * GRACE
        while not taken and time.monotonic() < deadline:
            try:
                taken.append(listener.accept()[0])
            except BlockingIOError:
                time.sleep(0.001)

    helper = threading.Thread(target=sibling)
    with connect(listener):
        helper.start()
        waited = timed_accept(worker, listener)
        helper.join()
    for sock in taken:
        sock.close()
    assert waited >= GRACE and len(taken) == 1  # the sibling had it
    assert worker.accepted == [] and worker.nr_conns == 1  # and the serving worker found nothing (EAGAIN)


def test_a_serving_worker_takes_the_connection_when_no_sibling_does(
    worker: Any, listener: socket.socket
) -> None:
    worker.nr_conns = 1
    with connect(listener):
        assert timed_accept(worker, listener) >= GRACE
        assert len(worker.accepted) == 1 and worker.nr_conns == 2


@pytest.fixture
def server(blob_root: Path, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {
        **subprocess_env(),
        "BLOB_ROOT": str(blob_root),
        "BLOB_VERIFY_BEFORE_SEND_BYTES": str(64 * 1024),
        "KODORI_ACCEPT_GRACE_MS": "100",
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "kodori.wsgi", "--config", "python:kodori.gunicorn_conf"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4", "--timeout", "60"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_listener(proc, port, log_path, within=30)
        yield port, proc
    finally:
        stop_process(proc)


def start_download(port: int, secret: str, blob: Blob) -> socket.socket:
    """Send a GET and read the status line and some body, then leave the rest unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", port))
    request = (
        f"GET /api/v1/blobs/{blob.pk} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200 "), head[:200]
    return sock


def serving_process(workers: list[int], client: socket.socket, port: int) -> int:
    """The worker process that holds the server side of ``client``'s connection."""
    theirs = f"0100007F:{port:04X} 0100007F:{client.getsockname()[1]:04X}"
    inode = next(
        line.split()[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if " ".join(line.split()[1:3]) == theirs
    )
    return next(
        pid
        for pid in workers
        for fd in Path(f"/proc/{pid}/fd").iterdir()
        if fd.exists() and fd.readlink().name == f"socket:[{inode}]"
    )


def workers_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_second_download_goes_to_an_idle_worker_process(server: tuple[int, Any], member: Any) -> None:
    port, proc = server
    blob = make_blob(member, pattern(SIZE), name="big.bin")
    secret = make_token(member)
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    for _ in range(4):
        first = start_download(port, secret, blob)
        second = start_download(port, secret, blob)
        try:
            pids = {serving_process(workers, first, port), serving_process(workers, second, port)}
        finally:
            first.close()
            second.close()
        assert pids == set(workers)
