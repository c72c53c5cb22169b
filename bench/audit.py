"""Benchmark of the audit log on a private PostgreSQL (fsync on): appends, /audit latency, verification.

Phases, each printing its figures:

1. appends to one tenant's chain with 1 writer, then with 16 writer *processes* (each its own connection),
   as bare ``record()`` calls (autocommit) and each inside its own ``transaction.atomic()``;
2. a chain of 1,000,000 events in one tenant (``--events``), loaded with COPY, then ANALYZE, with a signed
   checkpoint every 1,000 events, each also written to the witness (blob storage);
3. full verification of that chain from genesis (``chain.verify(full=True)``: events, checkpoint signatures,
   the witness), and the offline verifier's standard-library encoder on the first 200,000 events;
4. ``/audit`` latency through Django's test client, p50/p95 over unfiltered pages (newest, deep keyset pages)
   and filtered ones (type globs, year, date range, actor, combinations);
5. remembering breaks: an event in the middle of the chain is edited, a full verification finds and keeps the
   break, an operator acknowledges it, and a full verification passes over it to the end.

Final line::

    audit appends_per_s_16w=<a> page_p95_ms=<b> verify_events_per_s=<c>

Run from the repository root: ``python bench/audit.py [--events N] [--quick] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start_database(url: str | None) -> tuple[str, Any]:
    if url:
        return url, lambda: None
    from kodori.devtools.servers import PostgresServer, free_port, new_password

    root = Path(tempfile.mkdtemp(prefix="kodori-bench-audit-"))
    server = PostgresServer(root / "pg", free_port(), new_password()).start()

    def cleanup() -> None:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    return server.url, cleanup


def setup_django(database_url: str) -> None:
    os.environ["DJANGO_ENV"] = "test"
    os.environ["DATABASE_URL"] = database_url
    os.environ["KODORI_STATE_DIR"] = tempfile.mkdtemp(prefix="kodori-bench-state-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kodori.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- 1. appends -----------------------------------------------------------------------------------------


def _append(tenant_id: int, count: int, barrier: Any, results: Any, atomic: bool) -> None:
    from contextlib import nullcontext

    from django.db import connection, transaction

    from audit import payloads, services
    from audit.models import EventType
    from tenants.models import Tenant

    tenant = Tenant.objects.get(pk=tenant_id)
    connection.ensure_connection()
    barrier.wait()
    started = time.perf_counter()
    for i in range(count):
        payload = payloads.blob_uploaded(blob_id=f"{os.getpid()}-{i}", name="bench.bin", size=i)
        with transaction.atomic() if atomic else nullcontext():
            services.record(tenant, EventType.BLOB_UPLOADED, payload=payload)
    results.put((started, time.perf_counter(), count))
    connection.close()


def bench_appends(writers: int, each: int, *, atomic: bool = False) -> float:
    """``atomic``: each append inside its own ``transaction.atomic()``, as a service's action would be."""
    from django.db import connections

    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug=f"appends-{writers}w-{atomic}", name=f"Appends {writers}w")
    connections.close_all()  # children must not share the parent's socket
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    procs = [
        ctx.Process(target=_append, args=(tenant.pk, each, barrier, results, atomic)) for _ in range(writers)
    ]
    for proc in procs:
        proc.start()
    done = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    total = sum(n for _, _, n in done)
    seconds = max(end for _, end, _ in done) - min(start for start, _, _ in done)
    rate = total / seconds
    from audit.chain import verify

    status = verify(tenant, full=True)
    assert status.ok and status.verified_seq == total, status
    how = "in a transaction each" if atomic else "autocommit"
    print(
        f"appends: {writers:>2} writer(s) x {each} ({how}) = {total} events in {seconds:.2f}s: {rate:,.0f}/s"
    )
    return rate


# --- 2. a large chain ------------------------------------------------------------------------------------


def _kind(i: int) -> tuple[str, dict[str, Any]]:
    r = i % 1000
    if r == 0:
        return "tenant-kms.rotated", {
            "fromProvider": "aws-kms",
            "fromKeyIdSuffix": f"{i:012x}",
            "toProvider": "gcp-kms",
            "toKeyIdSuffix": f"{i + 1:012x}",
        }
    if r == 500:
        return "tenant-kms.verify-failed", {
            "keyRowId": 1,
            "provider": "aws-kms",
            "keyIdSuffix": "a1b2c3d4e5f6",
            "error": "AccessDenied",
        }
    if r < 12:
        return "membership.added", {
            "userId": i,
            "email": f"p{i}@big.test",
            "role": "member",
            "createdAccount": True,
        }
    if r < 600:
        return "blob.uploaded", {"blobId": i, "name": f"file-{i}.bin", "size": i * 7, "keyVersion": 1}
    if r < 900:
        return "blob.downloaded", {"blobId": i - 300, "name": f"file-{i - 300}.bin", "range": ""}
    return "blob.deleted", {"blobId": i - 400, "name": f"file-{i - 400}.bin", "size": 1}


def load_chain(n: int) -> Any:
    from django.db import connection

    from audit.encoding import canonical_json, event_hash, format_time
    from audit.verify_bundle import GENESIS_HASH
    from bench.support import make_user
    from tenants.models import Membership, Role, Tenant

    tenant = Tenant.objects.create(slug="big", name="Big Co")
    owner = make_user("owner@big.test")
    Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    step = timedelta(seconds=(datetime(2026, 11, 1, tzinfo=UTC) - start).total_seconds() / n)
    prev = GENESIS_HASH
    began = time.perf_counter()
    columns = (
        "tenant_id, seq, type, created_at, actor_id, actor_name, actor_email, request_id, ip, payload, "
        "prev_hash, hash"
    )
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY audit_auditevent ({columns}) FROM STDIN") as copy,
    ):
        for seq in range(1, n + 1):
            kind, payload = _kind(seq)
            actor = seq % 21
            created = start + step * seq
            record = {
                "seq": seq, "tenant": tenant.pk, "type": kind, "created_at": format_time(created),
                "actor_id": None if actor == 0 else 1000 + actor,
                "actor_name": "system" if actor == 0 else f"User {actor}",
                "actor_email": "" if actor == 0 else f"user{actor}@big.test",
                "request_id": f"{seq:032x}", "ip": "203.0.113.7", "payload": payload, "prev_hash": prev,
            }  # fmt: skip
            prev = event_hash(record)
            copy.write_row((tenant.pk, seq, kind, created, record["actor_id"], record["actor_name"],
                            record["actor_email"], record["request_id"], record["ip"],
                            canonical_json(payload).decode(), record["prev_hash"], prev))  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditevent")
    seconds = time.perf_counter() - began
    print(f"load: {n:,} events generated, hashed and COPYed in {seconds:.1f}s ({n / seconds:,.0f}/s)")
    return tenant, owner


def sign_every(tenant: Any, every: int) -> int:
    """A signed checkpoint of every ``every``-th event, in the database and in the witness."""
    from django.db import connection
    from django.utils import timezone

    from audit import signing, witness
    from audit.encoding import format_time
    from audit.models import Checkpoint

    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq, hash FROM audit_auditevent WHERE tenant_id = %s AND seq %% %s = 0 ORDER BY seq",
            [tenant.pk, every],
        )
        heads = cursor.fetchall()
    checkpoints = []
    for seq, hash_ in heads:
        signed_at = timezone.now()
        key_id, public_key, signature = signing.sign(tenant.pk, seq, hash_, format_time(signed_at))
        checkpoints.append(
            Checkpoint(tenant=tenant, seq=seq, hash=hash_, signed_at=signed_at, key_id=key_id,
                       public_key=public_key, signature=signature)
        )  # fmt: skip
    Checkpoint.objects.bulk_create(checkpoints)
    for cp in checkpoints:
        witness.write(cp)
    print(
        f"load: {len(checkpoints):,} checkpoints signed and witnessed in {time.perf_counter() - began:.1f}s"
    )
    return len(checkpoints)


# --- 3. verification ------------------------------------------------------------------------------------


def bench_verify(tenant: Any, n: int, checkpoints: int) -> float:
    from audit import chain, verify_bundle

    began = time.perf_counter()
    status = chain.verify(tenant, full=True)
    seconds = time.perf_counter() - began
    assert status.ok and status.verified_seq == n and not status.witness_error, status
    rate = n / seconds
    print(
        f"verify: {n:,} events and {checkpoints:,} checkpoints (signatures, witness) from PostgreSQL in "
        f"{seconds:.2f}s: {rate:,.0f} events/s"
    )
    sample = list(chain.iter_records(tenant.pk, 0, min(n, 200_000)))
    began = time.perf_counter()
    verifier = verify_bundle.ChainVerifier(tenant=tenant.pk)
    assert verifier.run(sample) is None
    seconds = time.perf_counter() - began
    print(f"verify: offline verifier (stdlib json) {len(sample) / seconds:,.0f} events/s in memory")
    return rate


# --- 4. page latency ------------------------------------------------------------------------------------


def _timed(client: Any, url: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return times


def bench_pages(owner: Any, n: int, rounds: int) -> tuple[float, float]:
    from django.test import Client

    client = Client()
    client.force_login(owner)
    rng = random.Random(1)
    unfiltered = ["/audit"] + [f"/audit?before={rng.randint(2, n)}" for _ in range(4)]
    filtered = [
        "/audit?types=tenant-kms.*",
        "/audit?types=tenant-kms.*&year=2026",
        "/audit?types=tenant-kms.*&year=2025",
        "/audit?types=membership.*,tenant-kms.rotated",
        "/audit?year=2025",
        "/audit?from=2025-06-01&to=2025-06-30",
        "/audit?actor=user3@big.test",
        "/audit?actor=system&types=blob.deleted",
        f"/audit?types=blob.*&before={n // 2}",
    ]
    client.get("/audit")  # warm up (templates, connection)
    summary = {}
    for label, urls in (("unfiltered", unfiltered), ("filtered", filtered)):
        times: list[float] = []
        for url in urls:
            one = _timed(client, url, rounds)
            print(f"page: {url:<48} p50 {statistics.median(one):6.1f} ms  max {max(one):6.1f} ms")
            times += one
        p95 = statistics.quantiles(times, n=20)[-1]
        summary[label] = p95
        print(
            f"page: {label}: p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, {len(times)} requests"
        )
    return summary["unfiltered"], summary["filtered"]


# --- 5. remembering a break ------------------------------------------------------------------------------


def bench_break(tenant: Any, n: int) -> float:
    from django.db import connection, transaction

    from audit import chain, services
    from audit.models import AcknowledgedVia, ChainBreak

    victim = n // 2
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        cursor.execute(
            "UPDATE audit_auditevent SET actor_name = 'Mallory' WHERE tenant_id = %s AND seq = %s",
            [tenant.pk, victim],
        )
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only")
    began = time.perf_counter()
    status = chain.verify(tenant, full=True)
    seconds = time.perf_counter() - began
    assert status.broken is not None and status.broken.seq == victim, status
    print(f"break: found at #{victim:,} by a full verification in {seconds:.2f}s, kept")
    brk = ChainBreak.objects.get(tenant=tenant)
    services.acknowledge_break(brk, reason="bench", via=AcknowledgedVia.OPERATOR, operator="bench")
    began = time.perf_counter()
    status = chain.verify(tenant, full=True)
    seconds = time.perf_counter() - began
    assert status.ok and status.acknowledged and status.verified_seq == n + 1, status
    rate = (n + 1) / seconds
    print(
        f"break: acknowledged; full verification past it to #{n + 1:,} in {seconds:.2f}s: "
        f"{rate:,.0f} events/s"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 events and fewer rounds")
    parser.add_argument(
        "--database-url", help="use this PostgreSQL instead of a private one (tables are made)"
    )
    parser.add_argument("--appends-only", action="store_true", help="phase 1 only")
    args = parser.parse_args()
    n = 100_000 if args.quick else args.events
    url, cleanup = start_database(args.database_url)
    try:
        setup_django(url)
        bench_appends(1, 1000 if args.quick else 3000)
        rate_16 = bench_appends(16, 100 if args.quick else 500)
        bench_appends(16, 100 if args.quick else 500, atomic=True)
        if args.appends_only:
            return
        tenant, owner = load_chain(n)
        checkpoints = sign_every(tenant, 1000)
        verify_rate = bench_verify(tenant, n, checkpoints)
        p95_unfiltered, p95_filtered = bench_pages(owner, n, 10 if args.quick else 25)
        bench_break(tenant, n)
    finally:
        cleanup()
    page_p95 = max(p95_unfiltered, p95_filtered)
    print(
        f"audit appends_per_s_16w={rate_16:.0f} page_p95_ms={page_p95:.1f} "
        f"verify_events_per_s={verify_rate:.0f}"
    )


if __name__ == "__main__":
    main()
