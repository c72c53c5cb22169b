"""Benchmark of the scrub: stored bytes authenticated per second by the real walk, against raw AES-GCM.

Starts a private PostgreSQL (fsync on) and Redis, or uses ``DATABASE_URL`` / ``REDIS_URL`` when both are set,
and a temporary filesystem blob store. Seeds one tenant per size class through the real upload service
(``blobs.uploads.Upload``: data key, encryption, ``ready`` flip with its audit event): by default 400 blobs of
1 KiB, 100 of 64 KiB, 60 of 1 MiB and 12 of 16 MiB (about 270 MiB stored; a quarter with ``--quick``). Then,
for ``--rounds`` rounds, alternating which goes first, in this one process and thread:

- **scrub**: ``blobs.scrub.run(rate=0, restart=True)``, the walk the command and the periodic task run: keyset
  pages of blobs, for each the object's length, the data key (TKV cached), the header, every chunk through
  ``RandomAccessReader.verify_chunks`` in ~1 MiB batches, ``damage.verified`` and the pass checkpoint (two
  committed transactions per blob). Throughput = stored bytes / wall-clock seconds. Each size class is also
  scrubbed alone (``run(tenant=...)``), which shows the per-blob cost the small blobs pay.
- **raw**: pyca's ``AESGCM.decrypt(nonce, sealed_chunk, None)`` over as many sealed 16 KiB chunks as the scrub
  authenticated (64 distinct chunks in memory, cycled): the floor of any authentication of these chunks.

The store's files were just written, so they are read from the page cache: this measures the scrub's CPU and
database cost, not the disk (which ``BLOB_SCRUB_BYTES_PER_SECOND`` exists to spare). Medians over rounds; the
CPU seconds of this process are printed beside the wall clock (PostgreSQL's own work is not in them). At the
end one blob is damaged on purpose and the scrub must find it at the right chunk, else the figures mean
nothing and the script exits 1. Final line::

    scrub bytes=<stored bytes per round> scrub_MBps=<x> raw_gcm_MBps=<y> ratio=<x/y>

Run from the repository root: ``python bench/scrub.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import django_environment, run_cleanups, start_django, start_servers  # noqa: E402

MIB = 1024 * 1024
CHUNK = 16 * 1024
# (size in bytes, how many): small files where the per-blob cost shows, large ones where the crypto does.
SIZES = [(1024, 400), (64 * 1024, 100), (MIB, 60), (16 * MIB, 12)]


class CheckFailed(Exception):
    """The scrub did not find damage it had to find: its throughput would mean nothing."""


def setup_django(root: Path, database_url: str, redis_url: str) -> None:
    os.environ.update(
        {
            **django_environment(root, database_url, redis_url),
            "BLOB_STORAGE": "filesystem",
            "BLOB_ROOT": str(root / "blobs"),
        }
    )
    start_django()


def seed(sizes: list[tuple[int, int]]) -> list[tuple[Any, int, int]]:
    """One tenant per size class, filled through the upload service: [(tenant, size, count)]."""
    import secrets

    from bench.support import make_user
    from blobs.uploads import Upload
    from tenants.models import Membership, Role, Tenant

    run = secrets.token_hex(4)
    user = make_user(f"scrub-bench-{run}@example.test")
    piece = os.urandom(MIB)
    classes = []
    for size, count in sizes:
        tenant = Tenant.objects.create(slug=f"scrub-{size}-{run}", name=f"Scrub bench {size} B")
        Membership.objects.create(user=user, tenant=tenant, role=Role.OWNER)
        for index in range(count):
            upload = Upload.begin(tenant, user, f"f{index:05d}.bin", "application/octet-stream", size)
            for start in range(0, size, MIB):
                upload.write(piece[: min(MIB, size - start)])
            upload.finish(expected_size=size)
        classes.append((tenant, size, count))
    return classes


def chunks_of(size: int) -> int:
    return size // CHUNK + 1


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def scrub_once(tenant: Any = None) -> tuple[float, float, int]:
    from blobs import scrub

    wall, cpu, report = timed(lambda: scrub.run(tenant=tenant, rate=0, restart=True))
    if report is None or report.findings or report.stopped != scrub.Stop.FINISHED:
        raise CheckFailed(f"the scrub did not finish clean: {report and report.lines()}")
    return wall, cpu, int(report.bytes_read)


def raw_gcm(chunks: int) -> tuple[float, float]:
    """``chunks`` calls of ``AESGCM.decrypt`` on sealed 16 KiB chunks."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes = AESGCM(os.urandom(32))
    nonces = [n.to_bytes(12, "big") for n in range(64)]
    sealed = [(nonce, aes.encrypt(nonce, os.urandom(CHUNK), None)) for nonce in nonces]
    decrypt = aes.decrypt

    def work() -> None:
        for i in range(chunks):
            nonce, data = sealed[i & 63]
            decrypt(nonce, data, None)

    wall, cpu, _ = timed(work)
    return wall, cpu


def _open_and_close(open_stored: Callable[[str], Any], key: str) -> int:
    source, length = open_stored(key)
    source.close()
    return int(length)


def per_blob_costs(tenant: Any) -> str:
    """Median milliseconds of each fixed step of one blob's check, over the blobs of ``tenant``."""
    from blobs import damage, scrub
    from blobs.models import Blob
    from blobs.storage import open_stored
    from encryption import keyring

    blobs = list(Blob.objects.for_tenant(tenant).select_related("tenant").order_by("pk")[:100])
    probe = scrub.ScrubPass.objects.create(tenant=tenant, status=scrub.PassStatus.ABANDONED)
    steps: dict[str, Callable[[Any], Any]] = {
        "open the object and read its length": lambda b: _open_and_close(open_stored, b.storage_key),
        "data key (query + unwrap)": lambda b: keyring.open_data_key(b.tenant, b.pk),
        "damage.verified (transaction)": lambda b: damage.verified(b, found_by="bench"),
        "pass checkpoint (one UPDATE)": lambda b: probe.save(),
        "scrub_blob in all": lambda b: scrub.scrub_blob(b),
    }
    out = []
    for name, step in steps.items():
        times = []
        for blob in blobs:
            started = time.perf_counter()
            step(blob)
            times.append(time.perf_counter() - started)
        out.append(f"{name} {statistics.median(times) * 1000:.2f}")
    probe.delete()
    return ", ".join(out)


def check_damage_is_found(classes: list[tuple[Any, int, int]]) -> None:
    """Flip one byte of chunk 5 of a 1 MiB blob: the scrub must report it there, then forget it on restore."""
    from blobs import scrub
    from blobs.models import Blob
    from blobs.storage import blob_storage
    from encryption.format import envelope

    tenant = next(t for t, size, _ in classes if size == MIB)
    blob = Blob.objects.for_tenant(tenant).order_by("pk").first()
    assert blob is not None
    path = Path(blob_storage().path(blob.storage_key))
    original = path.read_bytes()
    at = envelope.HEADER_SIZE + 5 * (CHUNK + 16) + 100
    path.write_bytes(original[:at] + bytes([original[at] ^ 1]) + original[at + 1 :])
    report = scrub.run(tenant=tenant, rate=0, restart=True)
    found = [(f.blob.pk, f.damage, f.chunk) for f in report.findings] if report else []
    path.write_bytes(original)
    if found != [(blob.pk, "chunk", 5)]:
        raise CheckFailed(f"damage at chunk 5 of blob {blob.pk} was reported as {found}")
    scrub.run(tenant=tenant, rate=0, restart=True)  # lifts the mark again


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/scrub.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the blobs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of scrub + raw (default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    sizes = [(size, max(1, count // 4)) for size, count in SIZES] if args.quick else SIZES

    root = Path(tempfile.mkdtemp(prefix="kodori-bench-scrub-"))
    cleanups: list[Callable[[], None]] = [lambda: shutil.rmtree(root, ignore_errors=True)]
    try:
        database_url, redis_url = start_servers(root, cleanups)
        setup_django(root, database_url, redis_url)
        from django.db import connection

        from encryption.format import envelope

        started = time.perf_counter()
        classes = seed(sizes)
        blobs = sum(count for _, _, count in classes)
        stored = sum(envelope.ciphertext_size(size) * count for _, size, count in classes)
        chunks = sum(chunks_of(size) * count for _, size, count in classes)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            (pg,) = cursor.fetchone()
        print(
            f"scrub: {blobs:,} blobs, {stored / MIB:,.1f} MiB stored, {chunks:,} chunks; {args.rounds} "
            f"round(s); PostgreSQL {pg} (fsync on), filesystem store (page cache), {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; seeded in {time.perf_counter() - started:.1f} s"
        )
        scrub_once()  # warm-up: caches, the TKVs, the query plans

        scrub_rates: list[float] = []
        raw_rates: list[float] = []
        scrub_cpu: list[float] = []
        raw_cpu: list[float] = []
        for round_no in range(1, args.rounds + 1):
            order = ["scrub", "raw"] if round_no % 2 else ["raw", "scrub"]
            parts = []
            for kind in order:
                if kind == "scrub":
                    wall, cpu, read = scrub_once()
                    if read != stored:
                        raise CheckFailed(f"the scrub read {read:,} bytes, not the {stored:,} stored")
                    scrub_rates.append(stored / wall / 1e6)
                    scrub_cpu.append(stored / cpu / 1e6)
                    parts.append(f"scrub {stored / wall / 1e6:,.0f} MB/s ({blobs / wall:,.0f} blobs/s)")
                else:
                    wall, cpu = raw_gcm(chunks)
                    raw_bytes = chunks * (CHUNK + 16)
                    raw_rates.append(raw_bytes / wall / 1e6)
                    raw_cpu.append(raw_bytes / cpu / 1e6)
                    parts.append(f"raw AESGCM.decrypt {raw_bytes / wall / 1e6:,.0f} MB/s")
            print(f"  round {round_no} (load average {os.getloadavg()[0]:.1f}): {', '.join(parts)}")

        for tenant, size, count in classes:
            walls = [scrub_once(tenant)[0] for _ in range(args.rounds)]
            wall = statistics.median(walls)
            class_bytes = envelope.ciphertext_size(size) * count
            print(
                f"  {count:>4} blobs of {size / 1024:>6,.0f} KiB alone: "
                f"{class_bytes / wall / 1e6:>7,.1f} MB/s, {count / wall:>6,.0f} blobs/s, "
                f"{wall / count * 1000:6.2f} ms a blob (median)"
            )

        small = next(t for t, size, _ in classes if size == SIZES[0][0])
        print(f"  per-blob steps, ms (median over the {SIZES[0][0]:,}-byte blobs): {per_blob_costs(small)}")

        check_damage_is_found(classes)
        print("  check: a flipped byte in chunk 5 of a 1 MiB blob was found there, and the mark lifted again")

        scrub_mbps, raw_mbps = statistics.median(scrub_rates), statistics.median(raw_rates)
        print(
            f"  medians: scrub {scrub_mbps:,.0f} MB/s, raw {raw_mbps:,.0f} MB/s (wall); per CPU second "
            f"of this process: scrub {statistics.median(scrub_cpu):,.0f} MB, "
            f"raw {statistics.median(raw_cpu):,.0f} MB"
        )
        print(
            f"scrub bytes={stored} scrub_MBps={scrub_mbps:.0f} raw_gcm_MBps={raw_mbps:.0f} "
            f"ratio={scrub_mbps / raw_mbps:.2f}"
        )
        return 0
    except CheckFailed as exc:
        print(f"scrub: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        run_cleanups(cleanups)


if __name__ == "__main__":
    sys.exit(main())
