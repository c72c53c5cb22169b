"""Benchmark of the re-wrap walk on PostgreSQL (fsync on): DEKs per second, against a raw batched UPDATE.

Starts a private PostgreSQL and Redis (or uses ``DATABASE_URL`` / ``REDIS_URL`` when both are set: the
database must hold no data keys, because every load begins with ``TRUNCATE data_keys``, and no Celery worker
may listen on that Redis). ``KODORI_REWRAP_AFTER_ROTATION`` is off, so rotations start no job by themselves.

Setup: tenant A with the kodori-managed key (``keyring.active_tkv`` provisions it) and ``--rows`` data keys
(1,000,000; 100,000 with ``--quick``), and tenant B with a tenth as many under a retired version of its own:
the walk must not touch them. Every data key is real: a random 32-byte DEK sealed with ``aead.seal`` under
its TKV and ``keyring.dek_aad``, loaded with COPY, B's rows interleaved with A's (one in eleven).

Each measurement starts from a fresh load: ``TRUNCATE data_keys`` (and the empty blobs table that points at
it), ``add_key_version(A)`` for the version the rows are sealed under, COPY, a rotation of A to a new
(Kodori-managed) KEK so the rows sit under a retired KEK and a new version is active,
``VACUUM (ANALYZE) data_keys``, ``CHECKPOINT``. Then one of:

- **walk**: ``rewrap.start_rewrap(A)`` (not timed), then ``walk.walk(job.pk)`` in this process, as the
  ``run_rewrap`` task runs it, timed from the first batch until it returns FINISHED (so including the last
  step that destroys the emptied version). DEKs/s = rows moved / seconds. Then checked: the job completed
  with ``done`` = rows, nothing is left under the old version, the old version is destroyed (status and
  empty key material), 1,000 sampled DEKs open through ``keyring.open_data_key`` (cache cleared first) and
  equal the originals, and B's rows are byte for byte what was loaded. Any failure exits non-zero.
- **raw**: the same rows moved with no crypto, batched like the walk: ``SELECT id, wrapped_dek … WHERE
  tenant_id AND tkv_id = old AND id > cursor ORDER BY id LIMIT batch`` with binary results (as the walk
  reads), then the walk's own statement
  (``walk._MOVE``: ``UPDATE data_keys AS d SET tkv_id = new, wrapped_dek = v.w FROM unnest(ids, wrapped)
  … WHERE d.id = v.id AND d.tkv_id = old AND d.tenant_id = …``, binary arrays, as the walk binds it)
  writing the same bytes back, one committed transaction per batch, on the same Django connection.

Why a reload before each measurement, rather than the walk, a VACUUM, then the baseline on the same table:
a table that was just rewritten and vacuumed is half free space and its pages were written since the last
checkpoint, so a second pass over it is cheaper. ``--order-check`` also runs the raw UPDATE on the walked,
vacuumed table: on 100,000 rows it wrote 49 instead of 72 MiB of WAL and ran 5 to 13% faster than on a fresh
load, which would flatter the baseline. With a reload both start from the same freshly loaded, vacuumed,
checkpointed table, and which of the two runs first in a round made no consistent difference. Rounds still
alternate (odd rounds raw first) and medians are used: on a shared 2-vCPU machine wall-clock time moves by
±30% and more.

Also printed for each measurement: CPU seconds of this process and of its server process (from ``/proc``,
when the server runs on this machine) and rows per CPU second, a second view that other work disturbs less
than wall-clock time (not entirely: on shared vCPUs CPU time stretches too); the WAL written
(``pg_stat_wal``); the table's size with its indexes (``pg_total_relation_size``) before, after, and after
``VACUUM (ANALYZE) data_keys`` (the walk queues that as a Celery task when it finishes; here it is called
directly); the share of HOT updates (``n_tup_hot_upd / n_tup_upd`` of ``pg_stat_user_tables``) and how often
autovacuum ran meanwhile. ``--fillfactor N`` sets the table's fillfactor before loading (and resets it at
the end).

Final line::

    rewrap deks_per_s=<a> ratio_vs_raw_update=<b>

``a`` is the median walk rate in DEKs per second, ``b`` the median walk rate over the median raw UPDATE rate.
Targets: a ≥ 20,000 (issue 8) and b ≥ 0.9 (issue 17; it was 0.5 in issue 8).

Run from the repository root: ``python bench/rewrap.py [--rows N] [--quick] [--rounds N] [--batch-size N]
[--fillfactor N] [--order-check] [--profile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import django_environment, run_cleanups, start_django, start_servers  # noqa: E402

SAMPLE = 1_000
MIB = 1024 * 1024
TARGET_RATE = 20_000
TARGET_RATIO = 0.9


class CheckFailed(Exception):
    """The walk or the baseline did not leave the table as it must; the benchmark's figures mean nothing."""


# --- Servers and settings ----------------------------------------------------------------------------------


def setup_django(root: Path, database_url: str, redis_url: str, batch_size: int | None) -> None:
    if batch_size is not None:
        os.environ["KODORI_REWRAP_BATCH_SIZE"] = str(batch_size)
    os.environ.update(
        {
            **django_environment(root, database_url, redis_url),
            # The benchmark starts its jobs itself, after the load.
            "KODORI_REWRAP_AFTER_ROTATION": "false",
        }
    )
    start_django()


# --- The table ---------------------------------------------------------------------------------------------


def sql(statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def checkpoint() -> None:
    """Write out the load's dirty pages now, so the measurement does not pay for them (needs a superuser)."""
    from django.db import DatabaseError

    with contextlib.suppress(DatabaseError):
        sql("CHECKPOINT")


@dataclass(frozen=True)
class Size:
    heap: int
    indexes: int
    total: int

    def __str__(self) -> str:
        heap, indexes = self.heap / MIB, self.indexes / MIB
        return f"{self.total / MIB:,.0f} MiB (heap {heap:,.0f} + indexes {indexes:,.0f})"


def size() -> Size:
    (heap, indexes, total), *_ = sql(
        "SELECT pg_relation_size('data_keys'), pg_indexes_size('data_keys'), "
        "pg_total_relation_size('data_keys')"
    )
    return Size(heap, indexes, total)


def index_sizes() -> str:
    rows = sql(
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'data_keys'::regclass ORDER BY c.relname"
    )
    return ", ".join(f"{name} {n / MIB:,.0f}" for name, n in rows)


def indexes_on(column: str) -> list[str]:
    rows = sql(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'data_keys'::regclass AND a.attname = %s ORDER BY c.relname",
        [column],
    )
    return [name for (name,) in rows]


def table_stats() -> tuple[int, int, int, int]:
    """(updates, HOT updates, autovacuum runs) of data_keys and the server's WAL bytes, so far."""
    # This backend's pending counts are flushed when it goes idle, i.e. before the next query.
    sql("SELECT pg_stat_force_next_flush()")
    (upd, hot, autovacuums, wal), *_ = sql(
        "SELECT n_tup_upd, n_tup_hot_upd, autovacuum_count, (SELECT wal_bytes FROM pg_stat_wal) "
        "FROM pg_stat_user_tables WHERE relid = 'data_keys'::regclass"
    )
    return int(upd), int(hot), int(autovacuums), int(wal)


def truncate(*, restart: bool = False) -> None:
    """Empty data_keys (and the empty blobs table that points at it) with their counters: TRUNCATE fires
    no row or statement triggers, so the per-version data-key counts and their deltas are reset here."""
    sql(
        "TRUNCATE data_keys, blobs, data_key_count_deltas, blob_stat_deltas"
        + (" RESTART IDENTITY" if restart else "")
    )
    sql("UPDATE tenant_key_versions SET data_key_count = 0 WHERE data_key_count <> 0")
    sql("DELETE FROM blob_tenant_stats")


def reset_table() -> None:
    """Leave data_keys as the benchmark found it: empty, default fillfactor."""
    truncate()
    sql("ALTER TABLE data_keys RESET (fillfactor)")


def vacuum() -> float:
    """``VACUUM (ANALYZE) data_keys``, as ``encryption.tasks.vacuum_data_keys`` runs it; seconds."""
    started = time.perf_counter()
    sql("VACUUM (ANALYZE) data_keys")
    return time.perf_counter() - started


# --- The data ----------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Tenant A's DEKs (resealed at every load: the version id is in their associated data) and tenant B's
    rows, sealed once under B's retired version."""

    tenant: Any
    other: Any
    other_tkv: Any
    blob_ids: list[uuid.UUID]
    deks: list[bytes]
    other_rows: list[tuple[uuid.UUID, bytes]]
    other_deks: dict[uuid.UUID, bytes]
    sample: list[int]
    other_fingerprint: tuple[int, str] = (0, "")


def rotate_kek(tenant: Any) -> Any:
    """Rotate ``tenant`` to a new Kodori-managed KEK (the current one retires); the new active version."""
    from encryption import keyring, services
    from encryption.models import KeyStatus, TenantKey, WrapMethod

    kek = TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING)
    services.activate_key(kek)
    return keyring.active_tkv(tenant)


def make_dataset(rows: int) -> Dataset:
    from encryption import aead, keyring
    from encryption.format.envelope import FORMAT_VERSION
    from tenants.models import Tenant

    run = uuid.uuid4().hex[:8]
    tenant = Tenant.objects.create(slug=f"rewrap-bench-{run}", name="Re-wrap bench")
    other = Tenant.objects.create(slug=f"rewrap-other-{run}", name="Re-wrap bench, other tenant")
    keyring.active_tkv(tenant)  # provisions the kodori-managed key
    other_tkv = keyring.active_tkv(other)
    other_key = keyring.tkv_key(other_tkv)
    other_deks = {uuid.uuid4(): os.urandom(keyring.DEK_SIZE) for _ in range(rows // 10)}
    other_rows = [
        (blob_id, aead.seal(other_key, dek, keyring.dek_aad(other.pk, blob_id, other_tkv.pk, FORMAT_VERSION)))
        for blob_id, dek in other_deks.items()
    ]
    rotate_kek(other)  # B's rows are under a retired key: a walk of A must still leave them
    rng = random.Random(8)
    return Dataset(
        tenant=tenant,
        other=other,
        other_tkv=other_tkv,
        blob_ids=[uuid.uuid4() for _ in range(rows)],
        deks=[os.urandom(keyring.DEK_SIZE) for _ in range(rows)],
        other_rows=other_rows,
        other_deks=other_deks,
        sample=rng.sample(range(rows), min(SAMPLE, rows)),
    )


def other_fingerprint(ds: Dataset) -> tuple[int, str]:
    (count, digest), *_ = sql(
        "SELECT count(*), "
        "md5(string_agg(tkv_id::text || ':' || encode(wrapped_dek, 'hex'), ',' ORDER BY id)) "
        "FROM data_keys WHERE tenant_id = %s",
        [ds.other.pk],
    )
    return int(count), str(digest)


def load(ds: Dataset) -> tuple[Any, Any]:
    """A fresh table: every data key of A sealed under a new version, B's rows, then a rotation of A.

    Returns (source, target): the version the rows are under (now retired) and the active one.
    """
    from django.db import connection
    from django.db.models import F
    from django.utils import timezone

    from encryption import aead, keyring
    from encryption.format.envelope import FORMAT_VERSION
    from encryption.models import TenantKeyVersion

    started = time.perf_counter()
    truncate(restart=True)
    tenant, other, n = ds.tenant, ds.other, len(ds.deks)
    source = keyring.add_key_version(tenant)
    key = keyring.tkv_key(source)
    wrapped = [
        aead.seal(key, dek, keyring.dek_aad(tenant.pk, blob_id, source.pk, FORMAT_VERSION))
        for blob_id, dek in zip(ds.blob_ids, ds.deks, strict=True)
    ]
    sealed = time.perf_counter()
    now = timezone.now()
    columns = "tenant_id, blob_id, tkv_id, wrapped_dek, format_version, created_at"
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY data_keys ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        # Binary: about twice as fast as text here, most of it in this process.
        copy.set_types(["int8", "uuid", "int8", "bytea", "int2", "timestamptz"])
        others = iter(ds.other_rows)
        for i in range(n):
            copy.write_row((tenant.pk, ds.blob_ids[i], source.pk, wrapped[i], FORMAT_VERSION, now))
            if i % 10 == 9:
                blob_id, other_wrapped = next(others)
                copy.write_row((other.pk, blob_id, ds.other_tkv.pk, other_wrapped, FORMAT_VERSION, now))
    copied = time.perf_counter()
    # As if uploads had made them: the version's wrap counter counts its DEKs.
    TenantKeyVersion.objects.filter(pk=source.pk).update(wrap_count=F("wrap_count") + n)
    target = rotate_kek(tenant)  # walks move data keys off retired KEKs only
    vacuum()
    checkpoint()
    ds.other_fingerprint = other_fingerprint(ds)
    print(
        f"    load: {n:,} + {ds.other_fingerprint[0]:,} rows: sealed in {sealed - started:.1f} s, "
        f"COPY {copied - sealed:.1f} s, VACUUM + CHECKPOINT {time.perf_counter() - copied:.1f} s; "
        f"{size()}"
    )
    return source, target


# --- The two measurements ----------------------------------------------------------------------------------


def backend_pid() -> int:
    ((pid,),) = sql("SELECT pg_backend_pid()")
    return int(pid)


def server_cpu(pid: int) -> float | None:
    """CPU seconds of the server process ``pid`` so far; None when the server is not on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    kind: str
    rows: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    wal: int
    before: Size
    after: Size
    vacuumed: Size
    vacuum_seconds: float
    updates: int
    hot: int
    autovacuums: int

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_rate(self) -> float | None:
        """Rows per CPU second of this process and its server process together: much less disturbed than
        wall-clock time by other work on a shared machine (autovacuum and the WAL writer are not counted)."""
        if self.server_cpu is None:
            return None
        return self.rows / (self.client_cpu + self.server_cpu)

    def report(self) -> str:
        hot = self.hot / self.updates if self.updates else 0.0
        server = "n/a" if self.server_cpu is None else f"{self.server_cpu:.1f} s"
        per_cpu = "" if self.cpu_rate is None else f" = {self.cpu_rate:,.0f} per CPU s"
        return (
            f"{self.rows:,} rows in {self.seconds:.1f} s = {self.rate:,.0f}/s; CPU {self.client_cpu:.1f} s "
            f"here + {server} server{per_cpu}; WAL {self.wal / MIB:,.0f} MiB\n"
            f"          HOT {hot:.1%} of {self.updates:,} updates, autovacuum ran {self.autovacuums}x; "
            f"size {self.before} -> {self.after}, {self.vacuumed.total / MIB:,.0f} MiB after VACUUM "
            f"({self.vacuum_seconds:.1f} s)"
        )


def measure(kind: str, move: Callable[[], int]) -> Phase:
    before = size()
    upd0, hot0, av0, wal0 = table_stats()
    pid = backend_pid()
    server0 = server_cpu(pid)
    cpu0, started = time.process_time(), time.perf_counter()
    rows = move()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    server1 = server_cpu(pid)
    if backend_pid() != pid:  # reconnected meanwhile: the server's CPU time is not all in one process
        server1 = None
    upd1, hot1, av1, wal1 = table_stats()
    after = size()
    vacuum_seconds = vacuum()
    return Phase(
        kind=kind,
        rows=rows,
        seconds=seconds,
        client_cpu=cpu,
        server_cpu=None if server0 is None or server1 is None else server1 - server0,
        wal=wal1 - wal0,
        before=before,
        after=after,
        vacuumed=size(),
        vacuum_seconds=vacuum_seconds,
        updates=upd1 - upd0,
        hot=hot1 - hot0,
        autovacuums=av1 - av0,
    )


def run_walk(ds: Dataset, source: Any, target: Any, profile: bool) -> Phase:
    from encryption import keyring, rewrap
    from encryption.models import DataKey, RewrapStatus, TenantKeyVersion, VersionStatus
    from encryption.rewrap import walk

    n = len(ds.deks)
    job = rewrap.start_rewrap(ds.tenant)
    if job is None or job.total != n or job.target_tkv_id != target.pk:
        raise CheckFailed(f"start_rewrap made {job!r} for {n:,} data keys to version {target.pk}")
    keyring.cache.clear()  # as a worker that has not unwrapped either version yet
    profiler = cProfile.Profile() if profile else None

    def move() -> int:
        if profiler is not None:
            profiler.enable()
        outcome = walk.walk(job.pk)
        if profiler is not None:
            profiler.disable()
        if outcome != walk.Outcome.FINISHED:
            raise CheckFailed(f"walk returned {outcome}")
        job.refresh_from_db()
        return int(job.done)

    phase = measure("walk", move)
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())

    if job.status != RewrapStatus.COMPLETED:
        raise CheckFailed(f"job {job.pk} is {job.status}: {job.last_error}")
    if job.done != n or job.unreadable:
        raise CheckFailed(f"job {job.pk} moved {job.done:,} of {n:,} ({job.unreadable:,} unreadable)")
    left = DataKey.objects.filter(tkv_id=source.pk).count()
    moved = DataKey.objects.for_tenant(ds.tenant).filter(tkv_id=target.pk).count()
    if left or moved != n:
        raise CheckFailed(f"{left:,} data keys left under the old version, {moved:,} under the new one")
    old = TenantKeyVersion.objects.get(pk=source.pk)
    if old.status != VersionStatus.DESTROYED or bytes(old.wrapped_key):
        raise CheckFailed(f"the old version is {old.status} with {len(bytes(old.wrapped_key))} key bytes")
    if other_fingerprint(ds) != ds.other_fingerprint:
        raise CheckFailed("the other tenant's data keys changed")
    keyring.cache.clear()
    for i in ds.sample:
        if keyring.open_data_key(ds.tenant, ds.blob_ids[i]) != ds.deks[i]:
            raise CheckFailed(f"the DEK of blob {ds.blob_ids[i]} changed")
    for blob_id in list(ds.other_deks)[:100]:
        if keyring.open_data_key(ds.other, blob_id) != ds.other_deks[blob_id]:
            raise CheckFailed(f"the other tenant's DEK of blob {blob_id} changed")
    return phase


def raw_update(tenant_pk: int, source_pk: int, target_pk: int, batch: int) -> int:
    """The walk's reads and writes with no crypto and no checkpoint: keyset batches, one transaction each.

    The SELECT reads binary results, as the walk's does; the UPDATE is the walk's own statement
    (``walk._MOVE``), bound as the walk binds it.
    """
    import psycopg
    from django.db import connection, transaction

    from encryption.rewrap.walk import _MOVE

    moved, cursor_id = 0, 0
    while True:
        with (
            transaction.atomic(),
            connection.wrap_database_errors,
            psycopg.Cursor(connection.connection) as cursor,
        ):
            # Read as the walk reads (binary results), write with the walk's statement.
            cursor.execute(
                "SELECT id, wrapped_dek FROM data_keys "
                "WHERE tenant_id = %s AND tkv_id = %s AND id > %s ORDER BY id LIMIT %s",
                [tenant_pk, source_pk, cursor_id, batch],
                binary=True,
            )
            rows = cursor.fetchall()
            if not rows:
                return moved
            ids = [row[0] for row in rows]
            cursor.execute(
                _MOVE, [target_pk, ids, [row[1] for row in rows], source_pk, tenant_pk], prepare=False
            )
            moved += cursor.rowcount
            cursor_id = ids[-1]


def run_raw(ds: Dataset, source: Any, target: Any, batch: int, kind: str = "raw") -> Phase:
    from encryption.models import DataKey

    n = len(ds.deks)
    phase = measure(kind, lambda: raw_update(ds.tenant.pk, source.pk, target.pk, batch))
    left = DataKey.objects.filter(tkv_id=source.pk).count()
    if phase.rows != n or left:
        raise CheckFailed(f"the raw UPDATE moved {phase.rows:,} of {n:,}; {left:,} left")
    return phase


# --- Report ------------------------------------------------------------------------------------------------


def rates(phases: list[Phase], kind: str) -> list[float]:
    return [p.rate for p in phases if p.kind == kind]


def listed(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def cpu_rates(phases: list[Phase], kind: str) -> list[float]:
    return [p.cpu_rate for p in phases if p.kind == kind and p.cpu_rate is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/rewrap.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="data keys of the walked tenant (1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 data keys")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of walk + raw UPDATE (default 3)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="KODORI_REWRAP_BATCH_SIZE (default: the setting's)"
    )
    parser.add_argument("--fillfactor", type=int, default=None, help="data_keys fillfactor (10-100)")
    parser.add_argument(
        "--order-check",
        action="store_true",
        help="also run the raw UPDATE on the walked, vacuumed table (printed, not used)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the walk (slows it down)")
    args = parser.parse_args(argv)
    rows = args.rows if args.rows is not None else (100_000 if args.quick else 1_000_000)
    if rows < 10 or args.rounds < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--rows must be at least 10, --rounds and --batch-size at least 1")
    if args.fillfactor is not None and not 10 <= args.fillfactor <= 100:
        parser.error("--fillfactor must be between 10 and 100")

    root = Path(tempfile.mkdtemp(prefix="kodori-bench-rewrap-"))
    cleanups: list[Callable[[], None]] = [lambda: shutil.rmtree(root, ignore_errors=True)]
    try:
        database_url, redis_url = start_servers(root, cleanups)
        setup_django(root, database_url, redis_url, args.batch_size)
        from django.conf import settings

        from encryption.models import DataKey

        batch = int(settings.KODORI_REWRAP_BATCH_SIZE)

        if DataKey.objects.exists():
            raise SystemExit("bench/rewrap.py truncates data_keys: point DATABASE_URL at an empty database")
        cleanups.append(reset_table)
        if args.fillfactor is not None:
            sql(f"ALTER TABLE data_keys SET (fillfactor = {args.fillfactor})")
        (version,), *_ = sql("SHOW server_version")
        (options,), *_ = sql("SELECT reloptions FROM pg_class WHERE oid = 'data_keys'::regclass")
        print(
            f"rewrap: {rows:,} data keys (+ {rows // 10:,} of another tenant), {args.rounds} round(s), "
            f"batches of {batch:,}, PostgreSQL {version} (fsync on), table options "
            f"{options or 'default (fillfactor 100)'}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        on_tkv = ", ".join(indexes_on("tkv_id"))
        print(f"  indexes on tkv_id: {on_tkv} (an update that changes tkv_id can never be HOT)")
        started = time.perf_counter()
        ds = make_dataset(rows)
        print(f"  setup: tenants, keys and {rows:,} DEKs in {time.perf_counter() - started:.1f} s")

        phases: list[Phase] = []
        for round_no in range(1, args.rounds + 1):
            order = ["raw", "walk"] if round_no % 2 else ["walk", "raw"]
            print(f"  round {round_no} ({' then '.join(order)}), load average {os.getloadavg()[0]:.1f}")
            for kind in order:
                source, target = load(ds)
                if kind == "walk":
                    sizes_before = index_sizes()
                    phase = run_walk(ds, source, target, args.profile and round_no == args.rounds)
                    print(f"    walk: {phase.report()}; sample of {len(ds.sample):,} DEKs intact")
                    print(f"    walk: index sizes (MiB) before {sizes_before}; after {index_sizes()}")
                    if args.order_check:
                        third = rotate_kek(ds.tenant)
                        again = run_raw(ds, target, third, batch, "raw-after-walk")
                        print(f"    raw on the walked, vacuumed table (not used): {again.report()}")
                else:
                    phase = run_raw(ds, source, target, batch)
                    print(f"    raw:  {phase.report()}")
                phases.append(phase)

        walk_rates, raw_rates = rates(phases, "walk"), rates(phases, "raw")
        walk_rate, raw_rate = statistics.median(walk_rates), statistics.median(raw_rates)
        ratio = walk_rate / raw_rate
        per_round = ", ".join(f"{w / r:.2f}" for w, r in zip(walk_rates, raw_rates, strict=True))
        print(f"  walk DEKs/s per round: {listed(walk_rates)}; median {walk_rate:,.0f}")
        print(f"  raw rows/s per round:  {listed(raw_rates)}; median {raw_rate:,.0f}")
        print(f"  ratio per round: {per_round}; of the medians {ratio:.2f}")
        walk_cpu, raw_cpu = cpu_rates(phases, "walk"), cpu_rates(phases, "raw")
        if walk_cpu and raw_cpu:
            cpu_ratio = statistics.median(walk_cpu) / statistics.median(raw_cpu)
            print(
                f"  per CPU second (here + server): walk {statistics.median(walk_cpu):,.0f}, "
                f"raw {statistics.median(raw_cpu):,.0f} rows (medians); ratio {cpu_ratio:.2f}"
            )
        print(
            f"  targets: >= {TARGET_RATE:,} DEKs/s {'met' if walk_rate >= TARGET_RATE else 'NOT met'}, "
            f"ratio >= {TARGET_RATIO} {'met' if ratio >= TARGET_RATIO else 'NOT met'}"
        )
        print(f"rewrap deks_per_s={walk_rate:.0f} ratio_vs_raw_update={ratio:.2f}")
        return 0
    except CheckFailed as exc:
        print(f"rewrap: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        run_cleanups(cleanups)


if __name__ == "__main__":
    sys.exit(main())
