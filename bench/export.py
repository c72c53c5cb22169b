"""Benchmark of the tenant export: a part holding one large file against the plain download of that file and
against the physical floor, and the per-file cost of a part of many small files.

Starts a private PostgreSQL (fsync off: the database's writes are not what is measured) and Redis, or uses
``DATABASE_URL`` / ``REDIS_URL`` when both are set, and a temporary filesystem blob store. Seeds through the
real upload service (``blobs.uploads.Upload``) one tenant holding one file of 1 GiB (256 MiB with
``--quick``), one holding 5,000 files of 4 KiB (1,000 with ``--quick``) and one holding a single 4 KiB file,
each with an owner and an API token, and makes a zip and a tar export of each (``create_export``: one part
each). Then, in this one process (one thread, plus the export's hashing helper where it is on), for
``--rounds`` rounds, rotating the order each round, on the same stored bytes:

- **plain**: ``GET /api/v1/blobs/<id>``, the download figure of ``bench/blobs.py``, but through Django's WSGI
  application called in-process, as gunicorn's serving thread calls it, minus the socket: token check, data
  key, streaming decryption (``blobs.downloads``) in ~1 MiB pieces, the body iterated to its end.
- **zip** / **tar**: ``GET /api/v1/exports/<id>/parts/1`` the same way: ``begin_download`` (key check, audit
  event) and ``stream_part``: every file through ``blobs.downloads.plaintext``, SHA-256 of every byte for
  the manifest, the archive writer (CRC-32 of every byte for zip), then manifest.jsonl, README.txt and the
  audit evidence bundle. Each twice: SHA-256 on the streaming thread (``inline``) and on the helper thread
  (``thread``, ``offboarding.exports.HASH_ON_THREAD_FROM``, the default).
- **floor**: pyca's ``AESGCM.decrypt_into`` of as many sealed 16 KiB chunks as the file has (64 distinct
  chunks in memory, cycled) into one reused buffer, and ``sha256.update`` of each plaintext: the least work
  any export of these bytes does on one core. Also printed: the floor plus ``zlib.crc32`` (what zip adds),
  and SHA-256 alone (the bound once the hashing has a core of its own).

Throughput is file bytes per wall-clock second (MiB = 2^20 bytes); CPU is this process's CPU time per file
byte (every thread of it; PostgreSQL's is not in it). Medians over the rounds. The small-file part is timed
as a whole (files per second), beside as many separate API downloads of the same files as ``--small-gets``
says; the single-file part gives what every part pays whatever it holds (key check, audit event, manifest,
README, the tenant's audit evidence bundle). Every export's manifest is checked against the SHA-256 of the
bytes uploaded and one more plain download is hashed, else the figures mean nothing and the script exits 1.
Final line (ratios of wall-clock medians; exports as shipped, i.e. ``thread``)::

    export size=<bytes> zip_vs_plain=<x> tar_vs_plain=<y> floor_vs_export=<floor / tar>
    small_files_per_s=<zip part> hash_thread_gain=<zip thread / zip inline>

Run from the repository root: ``python bench/export.py [--quick] [--size-mib N] [--small-files N]
[--rounds N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import django_environment, run_cleanups, start_django, start_servers  # noqa: E402

MIB = 1024 * 1024
CHUNK = 16 * 1024
SMALL = 4 * 1024
MANIFEST_LINE = re.compile(rb'\{"record":"(?:file|end)"[^\n]*\n')


class CheckFailed(Exception):
    """An answer was not what was uploaded: its throughput would mean nothing."""


@dataclass
class Seeded:
    """A tenant, its owner's token, its files' SHA-256 by blob id, its zip and tar exports, its file bytes."""

    tenant: Any
    token: str
    digests: dict[str, str]
    exports: dict[str, str]
    bytes: int


def setup_django(root: Path, database_url: str, redis_url: str) -> None:
    os.environ.update(
        {
            **django_environment(root, database_url, redis_url),
            "BLOB_STORAGE": "filesystem",
            "BLOB_ROOT": str(root / "blobs"),
            "BLOB_MAX_SIZE": str(64 * 1024**3),
            "BLOB_TENANT_QUOTA": str(1024**4),
        }
    )
    start_django()


def seed(slug: str, files: Iterator[bytes | int], run: str) -> Seeded:
    """A tenant with an owner and a token, holding ``files`` (small ones as bytes, a large one as its size,
    written in random 1 MiB pieces), and a zip and a tar export of it."""
    from bench.support import make_user
    from blobs import services
    from blobs.uploads import Upload
    from offboarding.exports import create_export
    from tenants.models import Membership, Role, Tenant

    user = make_user(f"{slug}-{run}@example.test")
    tenant = Tenant.objects.create(slug=f"{slug}-{run}", name=f"Export bench {slug}")
    Membership.objects.create(user=user, tenant=tenant, role=Role.OWNER)
    digests = {}
    total = 0
    for index, data in enumerate(files):
        size = data if isinstance(data, int) else len(data)
        total += size
        upload = Upload.begin(tenant, user, f"f{index:05d}.bin", "application/octet-stream", size)
        digest = hashlib.sha256()
        if isinstance(data, int):
            for start in range(0, size, MIB):
                piece = os.urandom(min(MIB, size - start))
                digest.update(piece)
                upload.write(piece)
        else:
            digest.update(data)
            upload.write(data)
        blob = upload.finish(expected_size=size)
        digests[str(blob.pk)] = digest.hexdigest()
    exports = {fmt: str(create_export(tenant, fmt, actor=user).pk) for fmt in ("zip", "tar")}
    return Seeded(tenant, services.create_token(tenant, user, "bench")[1], digests, exports, total)


class Api:
    """Django's WSGI application, called in this thread as a WSGI server's worker thread calls it."""

    def __init__(self) -> None:
        from django.core.wsgi import get_wsgi_application

        self.app = get_wsgi_application()

    def get(
        self, path: str, token: str, *, keep_after: int | None = None, digest: Any = None
    ) -> tuple[int, bytes]:
        """Iterate the body of ``GET path`` to its end: its length, and what comes after its first
        ``keep_after`` bytes. Nothing before is held, so the pieces are freed as a server frees them."""
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        statuses: list[str] = []

        def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Callable[[bytes], None]:
            statuses.append(status)
            return lambda data: None

        body = self.app(environ, start_response)
        total = 0
        tail: list[bytes] = []
        try:
            if not statuses or not statuses[0].startswith("200"):
                raise CheckFailed(f"GET {path}: {statuses} {b''.join(body)[:300]!r}")
            for piece in body:
                total += len(piece)
                if digest is not None:
                    digest.update(piece)
                if keep_after is not None and total > keep_after:
                    tail.append(piece)
        finally:
            body.close()
        return total, b"".join(tail)


def check_manifest(tail: bytes, expected: dict[str, str], what: str) -> None:
    """The manifest lists every file with the SHA-256 of the bytes uploaded, and its end line counts them."""
    lines = [orjson.loads(match) for match in MANIFEST_LINE.findall(tail)]
    listed = {line["blob_id"]: line["sha256"] for line in lines if line["record"] == "file"}
    ends = [line for line in lines if line["record"] == "end"]
    if listed != expected or len(ends) != 1 or ends[0]["files"] != len(expected) or ends[0]["skipped"]:
        wrong = sum(1 for blob_id, sha in expected.items() if listed.get(blob_id) != sha)
        raise CheckFailed(f"{what}: {wrong} of {len(expected)} files listed wrong; end lines {ends}")


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def floor(chunks: int, *, crc: bool = False, decrypt: bool = True) -> None:
    """``chunks`` sealed 16 KiB chunks opened with ``decrypt_into`` and hashed (and CRC'd for zip)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes = AESGCM(os.urandom(32))
    nonces = [n.to_bytes(12, "big") for n in range(64)]
    sealed = [(nonce, aes.encrypt(nonce, os.urandom(CHUNK), None)) for nonce in nonces]
    out = bytearray(CHUNK)
    digest = hashlib.sha256()
    checksum = 0
    for i in range(chunks):
        nonce, data = sealed[i & 63]
        if decrypt:
            aes.decrypt_into(nonce, data, None, out)
        digest.update(out)
        if crc:
            checksum = zlib.crc32(out, checksum)


@dataclass
class Figure:
    walls: list[float]
    cpus: list[float]

    def mib_s(self, size: int) -> float:
        return size / statistics.median(self.walls) / MIB

    def ns_per_byte(self, size: int) -> float:
        return statistics.median(self.cpus) / size * 1e9


def big_rounds(api: Api, big: Seeded, size: int, rounds: int, shipped: int) -> dict[str, Figure]:
    """Medians of every way through the large file's bytes; ``shipped`` is ``HASH_ON_THREAD_FROM``."""
    (blob_id,) = big.digests
    chunks = size // CHUNK + 1
    steps: dict[str, Callable[[], Any]] = {
        "plain": lambda: api.get(f"/api/v1/blobs/{blob_id}", big.token),
        "floor": lambda: floor(chunks),
        "floor+crc32": lambda: floor(chunks, crc=True),
        "sha256 alone": lambda: floor(chunks, decrypt=False),
    }
    # A tar part always hashes inline (offboarding.exports: the helper gained it ~5% for 30% more CPU).
    steps["zip inline"] = _export_step(api, big, "zip", sys.maxsize)
    steps["zip thread"] = _export_step(api, big, "zip", shipped)
    steps["tar inline"] = _export_step(api, big, "tar", sys.maxsize)
    figures = {name: Figure([], []) for name in steps}
    names = list(steps)
    for round_no in range(rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        parts = []
        for name in order:
            wall, cpu, _ = timed(steps[name])
            figures[name].walls.append(wall)
            figures[name].cpus.append(cpu)
            parts.append(f"{name} {size / wall / MIB:,.0f}")
        print(f"  round {round_no + 1} (load average {os.getloadavg()[0]:.1f}), MiB/s: {', '.join(parts)}")
    total, _ = api.get(f"/api/v1/blobs/{blob_id}", big.token, digest=(digest := hashlib.sha256()))
    if total != size or digest.hexdigest() != big.digests[blob_id]:
        raise CheckFailed("the plain download did not give back the bytes uploaded")
    return figures


def _export_step(api: Api, seeded: Seeded, fmt: str, thread_from: int) -> Callable[[], Any]:
    """Download part 1 of ``seeded``'s export with SHA-256 on the helper thread from ``thread_from`` bytes
    (``sys.maxsize``: never), and check its manifest."""
    from offboarding import exports

    path = f"/api/v1/exports/{seeded.exports[fmt]}/parts/1"

    def step() -> int:
        shipped, exports.HASH_ON_THREAD_FROM = exports.HASH_ON_THREAD_FROM, thread_from
        try:
            # The manifest comes after the files' data: only what follows the data is kept for the check.
            total, tail = api.get(path, seeded.token, keep_after=seeded.bytes)
        finally:
            exports.HASH_ON_THREAD_FROM = shipped
        check_manifest(tail, seeded.digests, f"{fmt} export (thread from {thread_from})")
        return total

    return step


def small_rounds(api: Api, small: Seeded, rounds: int, gets: int, shipped: int) -> dict[str, list[float]]:
    """Wall seconds of the whole small-file part (zip, tar), and of ``gets`` separate API downloads."""
    ids = list(small.digests)[:gets]

    def separate() -> None:
        for blob_id in ids:
            total, _ = api.get(f"/api/v1/blobs/{blob_id}", small.token)
            if total != SMALL:
                raise CheckFailed(f"blob {blob_id}: {total} bytes, not {SMALL}")

    steps: dict[str, Callable[[], Any]] = {
        "zip": _export_step(api, small, "zip", shipped),
        "tar": _export_step(api, small, "tar", shipped),
        "separate GETs": separate,
    }
    walls: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_no in range(rounds):
        parts = []
        for name in names[round_no % len(names) :] + names[: round_no % len(names)]:
            wall, _, _ = timed(steps[name])
            walls[name].append(wall)
            count = len(ids) if name == "separate GETs" else len(small.digests)
            parts.append(f"{name} {count / wall:,.0f}")
        print(f"  round {round_no + 1} (load average {os.getloadavg()[0]:.1f}), files/s: {', '.join(parts)}")
    return walls


def fixed_costs(api: Api, tiny: Seeded, shipped: int, times: int = 20) -> tuple[float, float, float]:
    """Median wall seconds of a zip part holding one 4 KiB file, of the API download of that file, and of
    the part's audit evidence bundle built alone: what every part pays whatever it holds."""
    from audit import export

    (blob_id,) = tiny.digests
    part = _export_step(api, tiny, "zip", shipped)
    walls: list[list[float]] = [[], [], []]
    steps = [
        part,
        lambda: api.get(f"/api/v1/blobs/{blob_id}", tiny.token),
        lambda: sum(len(p) for p in export.whole_chain_bundle(tiny.tenant, exported_by="bench")),
    ]
    for _ in range(times):
        for kept, step in zip(walls, steps, strict=True):
            kept.append(timed(step)[0])
    part_s, get_s, bundle_s = (statistics.median(kept) for kept in walls)
    return part_s, get_s, bundle_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/export.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB and 1,000 small files")
    parser.add_argument("--size-mib", type=int, help="the large file in MiB (default 1024, 256 with --quick)")
    parser.add_argument("--small-files", type=int, help="4 KiB files (default 5,000, 1,000 with --quick)")
    parser.add_argument("--small-gets", type=int, default=500, help="separate downloads to compare")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    size = (args.size_mib or (256 if args.quick else 1024)) * MIB
    small_count = args.small_files or (1000 if args.quick else 5000)
    gets = min(args.small_gets, small_count)

    root = Path(tempfile.mkdtemp(prefix="kodori-bench-export-"))
    cleanups: list[Callable[[], None]] = [lambda: shutil.rmtree(root, ignore_errors=True)]
    try:
        database_url, redis_url = start_servers(root, cleanups, fast_unsafe=True)
        setup_django(root, database_url, redis_url)
        from offboarding import exports

        shipped = exports.HASH_ON_THREAD_FROM
        run = secrets.token_hex(4)
        started = time.perf_counter()
        big = seed("big", iter([size]), run)
        seeded_big = time.perf_counter() - started
        small = seed("small", (os.urandom(SMALL) for _ in range(small_count)), run)
        tiny = seed("tiny", iter([os.urandom(SMALL)]), run)
        seeded_small = time.perf_counter() - started - seeded_big
        print(
            f"export: 1 file of {size / MIB:,.0f} MiB, {small_count:,} files of {SMALL // 1024} KiB; "
            f"{args.rounds} round(s); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"seeded in {seeded_big:.1f} s + {seeded_small:.1f} s; helper thread from {shipped // 1024} KiB"
        )
        api = Api()
        api.get(f"/api/v1/exports/{small.exports['zip']}/parts/1", small.token)  # warm-up: imports, plans
        for blob_id in list(small.digests)[:20]:
            api.get(f"/api/v1/blobs/{blob_id}", small.token)

        figures = big_rounds(api, big, size, args.rounds, shipped)
        print(f"  {'':<14}{'MiB/s':>8}{'CPU ns/B':>10}  (medians; CPU of every thread of this process)")
        for name, figure in figures.items():
            print(f"  {name:<14}{figure.mib_s(size):>8,.0f}{figure.ns_per_byte(size):>10.2f}")
        rate = {name: figure.mib_s(size) for name, figure in figures.items()}
        plain, floor_rate = rate["plain"], rate["floor"]
        zip_rate, tar_rate = rate["zip thread"], rate["tar inline"]  # as shipped
        print(
            f"  as shipped (zip hashing on the helper, tar inline): zip/plain {zip_rate / plain:.2f}, "
            f"tar/plain {tar_rate / plain:.2f}, floor/tar {floor_rate / tar_rate:.2f}, "
            f"floor+crc32/zip {rate['floor+crc32'] / zip_rate:.2f}"
        )
        print(f"  helper thread / inline, zip: {rate['zip thread'] / rate['zip inline']:.2f}")

        walls = small_rounds(api, small, args.rounds, gets, shipped)
        per_s = {
            name: (gets if name == "separate GETs" else small_count) / statistics.median(values)
            for name, values in walls.items()
        }
        part_s, get_s, bundle_s = fixed_costs(api, tiny, shipped)
        print(
            f"  small files (medians): zip part {per_s['zip']:,.0f} files/s ({1000 / per_s['zip']:.2f} ms a "
            f"file), tar part {per_s['tar']:,.0f} files/s, separate API downloads "
            f"{per_s['separate GETs']:,.0f} files/s ({1000 / per_s['separate GETs']:.2f} ms each)"
        )
        print(
            f"  every part pays (zip part of one 4 KiB file, median of 20): {part_s * 1000:.1f} ms, of which "
            f"the audit evidence bundle {bundle_s * 1000:.1f} ms; the API download of that file "
            f"{get_s * 1000:.1f} ms"
        )
        print(
            f"export size={size} zip_vs_plain={rate['zip thread'] / plain:.2f} "
            f"tar_vs_plain={rate['tar inline'] / plain:.2f} "
            f"floor_vs_export={floor_rate / rate['tar inline']:.2f} "
            f"small_files_per_s={per_s['zip']:.0f} "
            f"hash_thread_gain={rate['zip thread'] / rate['zip inline']:.2f}"
        )
        return 0
    except CheckFailed as exc:
        print(f"export: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        run_cleanups(cleanups)


if __name__ == "__main__":
    sys.exit(main())
