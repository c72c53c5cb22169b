"""The re-wrap walk with real Celery workers on PostgreSQL: crash-safe, idempotent, and exact.

Each test starts its own ``celery worker --pool=solo`` subprocesses (the main process runs the task, so a
SIGKILL of it is a crash mid-walk) and, where resumption matters, a real ``celery beat`` whose watchdog
(``resume_stalled_rewraps``) runs every second. A killed worker's message stays unacknowledged in Redis for
the visibility timeout (an hour), so a walk that carries on after a kill was resumed by the watchdog.

What every test checks at the end: the job completed; its counts equal what the table holds (no batch lost,
none applied twice); no data key is left under a retired version, which is destroyed; and every one of the
data keys opens to the very DEK it held before. ``test_rewrap.py`` holds the rules, in process.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from audit import chain
from audit.models import AuditEvent, EventType
from blobs.models import Blob
from emulators.dev import DevEmulators
from encryption import keyring, rewrap, services, tasks
from encryption.models import (
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
    WrapMethod,
)
from encryption.rewrap import walk
from tenants.models import Tenant
from tests.blobs.support import LiveApi, make_blob, make_token
from tests.conftest import start_beat, start_worker, stop_process, wait_until_ready
from tests.encryption.support import rotate_kek, seed_data_keys, under, unopenable, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Every worker and beat of this file: small batches (a walk lasts long enough to be interrupted), short
# slices (tasks re-queue themselves often), and a watchdog that notices a dead worker within ~3 s.
FAST = {
    "KODORI_REWRAP_BATCH_SIZE": "500",
    "KODORI_REWRAP_SLICE_SECONDS": "2",
    "KODORI_REWRAP_STALL_SECONDS": "2",
    "KODORI_REWRAP_WATCHDOG_SECONDS": "1",
}


class Processes:
    """The workers and beat a test started, with their logs; every one is stopped (or killed) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self._files: list[io.TextIOWrapper] = []

    def worker(self, name: str, *, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("w")  # closed in stop_all
        self._files.append(log)
        proc: subprocess.Popen[bytes] = start_worker(name, {**FAST, **env}, wait=wait, log=log)
        self.started.append(proc)
        return proc

    def beat(self, **env: str) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = start_beat(self.logs / "beat-schedule", {**FAST, **env})
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def all_logs(self) -> str:
        return "".join(path.read_text() for path in sorted(self.logs.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()  # what is left is only ever a test's own worker or beat; no need to be gentle
            stop_process(proc)
        for log in self._files:
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def rotated_tenant(
    tenant: Tenant, n: int
) -> tuple[dict[uuid.UUID, bytes], TenantKeyVersion, TenantKeyVersion]:
    """``n`` data keys under version 1, then a rotation: (plaintext DEKs, version 1, version 2)."""
    old = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, n, old)
    new = rotate_kek(tenant)
    return keys, old, new


def job_state(job: RewrapJob) -> RewrapJob:
    job.refresh_from_db()
    return job


def finished(job: RewrapJob, timeout: float) -> RewrapJob:
    wait_for(
        f"re-wrap job {job.pk} to finish",
        lambda: not job_state(job).is_live,
        timeout=timeout,
        every=0.2,
    )
    return job


def past(job: RewrapJob, done: int) -> Callable[[], bool]:
    """A wait_for predicate: the walk went past ``done`` data keys (or ended)."""
    return lambda: job_state(job).done > done or not job.is_live


def assert_exact(job: RewrapJob, *, moved: int) -> None:
    """The job completed, and its counts are what the table says: every move counted exactly once."""
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.last_error == "" and job.unreadable == 0
    assert job.done == job.total == moved
    assert sum(entry["done"] for entry in job.versions.values()) == job.done
    assert all(entry["done"] == entry["total"] for entry in job.versions.values()), job.versions
    assert len(AuditEvent.objects.filter(tenant_id=job.tenant_id, type=EventType.REWRAP_COMPLETED)) == 1


def assert_destroyed(*versions: TenantKeyVersion) -> None:
    for tkv in versions:
        tkv.refresh_from_db()
        assert under(tkv) == 0, f"{under(tkv)} data keys left under key version {tkv.version}"
        assert tkv.status == VersionStatus.DESTROYED and bytes(tkv.wrapped_key) == b""


# --- 100,000 data keys, SIGKILLs, uploads and downloads all along -------------------------------------------

SEEDED = 100_000
KILLS = 5


class Traffic(threading.Thread):
    """Uploads new blobs and downloads known ones over real HTTP until stopped; keeps every sha256."""

    def __init__(self, api: LiveApi, known: dict[str, str]) -> None:
        super().__init__(name="traffic", daemon=True)
        self.api = api
        self.known = dict(known)  # blob id -> sha256 of its plaintext
        self.uploaded: dict[str, float] = {}  # blob id -> when its upload finished
        self.downloads = 0
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        rng = random.Random()
        try:
            while not self.stopping.is_set():
                data = os.urandom(rng.randrange(0, 300_000))
                status, created = self.api.upload(f"during-{len(self.uploaded)}.bin", data, len(data))
                if status != 201:
                    self.errors.append(f"upload answered {status}: {created}")
                else:
                    self.known[created["id"]] = hashlib.sha256(data).hexdigest()
                    self.uploaded[created["id"]] = time.time()
                for blob_id in rng.sample(sorted(self.known), min(2, len(self.known))):
                    problem = download_problem(self.api, blob_id, self.known[blob_id])
                    if problem:
                        self.errors.append(problem)
                    self.downloads += 1
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))
        finally:
            connection.close()


def download_problem(api: LiveApi, blob_id: str, sha256: str) -> str:
    code, _headers, chunks = api.download(blob_id)
    digest = hashlib.sha256()
    for piece in chunks:
        digest.update(piece)
    if code != 200:
        return f"download of {blob_id} answered {code}"
    if digest.hexdigest() != sha256:
        return f"download of {blob_id} differs from what was uploaded"
    return ""


def test_it_rewraps_100000_data_keys_through_sigkills_while_uploads_go_on(
    tenant: Tenant,
    owner: Any,
    member: Any,
    live_server: Any,
    settings: Any,
    tmp_path: Path,
    processes: Processes,
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "blobs.storage.BlobFileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    rng = random.Random()
    old = keyring.active_tkv(tenant)
    before: dict[str, str] = {}
    for i in range(8):  # real blobs, uploaded before the rotation: their data keys move too
        data = os.urandom(rng.randrange(0, 200_000))
        before[str(make_blob(owner, data, f"before-{i}.bin").pk)] = hashlib.sha256(data).hexdigest()
    keys = seed_data_keys(tenant, SEEDED, old)
    processes.beat()
    worker = processes.worker("walker-0")
    new = rotate_kek(tenant)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None and job.total == SEEDED + len(before)
    traffic = Traffic(LiveApi(live_server.url, make_token(member)), before)
    traffic.start()

    kills: list[tuple[str, bool, int]] = []  # (how, job running when killed, done right after the kill)
    try:
        while sum(1 for how, running, _ in kills if how == "walking" and running) < KILLS:
            last = kills[-1][2] if kills else 0
            if kills and rng.random() < 0.25:
                how = "anytime"  # while it starts up, runs the watchdog, or walks: wherever it is
                time.sleep(rng.uniform(0, 1.0))
            else:
                how = "walking"
                wait_for(
                    f"worker {len(kills)} to carry the walk past {last:,} (kills so far: {kills})",
                    past(job, last),
                    timeout=60,
                    every=0.02,
                )
                # Mid-batch, between batches, in a commit ... Short enough that five kills land before a
                # worker at ~20,000 data keys/s has walked all 100,000 (at up to 1.2 s it sometimes had).
                time.sleep(rng.uniform(0, 0.4))
            running = job_state(job).status == RewrapStatus.RUNNING
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            kills.append((how, running, job_state(job).done))
            assert running, f"the walk finished before {KILLS} kills: {kills}"
            worker = processes.worker(f"walker-{len(kills)}", wait=False)
        finished(job, timeout=120)
    finally:
        traffic.stopping.set()
        traffic.join(timeout=60)

    # Killed at random points, resumed each time, and each resumed worker carried the walk further.
    walking = [done for how, _, done in kills if how == "walking"]
    assert len(walking) >= KILLS and all(running for _, running, _ in kills)
    assert walking == sorted(walking) and len(set(walking)) == len(walking), kills
    assert 0 < walking[-1] < job.total, kills
    # Each killed worker's message is still unacknowledged in Redis: only the watchdog can have queued the
    # walk again (a resumption may queue it twice; the second copy then carries on after the next kill).
    resumed = re.findall(
        rf"resume_stalled_rewraps\[[^\]]+\] succeeded in [0-9.]+s: \[{job.pk}\]", processes.all_logs()
    )
    assert resumed, "the walk went on after a SIGKILL without the watchdog"

    moved = SEEDED + len(before)
    assert_exact(job, moved=moved)
    assert_destroyed(old)
    assert job.destroyed_versions == [1] and job.target_tkv_id == new.pk
    new.refresh_from_db()
    assert under(new) == moved + len(traffic.uploaded)
    assert new.wrap_count >= moved + len(traffic.uploaded)
    assert unopenable(tenant, keys, through_keyring=2_000) == []

    # Uploads and downloads went on throughout; every blob still downloads byte for byte.
    assert traffic.errors == []
    assert job.finished_at is not None
    during = [blob_id for blob_id, at in traffic.uploaded.items() if at < job.finished_at.timestamp()]
    assert len(during) >= 3 and traffic.downloads >= 6, (len(during), traffic.downloads)
    api = LiveApi(live_server.url, make_token(member))
    assert [p for blob_id, sha in traffic.known.items() if (p := download_problem(api, blob_id, sha))] == []
    tkvs = set(Blob.objects.filter(pk__in=list(traffic.uploaded)).values_list("data_key__tkv_id", flat=True))
    assert tkvs == {new.pk}, "an upload during the walk was wrapped by a retired version"

    (started,) = AuditEvent.objects.filter(tenant=tenant, type=EventType.REWRAP_STARTED)
    assert started.payload["dataKeys"] == moved and started.payload["versions"] == {"1": moved}
    (completed,) = AuditEvent.objects.filter(tenant=tenant, type=EventType.REWRAP_COMPLETED)
    assert completed.payload["rewrapped"] == completed.payload["total"] == moved
    assert completed.payload["destroyedVersions"] == [1] and completed.payload["unreadable"] == 0
    assert chain.verify(tenant, full=True).ok
    out = io.StringIO()
    call_command("verify_audit_chain", "--tenant", tenant.slug, stdout=out)
    assert f"{tenant.slug}: OK" in out.getvalue()


# --- Two walkers on one job ---------------------------------------------------------------------------------


def test_two_workers_on_the_same_job_never_double_apply(
    tenant: Tenant, owner: Any, processes: Processes
) -> None:
    keys, old, new = rotated_tenant(tenant, 30_000)
    twins = {
        name: processes.worker(
            name, wait=False, KODORI_REWRAP_BATCH_SIZE="200", KODORI_REWRAP_SLICE_SECONDS="1"
        )
        for name in ("twin-a", "twin-b")
    }
    for name, proc in twins.items():
        wait_until_ready(proc, name)
    job = rewrap.start_rewrap(tenant, actor=owner)  # queues run_rewrap once
    assert job is not None
    tasks.run_rewrap.delay(job.pk)  # ... and once more: two task chains for one job, one per worker
    waits = 0
    deadline = time.monotonic() + 120
    with connection.cursor() as cursor:
        while job_state(job).is_live:
            assert time.monotonic() < deadline, f"the walk did not finish within 120 s: {job.done:,} done"
            # A batch of one worker waiting on the job row that the other's batch holds. Matched on the
            # start of the query: pg_stat_activity keeps only its first 1 KiB, and the select list of the job
            # and its tenant is longer than that (its "FOR UPDATE" is cut off).
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                ['SELECT "rewrap_jobs"."id"%'],
            )
            waits += cursor.fetchone()[0]
            time.sleep(0.01)
    assert_exact(job, moved=30_000)
    assert under(new) == 30_000
    assert_destroyed(old)
    assert unopenable(tenant, keys, through_keyring=500) == []
    for name in ("twin-a", "twin-b"):
        assert "encryption.tasks.run_rewrap" in processes.log(name), f"{name} never ran the walk"
    assert waits > 0, "the two workers never walked at the same time"


def test_threads_racing_on_one_job_apply_every_batch_once(tenant: Tenant, owner: Any, settings: Any) -> None:
    settings.KODORI_REWRAP_BATCH_SIZE = 25
    keys, _old, new = rotated_tenant(tenant, 2_000)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    start = threading.Barrier(4)
    applied: list[int] = []
    errors: list[BaseException] = []

    def walker() -> None:
        try:
            start.wait()
            mine = 0
            while walk.run_batch(job.pk) == walk.Outcome.MORE:
                mine += 1
            applied.append(mine)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=walker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a walker thread hung"
    assert errors == []
    assert_exact(job_state(job), moved=2_000)
    assert under(new) == 2_000
    assert sum(applied) == 2_000 // 25, applied  # each batch applied by exactly one thread
    assert len([n for n in applied if n]) >= 2, f"only one thread got to walk: {applied}"
    assert unopenable(tenant, keys) == []


# --- A dropped database connection --------------------------------------------------------------------------


def test_a_dropped_database_connection_is_retried_and_loses_nothing(
    tenant: Tenant, owner: Any, processes: Processes
) -> None:
    keys, old, new = rotated_tenant(tenant, 40_000)
    # Small batches keep the walk slow enough (several seconds of walking for 40,000) that all three drops
    # land while it runs, however fast the machine: at 200 a batch it sometimes finished first.
    processes.worker("dropped", KODORI_REWRAP_BATCH_SIZE="50", KODORI_REWRAP_SLICE_SECONDS="0.5")
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    rng = random.Random()
    terminated = []
    with connection.cursor() as cursor:
        for _ in range(3):
            last = job_state(job).done
            wait_for(f"the walk to go on past {last:,}", past(job, last), timeout=60, every=0.02)
            # Past the retried task's slice: its successor starts with a fresh retry count (2 s backoff).
            time.sleep(rng.uniform(0.5, 0.8))
            # The worker may be between connections (a retry's backoff, under load): try until one drops.
            dropped, deadline = 0, time.monotonic() + 10
            while not dropped and time.monotonic() < deadline:
                assert job_state(job).is_live, "the walk finished before its connection could be dropped"
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
                dropped = sum(1 for (ok,) in cursor.fetchall() if ok)
                if not dropped:
                    time.sleep(0.05)
            terminated.append(dropped)
    assert all(terminated), terminated
    finished(job, timeout=120)
    assert_exact(job, moved=40_000)
    assert_destroyed(old)
    assert under(new) == 40_000
    assert unopenable(tenant, keys, through_keyring=500) == []
    retries = re.findall(
        r"run_rewrap\[[^\]]+\] retry: Retry in \d+s: OperationalError", processes.log("dropped")
    )
    assert retries, processes.log("dropped")[-3000:]


# --- A throttled KMS ----------------------------------------------------------------------------------------


def test_a_throttled_kms_delays_the_walk_and_loses_nothing(
    clouds: DevEmulators, tenant: Tenant, owner: Any, processes: Processes
) -> None:
    assert clouds.aws is not None
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    old = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, 5_000, old)
    key_arn = clouds.aws.create_key(alias="alias/rewrap-target")
    role_arn = clouds.aws.create_tenant_role("rewrap", services.external_id_for(tenant), key_arn)
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    services.verify_key(key.pk)  # activates it: version 2 under the customer's AWS key
    new = TenantKeyVersion.objects.get(tenant=tenant, status=VersionStatus.ACTIVE)
    assert new.kek_id == key.pk and new.version == 2
    # The worker's first unwrap of version 2 meets a busy KMS: two attempts per try, two tries throttled.
    clouds.aws.throttle(count=4, operations=["Decrypt"])
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None and job.total == 5_000
    processes.worker(
        "throttled", KODORI_KMS_MAX_ATTEMPTS="2", KODORI_KMS_BACKOFF_BASE="0.05", KODORI_KMS_BACKOFF_MAX="0.1"
    )
    shown = wait_for(
        "the job to show the KMS trouble",
        lambda: job_state(job).last_error or not job.is_live,
        timeout=60,
        every=0.02,
    )
    assert "AWS KMS is busy" in shown and "Kodori retries on its own" in shown
    assert job.done == 0
    finished(job, timeout=90)
    assert_exact(job, moved=5_000)
    assert_destroyed(old)
    outcomes = clouds.aws.outcome_counts()
    throttled = sum(n for name, n in outcomes.items() if name.startswith("Decrypt:Throttl"))
    assert throttled == 4
    retries = re.findall(r"run_rewrap\[[^\]]+\] retry: Retry in (\d+)s", processes.log("throttled"))
    assert retries == ["2", "4"]  # the task's own backoff, after the provider's quick attempts
    global_kek = TenantKey.objects.get(pk=old.kek_id)
    assert global_kek.status == KeyStatus.RETIRED and job.unreferenced_keys == [global_kek.pk]
    assert unopenable(tenant, keys, through_keyring=200) == []


# --- A rotation during the walk -----------------------------------------------------------------------------


def test_a_rotation_during_the_walk_retargets_it(tenant: Tenant, owner: Any, processes: Processes) -> None:
    keys, first, second = rotated_tenant(tenant, 40_000)
    processes.worker("retarget", KODORI_REWRAP_BATCH_SIZE="200")
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None and job.target_tkv_id == second.pk
    wait_for("the walk to start", lambda: job_state(job).done > 0, timeout=60, every=0.02)
    third = rotate_kek(tenant)
    finished(job, timeout=120)
    assert job.target_tkv_id == third.pk, "the walk ended before the rotation (make it longer)"
    moved_to_second = job.versions[str(second.pk)]["total"]
    assert 0 < moved_to_second < 40_000
    assert job.versions[str(first.pk)]["total"] == 40_000
    assert_exact(job, moved=40_000 + moved_to_second)
    assert_destroyed(first, second)
    assert sorted(job.destroyed_versions) == [1, 2]
    assert under(third) == 40_000
    assert DataKey.objects.filter(tenant=tenant).exclude(tkv=third).count() == 0
    assert unopenable(tenant, keys, through_keyring=500) == []
