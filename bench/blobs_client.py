"""The client side of ``bench/blobs.py``: its transfers, the download floor, concurrent downloads, and what it
reads of the server's processes (their pids, RSS, the per-request CPU log).

* :class:`Client` moves one file at a time: uploads sent with ``sendfile``, downloads read into a reused
  buffer (optionally hashed), so the client costs the server's two cores as little as possible.
* :func:`decrypt_cpu` is the cipher's share of the floor: the CPU seconds of raw ``AESGCM.decrypt`` (pyca,
  one thread, in the benchmark's own process) over as many 16 KiB chunks as a blob of the given size has,
  each with its own nonce, cycling through 1 MiB of distinct sealed chunks (the batch a reader holds).
  The floor of an encrypted download is the plain download's server CPU plus this.
* :func:`concurrent` starts ``n`` downloads of one blob at once, on ``n`` connections from ``n`` processes
  (threads would share one GIL), and times them until the last ends: aggregate MB per wall second, and the
  server's CPU seconds over that time. The client discards the bytes in the kernel (``recv`` with
  ``MSG_TRUNC`` on TCP copies nothing), so it takes as little as possible of the two cores the server
  shares with it; every stream is still checked for its full Content-Length.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 16 * 1024
MIB = 1024 * 1024
STREAMS = (1, 2, 4)  # simultaneous downloads whose aggregate throughput is measured
NONCE = 12
_RING = 64  # distinct sealed chunks cycled through: 1 MiB, as a reader's batch


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.buffer = memoryview(bytearray(1024 * 1024))

    def upload(self, path: str, source: Path, size: int) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", self.port)) as sock, source.open("rb") as f:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
            )
            sock.sendall(head.encode())
            sock.sendfile(f)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = reply.split(b" ", 2)[1]
        if status != b"201":
            raise RuntimeError(f"upload to {path} failed: {reply[:500]!r}")
        body: dict[str, Any] = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        return body

    def delete(self, path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("DELETE", path, headers={"Authorization": f"Bearer {self.token}"})
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status != 204:
            raise RuntimeError(f"delete of {path} failed: {response.status}")

    def download(self, path: str, digest: Any = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"download of {path} failed: {response.status} {response.read()[:300]!r}")
        total = 0
        while got := response.readinto(self.buffer):
            if digest is not None:
                digest.update(self.buffer[:got])
            total += got
        conn.close()
        return total


def decrypt_cpu(size: int) -> float:
    """CPU seconds of raw ``AESGCM.decrypt`` over the chunks of a ``size``-byte blob (16 KiB, final short)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    base = int.from_bytes(os.urandom(NONCE), "big")
    full, last = divmod(size, CHUNK)
    nonces = [(base ^ index).to_bytes(NONCE, "big") for index in range(_RING)]
    sealed = [aead.encrypt(nonce, os.urandom(CHUNK), b"") for nonce in nonces]
    tail = aead.encrypt(nonces[0], os.urandom(last), b"")
    decrypt = aead.decrypt
    started = time.thread_time()
    for index in range(full):
        decrypt(nonces[index % _RING], sealed[index % _RING], b"")
    decrypt(nonces[0], tail, b"")
    return time.thread_time() - started


@dataclass(frozen=True)
class Concurrent:
    streams: int
    mb_s: float  # aggregate, MB (10^6 bytes) per wall second
    server_cores: float  # the workers' CPU seconds over the wall seconds (2.0 = both cores busy)


def _drain(port: int, token: str, path: str, expected: int, start: Any, errors: Any) -> None:
    """One stream, in a process of its own (a thread would share the client's GIL with the others)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            start.wait()
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("connection closed before the headers")
                head += data
            head, _, body = head.partition(b"\r\n\r\n")
            if head.split(b" ", 2)[1] != b"200":
                raise RuntimeError(f"download failed: {head[:200]!r}")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            got = len(body)
            scratch = bytearray(1024 * 1024)  # never written: MSG_TRUNC discards in the kernel
            while got < length:
                n = sock.recv_into(scratch, min(length - got, len(scratch)), socket.MSG_TRUNC)
                if not n:
                    break
                got += n
            if got != length or length != expected:
                raise RuntimeError(f"got {got} of {length} bytes (expected {expected})")
    except Exception as exc:  # reported by the caller, after every stream is done
        errors.put(f"{type(exc).__name__}: {exc}")
        start.abort()


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds the processes' threads have run (the scheduler's nanosecond count, not clock ticks)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def concurrent(port: int, token: str, path: str, size: int, streams: int, pids: list[int]) -> Concurrent:
    """``streams`` simultaneous downloads of ``path`` (``size`` bytes each): aggregate throughput."""
    context = multiprocessing.get_context("fork")
    start, errors = context.Barrier(streams + 1), context.Queue()
    drains = [
        context.Process(target=_drain, args=(port, token, path, size, start, errors)) for _ in range(streams)
    ]
    for drain in drains:
        drain.start()
    cpu = _cpu_seconds(pids)
    started = time.perf_counter()
    try:
        start.wait()
        started = time.perf_counter()
    except threading.BrokenBarrierError:
        pass  # a stream failed before it started: reported below
    for drain in drains:
        drain.join()
    wall = time.perf_counter() - started
    failures = [errors.get() for _ in range(errors.qsize())]
    failures += [f"exit code {d.exitcode}" for d in drains if d.exitcode]
    if failures:
        raise RuntimeError(f"{streams} concurrent downloads: " + "; ".join(failures))
    return Concurrent(streams, streams * size / wall / 1e6, (_cpu_seconds(pids) - cpu) / wall)


# --- The server's processes and its CPU log ---------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(master).children()]


def status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024  # kB → MiB
    return 0


def cpu_entries(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def next_cpu(log: Path, seen: int) -> float:
    """The server CPU seconds of the request after the first ``seen`` in the log (waits for it)."""
    for _ in range(500):
        entries = cpu_entries(log)
        if len(entries) > seen:
            return float(entries[seen].rsplit(" ", 1)[1])
        time.sleep(0.01)
    raise RuntimeError("the server did not log the request's CPU time")


def make_source(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(8 * MIB, left))
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def concurrency(
    client: Any, path: str, size: int, rounds: int, pids: list[int], log: Path
) -> dict[int, float]:
    """Aggregate MB/s of 1, 2 and 4 simultaneous downloads of ``path`` (medians over ``rounds``), printed."""
    runs: dict[int, list[Any]] = {n: [] for n in STREAMS}
    served: dict[int, list[int]] = {n: [] for n in STREAMS}  # worker processes used, per run
    for _ in range(rounds):
        for n in STREAMS:
            seen = len(cpu_entries(log))
            runs[n].append(concurrent(client.port, client.token, path, size, n, pids))
            for index in range(seen, seen + n):
                next_cpu(log, index)  # wait for each stream's log line
            served[n].append(len({line.split()[2] for line in cpu_entries(log)[seen : seen + n]}))
    aggregate = {n: statistics.median(r.mb_s for r in runs[n]) for n in STREAMS}
    print("  concurrent encrypted downloads (aggregate wall-clock MB/s, medians; server cores busy):")
    for n in STREAMS:
        cores = statistics.median(r.server_cores for r in runs[n])
        scale = aggregate[n] / aggregate[1]
        print(
            f"    {n} stream{'s' if n > 1 else ''}: {aggregate[n]:.0f} MB/s ({scale:.2f}x), "
            f"{cores:.2f} cores busy, worker processes per run {','.join(map(str, served[n]))}"
        )
    return aggregate
