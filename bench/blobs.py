"""Benchmark of blob upload and download through the API, encrypted, against the same stack unencrypted.

Starts a private PostgreSQL and a production server (gunicorn with ``kodori.gunicorn_conf``: its worker class,
worker and thread counts unless ``--workers``/``--threads`` say otherwise; ``DEBUG`` off) on loopback, makes
a tenant, a member and an API token, and moves one file (1 GiB by default, 128 MiB with ``--quick``) through
two paths of the same server, round after round, interleaved:

* encrypted: the real API, ``POST /api/v1/blobs`` and ``GET /api/v1/blobs/<id>`` (streaming encryption into
  the blob storage, streaming decryption out of it);
* baseline: ``/bench/plain`` on the same server, same token check, same 1 MiB body reads, same storage at
  the same file offsets (the object starts with a header's worth of bytes), but the bytes are written and
  read back as they are (a streaming response in 1 MiB pieces). This view exists only in this module's
  URLconf, which only this benchmark's server loads (``bench.blobs:application``); production's
  ``kodori.urls`` never mounts it.

The client (``bench/blobs_client.py``) sends the file with ``sendfile`` and reads responses into a reused
buffer, so it costs the server's two cores as little as possible. Every transfer is checked by size, and the
last round's encrypted download by SHA-256. The workers' peak RSS is reset after warm-up
(``/proc/<pid>/clear_refs``) and read afterwards (VmHWM). The server logs each request's CPU time in its
serving thread.

The floor of an encrypted download is the plain download plus AES-256-GCM decryption at the format's
chunking: each round also times raw ``AESGCM.decrypt`` over as many 16 KiB chunks, single thread, in this
process. After the rounds, 1, 2 and 4 encrypted downloads of the last blob run at once (each client stream
in a process of its own, discarding the bytes in the kernel) and their aggregate wall-clock throughput is
compared with one stream's. Final line (one line; MB = 10^6 bytes; medians over the rounds)::

    blobs upload_ratio=<enc/base> download_ratio=<enc/base> download_vs_limit=<floor/enc>
    upload_mb_s=<enc> download_mb_s=<enc> concurrent_2x=<2 streams/1> concurrent_4x=<4 streams/1>
    server_rss_growth_mib=<peak minus warm RSS, worst worker>

The ratios and ``download_vs_limit`` compare *server CPU time* per byte, because the host is shared and
wall-clock throughput of the same run swings by 2-5x with the neighbours' load (like ``bench/crypto.py``); the
wall-clock ratios are printed just above it. ``upload_mb_s``/``download_mb_s`` and the concurrency figures are
wall-clock. Run from the repository root:
``python bench/blobs.py [--quick] [--size-mib N] [--rounds N] [--workers N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
READ = 1024 * 1024

# --- The server side: a URLconf with the baseline view, loaded only by this benchmark's gunicorn -----------

_app: Any = None


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """gunicorn entry point ``bench.blobs:application``: Kodori plus the baseline view.

    Each request's CPU time in its worker thread (``time.thread_time``, from the call until the response
    is closed, i.e. sent) is appended to ``$KODORI_BENCH_CPU_LOG``: the host is shared, and CPU time is what
    a busy neighbour disturbs least.
    """
    global _app
    if _app is None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kodori.settings")
        from django.conf import settings

        settings.ROOT_URLCONF = "bench.blobs"
        from django.core.wsgi import get_wsgi_application

        _app = get_wsgi_application()
    return _Measured(_app, environ, start_response)


class _Measured:
    """The response iterable, timed in the serving thread until gunicorn closes it."""

    def __init__(self, app: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> None:
        self._start = time.thread_time()
        self._path = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
        self._inner = app(environ, start_response)

    def __iter__(self) -> Any:
        return iter(self._inner)

    def close(self) -> None:
        if hasattr(self._inner, "close"):
            self._inner.close()
        spent = time.thread_time() - self._start
        log = os.environ.get("KODORI_BENCH_CPU_LOG")
        if log:
            with Path(log).open("a") as f:
                f.write(f"{self._path} {os.getpid()} {spent:.6f}\n")


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` only inside the benchmark's server; importing this module costs nothing.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def _urlpatterns() -> list[Any]:
    from django.urls import path

    from kodori.urls import urlpatterns

    return [path("bench/plain", _plain_upload), path("bench/plain/<str:key>", _plain_download), *urlpatterns]


def _authenticated(request: Any) -> bool:
    from blobs import services

    scheme, _, secret = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return scheme.lower() == "bearer" and services.authenticate_token(secret.strip()) is not None


def _plain_upload(request: Any) -> Any:
    """The baseline upload: the encrypted path's body reads and buffers (``streamio``), minus the cipher.

    The object starts with as many bytes as the blob format's header, so its writes land at the same file
    offsets as the encrypted path's: 1 MiB writes at 1 MiB-aligned offsets ran 3-7x slower here, and slower
    with every upload, as the page cache grew (large folios on a VM's memory), which made the baseline, not
    the cipher, the thing measured.
    """
    from django.http import HttpResponse, JsonResponse

    from blobs.storage import blob_storage
    from encryption.format.envelope import HEADER_SIZE
    from encryption.format.streamio import buffer, fill, write_all

    if request.method != "POST" or not _authenticated(request):
        return HttpResponse(status=401)
    length = int(request.META["CONTENT_LENGTH"])
    key = f"bench/{uuid.uuid4().hex}"
    sink = blob_storage().open(key, "wb")
    sink.write(bytes(HEADER_SIZE))
    body = _Body(request, length)
    view = buffer(READ)
    while got := fill(body, view):
        write_all(sink, view[:got])
    sink.close()
    return JsonResponse({"id": key.split("/")[1], "size": length - body.remaining}, status=201)


class _Body:
    def __init__(self, request: Any, length: int) -> None:
        self.request, self.remaining = request, length

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self.request.read(min(size, self.remaining)) if self.remaining > 0 else b""
        self.remaining -= len(data)
        return data


def _plain_download(request: Any, key: str) -> Any:
    """The baseline download: the decrypting path's reads and 1 MiB pieces, minus the cipher (or DELETE)."""
    from django.http import HttpResponse, StreamingHttpResponse

    from blobs.storage import blob_storage
    from encryption.format.envelope import HEADER_SIZE
    from encryption.format.streamio import buffer, fill

    if not _authenticated(request):
        return HttpResponse(status=401)
    storage = blob_storage()
    name = f"bench/{key}"
    if request.method == "DELETE":
        storage.delete(name)
        return HttpResponse(status=204)
    size = storage.size(name) - HEADER_SIZE
    source = storage.open(name, "rb")
    source.seek(HEADER_SIZE)

    def pieces() -> Any:
        view = buffer(READ)
        try:
            while got := fill(source, view):
                yield bytes(view[:got])
        finally:
            source.close()

    response = StreamingHttpResponse(pieces(), content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    return response


# Programs post here with a bearer token, like the API: no cookies, so no CSRF (what csrf_exempt sets).
_plain_upload.csrf_exempt = True  # type: ignore[attr-defined]
_plain_download.csrf_exempt = True  # type: ignore[attr-defined]


# --- The driver --------------------------------------------------------------------------------------------


def _env(state: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_ENV": "development",
        "DEBUG": "false",
        "KODORI_STATE_DIR": str(state),
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:9/0",  # not used by these requests
        "ALLOWED_HOSTS": "127.0.0.1",
        "BLOB_MAX_SIZE": str(64 * 1024**3),
        "BLOB_TENANT_QUOTA": str(1024**4),
        "PYTHONPATH": str(REPO),
        "KODORI_BENCH_CPU_LOG": str(state / "cpu.log"),
    }


SETUP = """
from blobs import services
from django.contrib.auth import get_user_model
from tenants.models import Membership, Role, Tenant
tenant = Tenant.objects.create(slug="bench", name="Bench")
user = get_user_model().objects.create_user(username="bench@kodori.test", email="bench@kodori.test")
Membership.objects.create(user=user, tenant=tenant, role=Role.MEMBER)
print("TOKEN=" + services.create_token(tenant, user, "bench")[1])
"""


def _pair(figures: dict[str, list[float]], at: int, unit: str, *, ratios: bool = False) -> str:
    """``upload 300 vs 400 MB/s (0.75), download ...``: encrypted vs baseline."""
    parts = []
    for label, enc, base in (("upload", "enc_up", "base_up"), ("download", "enc_down", "base_down")):
        e, b = figures[enc][at], figures[base][at]
        parts.append(f"{label} {e:.0f} vs {b:.0f} {unit}" + (f" ({e / b:.2f})" if ratios else ""))
    return ", ".join(parts) + " (encrypted vs baseline)"


def _start_server(env: dict[str, str], port: int, workers: int | None, threads: int | None) -> Any:
    """gunicorn with production's configuration (``kodori.gunicorn_conf``), serving this module's URLconf."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [gunicorn, "bench.blobs:application", "--config", "python:kodori.gunicorn_conf"]
    command += ["--bind", f"127.0.0.1:{port}", "--timeout", "600", "--log-level", "warning"]
    command += ["--workers", str(workers)] if workers else []
    command += ["--threads", str(threads)] if threads else []
    server = subprocess.Popen(command, cwd=REPO, env=env)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return server


def run(size: int, rounds: int, workers: int | None, threads: int | None) -> None:
    sys.path.insert(0, str(REPO))
    from bench.blobs_client import (
        Client,
        concurrency,
        concurrent,
        cpu_entries,
        decrypt_cpu,
        make_source,
        next_cpu,
        status,
        worker_pids,
    )
    from kodori.devtools.servers import PostgresServer, free_port, new_password

    root = Path(tempfile.mkdtemp(prefix="kodori-bench-blobs-"))
    pg = PostgresServer(root / "pg", free_port(), new_password(), fast_unsafe=True).start()
    server: subprocess.Popen[bytes] | None = None
    try:
        env = _env(root / "state", pg.url)
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
        out = subprocess.run(
            [python, "manage.py", "shell", "-c", SETUP], cwd=REPO, env=env, check=True, capture_output=True
        ).stdout.decode()
        token = next(line[6:] for line in out.splitlines() if line.startswith("TOKEN="))
        port = free_port()
        server = _start_server(env, port, workers, threads)
        source = root / "source.bin"
        expected = make_source(source, size)
        client = Client(port, token)
        # Warm-up (imports, connections, first key) of every worker process: downloads at once go to
        # different processes. 16 MiB: over BLOB_VERIFY_BEFORE_SEND_BYTES, so the streaming path. Then reset
        # every worker's peak RSS.
        small = root / "small.bin"
        make_source(small, 16 * MIB)
        for _ in range(4):
            enc = client.upload("/api/v1/blobs?name=warm.bin", small, 16 * MIB)
            client.download(f"/api/v1/blobs/{enc['id']}")
            plain = client.upload("/bench/plain", small, 16 * MIB)
            client.download(f"/bench/plain/{plain['id']}")
        pids = worker_pids(server.pid)
        for _ in range(3):
            for path in (f"/api/v1/blobs/{enc['id']}", f"/bench/plain/{plain['id']}"):
                concurrent(port, token, path, 16 * MIB, len(pids), pids)
        from kodori import gunicorn_conf

        print(
            f"blobs: {size / MIB:.0f} MiB x {rounds} rounds, gunicorn with kodori.gunicorn_conf: {len(pids)} "
            f"workers x {threads or gunicorn_conf.threads} threads, {os.cpu_count()} CPUs"
        )
        warm = {pid: status(pid, "VmRSS") for pid in pids}
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")

        log = Path(env["KODORI_BENCH_CPU_LOG"])
        keys = ("enc_up", "base_up", "enc_down", "base_down")
        figures: dict[str, list[float]] = {key: [] for key in keys}  # MB per wall second
        cpu_figures: dict[str, list[float]] = {key: [] for key in keys}  # MB per server CPU second
        decrypt_seconds: list[float] = []  # raw AESGCM.decrypt over the blob's chunks, in this process

        def timed(key: str, action: Callable[[], Any]) -> Any:
            seen = len(cpu_entries(log))
            started = time.perf_counter()
            result = action()
            figures[key].append(size / (time.perf_counter() - started) / 1e6)
            cpu_figures[key].append(size / max(next_cpu(log, seen), 1e-6) / 1e6)
            return result

        # Each round's objects are deleted when the next round starts: a page cache that grew by gigabytes a
        # round made later writes of either path several times slower on this VM, whichever went first.
        made: dict[str, dict[str, Any]] = {}
        for round_no in range(rounds):
            check = round_no == rounds - 1
            if made:
                client.delete(f"/bench/plain/{made['base']['id']}")
                client.delete(f"/api/v1/blobs/{made['enc']['id']}")
            # Alternate which path goes first, so neither always meets the other's writeback or cache.
            order = ("base", "enc") if round_no % 2 == 0 else ("enc", "base")
            made = {}
            for kind in order:
                path = "/bench/plain" if kind == "base" else "/api/v1/blobs?name=bench.bin"
                made[kind] = timed(f"{kind}_up", partial(client.upload, path, source, size))
                assert made[kind]["size"] == size
            paths = {
                "base": f"/bench/plain/{made['base']['id']}",
                "enc": f"/api/v1/blobs/{made['enc']['id']}",
            }
            for kind in order:
                got = timed(f"{kind}_down", partial(client.download, paths[kind]))
                assert got == size
            decrypt_seconds.append(decrypt_cpu(size))
            enc = made["enc"]
            print(f"  round {round_no + 1}: " + _pair(figures, -1, "MB/s"))
            if check:
                digest = hashlib.sha256()
                client.download(f"/api/v1/blobs/{enc['id']}", digest)
                if digest.hexdigest() != expected:
                    raise RuntimeError("the encrypted round trip changed the bytes")

        aggregate = concurrency(client, f"/api/v1/blobs/{enc['id']}", size, rounds, pids, log)
        growth = max(status(pid, "VmHWM") - warm[pid] for pid in pids)
        wall = {key: statistics.median(values) for key, values in figures.items()}
        cpu = {key: statistics.median(values) for key, values in cpu_figures.items()}
        # Nanoseconds of CPU per byte: the floor is the plain download plus the bare cipher.
        plain_ns, enc_ns = 1e3 / cpu["base_down"], 1e3 / cpu["enc_down"]
        decrypt_ns = statistics.median(decrypt_seconds) / size * 1e9
        floor_ns = plain_ns + decrypt_ns
        print("  wall-clock medians: " + _pair({k: [v] for k, v in wall.items()}, 0, "MB/s", ratios=True))
        print("  per server CPU second: " + _pair({k: [v] for k, v in cpu.items()}, 0, "MB", ratios=True))
        print(
            f"  download CPU per byte: floor {floor_ns:.3f} ns (plain download {plain_ns:.3f} + raw "
            f"AESGCM.decrypt of 16 KiB chunks {decrypt_ns:.3f}), encrypted download {enc_ns:.3f} ns"
        )
        print(f"  worker RSS after warm-up {max(warm.values())} MiB, peak growth {growth} MiB")
        # Ratios from server CPU time (a shared host; see the module docstring); throughput is wall-clock.
        print(
            f"blobs upload_ratio={cpu['enc_up'] / cpu['base_up']:.2f} "
            f"download_ratio={cpu['enc_down'] / cpu['base_down']:.2f} "
            f"download_vs_limit={floor_ns / enc_ns:.2f} "
            f"upload_mb_s={wall['enc_up']:.0f} download_mb_s={wall['enc_down']:.0f} "
            f"concurrent_2x={aggregate[2] / aggregate[1]:.2f} "
            f"concurrent_4x={aggregate[4] / aggregate[1]:.2f} "
            f"server_rss_growth_mib={growth}"
        )
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB instead of 1 GiB")
    parser.add_argument("--size-mib", type=int, help="file size in MiB (overrides --quick)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 5 with --quick, else 3)")
    parser.add_argument(
        "--workers", type=int, help="gunicorn worker processes (default: kodori.gunicorn_conf)"
    )
    parser.add_argument("--threads", type=int, help="threads per worker (default: kodori.gunicorn_conf)")
    args = parser.parse_args()
    size_mib = args.size_mib or (128 if args.quick else 1024)
    run(size_mib * MIB, args.rounds or (5 if args.quick else 3), args.workers, args.threads)


if __name__ == "__main__":
    # Run as a script, this file's directory is first on sys.path, where "blobs" would mean this file.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    main()
