"""The scrub (issue 14): every stored blob walked at a limited rate, resumably, every chunk authenticated.

Blobs are uploaded through the real upload service into the filesystem or S3 (moto's server over HTTP),
then damaged behind Kodori's back. What each test shows is in its name; the damage matrix covers a flipped
byte in the header, the first, a middle and the last chunk (each in another ~1 MiB batch of the scrub), a
truncated object, appended bytes, a deleted object and two blobs' objects swapped, on both stores.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent, EventType
from blobs import scrub, tasks
from blobs.models import Blob, Damage
from encryption import keyring
from encryption.format import envelope
from encryption.format.cobblestone import BATCH_CHUNKS, CHUNK_SIZE, SEALED_CHUNK_SIZE
from encryption.models import DataKey
from encryption.providers import FailureKind, ProviderError
from tenants.models import Tenant
from tests.blobs.support import FileStore, S3Store, Store, make_blob, pattern
from tests.conftest import client_for, make_user, start_worker, stop_process, subprocess_env
from tests.s3 import delete_bucket, s3_client, storage_options

pytestmark = pytest.mark.django_db

# Chunks 0..130: the first, a middle and the final chunk each fall in another batch of 64 chunks.
CHUNKS = 2 * BATCH_CHUNKS + 3
SIZE = (CHUNKS - 1) * CHUNK_SIZE + 100
FINAL = CHUNKS - 1
MIDDLE = BATCH_CHUNKS + 1
BUCKET = "kodori-test-scrub"
REPO = Path(__file__).resolve().parents[2]


# --- where the bytes are ------------------------------------------------------------------------------------


@pytest.fixture(params=["filesystem", "s3"])
def store(request: Any, settings: Any, blob_root: Path) -> Iterator[Store]:
    if request.param == "filesystem":
        yield FileStore(blob_root)
        return
    endpoint = request.getfixturevalue("moto_s3")
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": storage_options(endpoint, BUCKET)},
    }
    try:
        yield S3Store(client, BUCKET)
    finally:
        delete_bucket(client, BUCKET)


# --- helpers ------------------------------------------------------------------------------------------------


def scrub_now(**kwargs: Any) -> scrub.ScrubReport:
    report = scrub.run(rate=kwargs.pop("rate", 0), **kwargs)
    assert report is not None
    return report


def events(kind: EventType) -> list[dict[str, Any]]:
    return [e.payload for e in AuditEvent.objects.filter(type=kind).order_by("tenant_id", "seq")]


def chunk_offset(chunk: int) -> int:
    return envelope.HEADER_SIZE + chunk * SEALED_CHUNK_SIZE


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def fresh(blob: Blob) -> Blob:
    return Blob.objects.select_related("tenant").get(pk=blob.pk)


def command(*args: str) -> tuple[int, str, str]:
    """``manage.py scrub_blobs`` in this process: (exit status, stdout, stderr)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("scrub_blobs", *args, stdout=out, stderr=err)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


# The damage matrix: (what is done to the stored object, the damage and chunk the scrub must report).
Mutation = Callable[[bytes], bytes]
MATRIX: dict[str, tuple[Mutation, Damage, int | None]] = {
    "header-salt": (lambda b: flip(b, 10), Damage.HEADER, None),
    "header-magic": (lambda b: flip(b, 0), Damage.HEADER, None),
    "first-chunk": (lambda b: flip(b, chunk_offset(0) + 5), Damage.CHUNK, 0),
    "middle-chunk": (lambda b: flip(b, chunk_offset(MIDDLE) + 7000), Damage.CHUNK, MIDDLE),
    "last-chunk": (lambda b: flip(b, chunk_offset(FINAL) + 50), Damage.CHUNK, FINAL),
    "last-tag": (lambda b: flip(b, len(b) - 1), Damage.CHUNK, FINAL),
    "truncated": (lambda b: b[:-10], Damage.LENGTH, None),
    "appended": (lambda b: b + b"\x00" * 16, Damage.LENGTH, None),
}


# --- one blob -----------------------------------------------------------------------------------------------


def test_a_clean_blob_is_verified_and_nothing_is_recorded(store: Store, member: Any) -> None:
    blob = make_blob(member, pattern(SIZE), name="clean.bin")
    before = AuditEvent.objects.count()
    report = scrub_now()
    blob = fresh(blob)
    assert blob.verified_at is not None and not blob.is_damaged
    assert AuditEvent.objects.count() == before
    (tally,) = report.tallies.values()
    assert (tally.verified, tally.damaged, tally.missing, sum(tally.not_checked.values())) == (1, 0, 0, 0)
    assert report.bytes_read == envelope.ciphertext_size(SIZE)
    assert report.stopped == scrub.Stop.FINISHED and not report.damage_found


@pytest.mark.parametrize("case", list(MATRIX))
def test_each_damage_is_found_with_its_kind_and_chunk_and_recorded_once(
    store: Store, member: Any, case: str
) -> None:
    mutate, kind, chunk = MATRIX[case]
    blob = make_blob(member, pattern(SIZE), name="victim.bin")
    bystander = make_blob(member, pattern(SIZE, seed=3), name="bystander.bin")
    original = store.read(blob)
    store.write(blob, mutate(original))

    report = scrub_now()
    damaged = fresh(blob)
    assert (damaged.damage, damaged.damaged_chunk) == (kind.value, chunk)
    assert damaged.damaged_at is not None and damaged.verified_at is None
    assert fresh(bystander).verified_at is not None and not fresh(bystander).is_damaged
    (found,) = report.findings
    assert (found.blob.pk, found.damage, found.chunk, found.news) == (blob.pk, kind, chunk, True)
    assert events(EventType.BLOB_CORRUPT) == [
        {
            "blobId": str(blob.pk),
            "name": "victim.bin",
            "chunk": chunk,
            "damage": kind.value,
            "foundBy": "scrub",
        }
    ]

    # A second pass finds the same damage again: reported, but no second event.
    again = scrub_now()
    assert [(f.damage, f.chunk, f.news) for f in again.findings] == [(kind, chunk, False)]
    assert len(events(EventType.BLOB_CORRUPT)) == 1


def test_a_deleted_object_is_missing(store: Store, member: Any) -> None:
    blob = make_blob(member, pattern(SIZE), name="gone.bin")
    store.remove(blob)
    report = scrub_now()
    assert (fresh(blob).damage, fresh(blob).damaged_chunk) == (Damage.MISSING.value, None)
    (tally,) = report.tallies.values()
    assert (tally.missing, tally.damaged, tally.verified) == (1, 0, 0)
    assert [e["damage"] for e in events(EventType.BLOB_CORRUPT)] == ["missing"]
    scrub_now()
    assert len(events(EventType.BLOB_CORRUPT)) == 1


def test_swapped_objects_of_two_blobs_are_both_header_damage(store: Store, member: Any) -> None:
    one = make_blob(member, pattern(SIZE), name="one.bin")
    two = make_blob(member, pattern(SIZE, seed=9), name="two.bin")
    first, second = store.read(one), store.read(two)
    store.write(one, second)
    store.write(two, first)
    scrub_now()
    for blob in (one, two):
        assert (fresh(blob).damage, fresh(blob).damaged_chunk) == (Damage.HEADER.value, None)
    assert sorted(e["blobId"] for e in events(EventType.BLOB_CORRUPT)) == sorted([str(one.pk), str(two.pk)])


def test_a_data_key_that_does_not_match_its_blob_is_data_key_damage(member: Any) -> None:
    blob = make_blob(member, pattern(1000), name="key.bin")
    row = DataKey.objects.get(blob_id=blob.pk)
    row.wrapped_dek = flip(bytes(row.wrapped_dek), 20)
    row.save()
    scrub_now()
    assert fresh(blob).damage == Damage.DATA_KEY.value
    assert [e["damage"] for e in events(EventType.BLOB_CORRUPT)] == ["data-key"]


def test_restoring_the_object_lets_the_next_scrub_lift_the_mark(store: Store, member: Any) -> None:
    blob = make_blob(member, pattern(SIZE), name="restored.bin")
    original = store.read(blob)
    store.write(blob, flip(original, chunk_offset(MIDDLE) + 1))
    scrub_now()
    assert fresh(blob).is_damaged

    store.write(blob, original)  # the operator restores the object from a backup
    report = scrub_now()
    blob = fresh(blob)
    assert not blob.is_damaged and blob.damage == "" and blob.damaged_chunk is None
    assert blob.verified_at is not None
    assert events(EventType.BLOB_REPAIRED) == [
        {"blobId": str(blob.pk), "name": "restored.bin", "foundBy": "scrub"}
    ]
    assert report.findings == [] and next(iter(report.tallies.values())).verified == 1
    scrub_now()
    assert len(events(EventType.BLOB_REPAIRED)) == 1  # whole again, nothing more to record


def test_an_empty_blob_is_verified(member: Any) -> None:
    blob = make_blob(member, b"", name="empty.txt")
    scrub_now()
    assert fresh(blob).verified_at is not None


# --- not damage -----------------------------------------------------------------------------------------


def test_a_sealed_tenant_is_not_checked_but_a_missing_object_is_still_found(
    member: Any, tenant: Tenant, blob_root: Path
) -> None:
    kept = make_blob(member, pattern(5000), name="kept.bin")
    lost = make_blob(member, pattern(5000), name="lost.bin")
    (blob_root / lost.storage_key).unlink()
    tenant.sealed_at, tenant.seal_reason = timezone.now(), "Your AWS KMS key denied Decrypt to Kodori's role."
    tenant.save()
    keyring.cache.clear()

    report = scrub_now()
    (tally,) = report.tallies.values()
    assert tally.not_checked == {"tenant sealed: Your AWS KMS key denied Decrypt to Kodori's role.": 1}
    assert (tally.verified, tally.damaged, tally.missing) == (0, 0, 1)
    kept = fresh(kept)
    assert not kept.is_damaged and kept.verified_at is None
    assert fresh(lost).damage == Damage.MISSING.value  # existence needs no key
    assert [e["blobId"] for e in events(EventType.BLOB_CORRUPT)] == [str(lost.pk)]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            ProviderError(FailureKind.TRANSIENT, "AWS KMS timed out."),
            "key provider unreachable: AWS KMS timed out.",
        ),
        (ProviderError(FailureKind.DENIED, "Access denied."), "key unavailable: Access denied."),
        (ProviderError(FailureKind.INTEGRITY, "The KMS refused the ciphertext."), "key unavailable: The KMS"),
        (keyring.KeyUnavailable("The key is disabled."), "key unavailable: The key is disabled."),
    ],
)
def test_an_unusable_key_or_kms_is_not_checked_and_not_damage(
    member: Any, monkeypatch: Any, failure: Exception, reason: str
) -> None:
    blob = make_blob(member, pattern(5000), name="waiting.bin")

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise failure

    monkeypatch.setattr(keyring, "open_data_key", refuse)
    report = scrub_now()
    (tally,) = report.tallies.values()
    ((said, n),) = tally.not_checked.items()
    assert said.startswith(reason) and n == 1
    assert not fresh(blob).is_damaged and fresh(blob).verified_at is None
    assert events(EventType.BLOB_CORRUPT) == []
    assert report.stopped == scrub.Stop.FINISHED


def test_a_store_outage_is_not_damage_and_stops_the_run_before_the_failed_blobs(
    member: Any, monkeypatch: Any
) -> None:
    blobs = sorted((make_blob(member, pattern(3000), name=f"b{i}") for i in range(4)), key=lambda b: b.pk)
    scrub_now(limit=1)  # the first blob is done; the cursor is on it

    def down(key: str) -> Any:
        raise ConnectionError("the blob store does not answer")

    monkeypatch.setattr(scrub, "open_stored", down)
    status, out, _err = command()
    assert status == 4
    assert "Stopped: the blob store failed twice in a row" in out and "ConnectionError" in out
    pass_ = scrub.ScrubPass.objects.get(status=scrub.PassStatus.RUNNING)
    assert pass_.cursor == blobs[0].pk  # the two failed blobs are retried by the next run
    assert Blob.objects.damaged().count() == 0 and events(EventType.BLOB_CORRUPT) == []


def test_one_unreadable_object_is_not_checked_and_the_walk_goes_on(member: Any, monkeypatch: Any) -> None:
    blobs = sorted((make_blob(member, pattern(3000), name=f"b{i}") for i in range(3)), key=lambda b: b.pk)
    real = scrub.open_stored

    def flaky(key: str) -> Any:
        if key == blobs[1].storage_key:
            raise PermissionError(13, "Permission denied")
        return real(key)

    monkeypatch.setattr(scrub, "open_stored", flaky)
    report = scrub_now()
    (tally,) = report.tallies.values()
    assert tally.verified == 2 and tally.not_checked == {"blob store error (PermissionError)": 1}
    assert report.stopped == scrub.Stop.FINISHED and not fresh(blobs[1]).is_damaged


# --- the walk: order, limit, resumption, rate, lock ---------------------------------------------------------


@pytest.fixture
def checked(monkeypatch: Any) -> list[uuid.UUID]:
    """The ids of the blobs ``scrub_blob`` is called for, in order."""
    seen: list[uuid.UUID] = []
    real = scrub.scrub_blob

    def spy(blob: Blob, **kwargs: Any) -> scrub.BlobResult:
        seen.append(blob.pk)
        return real(blob, **kwargs)

    monkeypatch.setattr(scrub, "scrub_blob", spy)
    return seen


def test_a_limited_run_resumes_from_its_cursor_and_a_finished_pass_starts_anew(
    member: Any, checked: list[uuid.UUID]
) -> None:
    ids = sorted(make_blob(member, pattern(2000), name=f"f{i}").pk for i in range(5))

    assert command("--limit", "2")[0] == 0
    assert checked == ids[:2]
    first_pass = scrub.ScrubPass.objects.get()
    assert (first_pass.status, first_pass.cursor, first_pass.verified) == ("running", ids[1], 2)

    status, out, _ = command("--limit", "2")
    assert status == 0 and checked == ids[:4]  # the next two in id order; none checked twice
    assert "(resumed)" in out and "Stopped: limit reached" in out
    status, out, _ = command()
    assert checked == ids and "Stopped: pass finished" in out
    first_pass.refresh_from_db()
    assert first_pass.status == "finished" and first_pass.ended_at is not None
    assert (first_pass.verified, first_pass.runs) == (5, 3)

    command("--limit", "1")  # a new pass from the first blob
    assert checked == [*ids, ids[0]]
    assert scrub.ScrubPass.objects.filter(status="running").exclude(pk=first_pass.pk).count() == 1


class Killed(BaseException):
    """What the process sees of a SIGKILL, as far as the database is concerned: the run stops mid-blob."""


def test_a_killed_run_continues_where_it_stopped(member: Any, monkeypatch: Any) -> None:
    # The pass is written after every blob here; by default at most every second, so a killed run re-checks
    # up to a second's worth of blobs more than this.
    monkeypatch.setattr(scrub, "CHECKPOINT_SECONDS", 0.0)
    ids = sorted(make_blob(member, pattern(2000), name=f"k{i}").pk for i in range(4))
    real = scrub.scrub_blob
    seen: list[uuid.UUID] = []

    def dies_on_the_third(blob: Blob, **kwargs: Any) -> scrub.BlobResult:
        if blob.pk == ids[2] and ids[2] not in seen:
            seen.append(blob.pk)
            raise Killed  # the process dies in the middle of the third blob
        seen.append(blob.pk)
        return real(blob, **kwargs)

    monkeypatch.setattr(scrub, "scrub_blob", dies_on_the_third)
    with pytest.raises(Killed):
        scrub_now()
    assert scrub.ScrubPass.objects.get().cursor == ids[1]
    report = scrub_now()  # the lock went with the run; the pass goes on at the third blob
    assert seen == [ids[0], ids[1], ids[2], ids[2], ids[3]]
    assert report.resumed and report.blobs == 2 and report.stopped == scrub.Stop.FINISHED


def test_a_run_out_of_time_pauses_inside_a_large_blob_and_resumes_at_its_chunk(
    store: Store, member: Any
) -> None:
    blob = make_blob(member, pattern(SIZE), name="large.bin")
    original = store.read(blob)
    report = scrub_now(seconds=0)  # every run does at least one batch of chunks, then stops
    assert report.stopped == scrub.Stop.TIME
    current = scrub.ScrubPass.objects.get()
    assert (current.resume_blob, current.resume_chunk, current.cursor) == (blob.pk, BATCH_CHUNKS, None)
    assert fresh(blob).verified_at is None

    # Damage behind the resume point is found by the resumed run, at its chunk.
    store.write(blob, flip(original, chunk_offset(FINAL) + 3))
    report = scrub_now(seconds=0)
    current.refresh_from_db()
    assert (current.resume_blob, current.resume_chunk) == (blob.pk, 2 * BATCH_CHUNKS)
    report = scrub_now(seconds=0)
    assert [(f.damage, f.chunk) for f in report.findings] == [(Damage.CHUNK, FINAL)]

    store.write(blob, original)
    scrub_now(restart=True)
    assert not fresh(blob).is_damaged and fresh(blob).verified_at is not None


def test_the_throttle_paces_reads_to_the_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = scrub.Throttle(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        throttle.take(500)
    assert now[0] == pytest.approx(102.5)  # 2,500 bytes at 1,000 bytes/s
    now[0] += 60  # idle time earns no burst
    throttle.take(1000)
    assert slept[-1] == pytest.approx(1.0)
    unlimited = scrub.Throttle(0, clock=lambda: now[0], sleep=sleep)
    unlimited.take(10**9)
    assert len(slept) == 6


def test_the_rate_limit_actually_limits(member: Any, settings: Any) -> None:
    make_blob(member, pattern(2 * 1024 * 1024), name="big.bin")
    stored = envelope.ciphertext_size(2 * 1024 * 1024)
    started = time.monotonic()
    assert command("--rate", str(1024 * 1024))[0] == 0  # the flag overrides the setting
    slow = time.monotonic() - started
    assert stored / (1024 * 1024) * 0.95 <= slow < stored / (1024 * 1024) + 20

    settings.BLOB_SCRUB_BYTES_PER_SECOND = 4 * 1024 * 1024
    started = time.monotonic()
    scrub.run(restart=True)  # no rate given: the setting's
    paced = time.monotonic() - started
    assert stored / (4 * 1024 * 1024) * 0.95 <= paced < slow

    started = time.monotonic()
    assert command("--rate", "0", "--restart")[0] == 0
    assert time.monotonic() - started < slow / 2


@pytest.fixture
def lock_elsewhere() -> Iterator[None]:
    """Another database session (another process, as far as PostgreSQL can tell) holds the scrub's lock."""
    import psycopg

    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"],
        autocommit=True,
    )  # fmt: skip
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [scrub.LOCK_KEY])
        yield
    finally:
        other.close()


def test_nothing_scrubs_while_another_scrub_holds_the_lock(member: Any, lock_elsewhere: None) -> None:
    blob = make_blob(member, pattern(2000))
    assert scrub.run(rate=0) is None
    status, out, err = command()
    assert status == 3 and out == "" and "Another scrub is running" in err
    assert tasks.scrub_blobs() == {"skipped": "another scrub is running"}
    assert fresh(blob).verified_at is None and not scrub.ScrubPass.objects.exists()


def test_the_lock_is_released_after_a_run(member: Any) -> None:
    make_blob(member, pattern(2000))
    scrub_now()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = %s",
            [scrub.LOCK_KEY],
        )
        assert cursor.fetchone()[0] == 0


# --- the command -------------------------------------------------------------------------------------------


def test_the_command_prints_per_tenant_counts_and_exits_0_when_clean(
    member: Any, outsider: Any, other_tenant: Tenant
) -> None:
    make_blob(member, pattern(2000), name="a.txt")
    make_blob(member, pattern(3000), name="b.txt")
    make_blob(outsider, pattern(1000), name="g.txt", tenant=other_tenant)
    status, out, _ = command()
    assert status == 0
    assert "tenant acme (Acme Corp): checked 2 (ok 2, damaged 0, missing 0), not checked 0" in out
    assert "tenant globex (Globex): checked 1 (ok 1, damaged 0, missing 0), not checked 0" in out
    assert "Damaged or missing" not in out and "Stopped: pass finished" in out


def test_the_command_lists_damage_and_exits_1(
    member: Any, outsider: Any, other_tenant: Tenant, tenant: Tenant, blob_root: Path
) -> None:
    hit = make_blob(member, pattern(SIZE), name="report.pdf")
    gone = make_blob(member, pattern(100), name="notes.txt")
    make_blob(outsider, pattern(1000), name="fine.txt", tenant=other_tenant)
    path = blob_root / hit.storage_key
    path.write_bytes(flip(path.read_bytes(), chunk_offset(3) + 9))
    (blob_root / gone.storage_key).unlink()

    status, out, _ = command()
    assert status == 1
    assert "tenant acme (Acme Corp): checked 2 (ok 0, damaged 1, missing 1), not checked 0" in out
    assert f"tenant=acme blob={hit.pk} name='report.pdf' damage=chunk chunk=3" in out
    assert f"tenant=acme blob={gone.pk} name='notes.txt' damage=missing chunk=-" in out
    assert "tenant globex (Globex): checked 1 (ok 1" in out
    # Found again by the next pass: still exit 1, the blobs marked "already marked", no new events.
    status, out, _ = command()
    assert status == 1 and out.count("(already marked)") == 2
    assert len(events(EventType.BLOB_CORRUPT)) == 2


def test_the_command_scrubs_one_tenant_in_a_pass_of_its_own(
    member: Any, outsider: Any, other_tenant: Tenant, tenant: Tenant, checked: list[uuid.UUID]
) -> None:
    mine = make_blob(member, pattern(1000))
    make_blob(outsider, pattern(1000), tenant=other_tenant)
    status, out, _ = command("--tenant", "acme")
    assert status == 0 and checked == [mine.pk]
    assert "over tenant" in out and "globex" not in out
    assert scrub.ScrubPass.objects.get().tenant == tenant
    assert scrub.last_finished(tenant) is not None and scrub.last_finished(other_tenant) is None


def test_the_command_refuses_bad_arguments(db: None) -> None:
    with pytest.raises(CommandError) as unknown:
        call_command("scrub_blobs", "--tenant", "nobody")
    assert unknown.value.returncode == 2
    for bad in (["--limit", "0"], ["--rate", "-1"], ["--limit", "x"]):
        with pytest.raises(CommandError):
            call_command("scrub_blobs", *bad)


def test_restart_abandons_the_running_pass(member: Any, checked: list[uuid.UUID]) -> None:
    ids = sorted(make_blob(member, pattern(1000)).pk for _ in range(3))
    command("--limit", "2")
    command("--restart", "--limit", "1")
    assert checked == [ids[0], ids[1], ids[0]]
    assert sorted(scrub.ScrubPass.objects.values_list("status", flat=True)) == ["abandoned", "running"]


# --- the periodic task ------------------------------------------------------------------------------------


def test_the_task_scrubs_a_bounded_slice_and_warns_operators_on_damage(
    member: Any, settings: Any, blob_root: Path, caplog: Any
) -> None:
    settings.BLOB_SCRUB_BYTES_PER_SECOND = 0
    hit = make_blob(member, pattern(SIZE), name="secret-plans.pdf")
    make_blob(member, pattern(1000), name="ok.txt")
    path = blob_root / hit.storage_key
    path.write_bytes(flip(path.read_bytes(), chunk_offset(FINAL) + 1))

    with caplog.at_level(logging.INFO, logger="blobs.scrub"):
        result = tasks.scrub_blobs()
    assert result["stopped"] == "finished"
    assert result["tenants"] == {"acme": {"verified": 1, "damaged": 1, "missing": 0, "not_checked": {}}}
    assert result["damaged"] == [{"tenant": "acme", "blob": str(hit.pk), "damage": "chunk", "chunk": FINAL}]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "blobs.scrub"]
    text = warning.getMessage()
    assert "tenant acme (Acme Corp): checked 2 (ok 1, damaged 1, missing 0)" in text
    assert f"blob={hit.pk}" in text and "secret-plans" not in text  # ids in logs, never file names

    # The pass is finished and the next one is not due yet: the task does nothing; the command still can.
    assert tasks.scrub_blobs()["stopped"] == "not_due"
    assert command()[0] == 1


def test_the_task_stops_when_its_time_is_up_and_the_next_run_resumes(member: Any, settings: Any) -> None:
    settings.BLOB_SCRUB_BYTES_PER_SECOND = 0
    settings.BLOB_SCRUB_RUN_SECONDS = 1e-9
    for i in range(3):
        make_blob(member, pattern(1000), name=f"t{i}")
    results = [tasks.scrub_blobs() for _ in range(3)]
    assert [r["blobs"] for r in results] == [1, 1, 1]
    assert [r["stopped"] for r in results] == ["time", "time", "finished"]


def test_the_periodic_scrub_can_be_switched_off(member: Any, settings: Any) -> None:
    settings.BLOB_SCRUB_RUN_SECONDS = 0
    assert "off" in tasks.scrub_blobs()["skipped"]


def test_beat_schedules_the_scrub(settings: Any) -> None:
    (entry,) = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "blobs.tasks.scrub_blobs"]
    assert entry["schedule"] == 3600.0


# --- /blobs -------------------------------------------------------------------------------------------------


def test_the_list_shows_the_damage_banner_only_to_the_damaged_tenant(
    member: Any, viewer: Any, outsider: Any, other_tenant: Tenant, blob_root: Path
) -> None:
    hit = make_blob(member, pattern(SIZE), name="ledger.xlsx")
    make_blob(member, pattern(100), name="fine.txt")
    make_blob(outsider, pattern(100), name="globex.txt", tenant=other_tenant)
    path = blob_root / hit.storage_key
    path.write_bytes(flip(path.read_bytes(), chunk_offset(2)))
    assert command()[0] == 1

    for user in (member, viewer):  # every member of the tenant, whatever their role
        page = client_for(user).get(reverse("blobs:list")).content.decode()
        assert "1 file is damaged or missing in storage" in page
        link = f'<a href="{reverse("blobs:detail", args=[hit.pk])}">ledger.xlsx</a>'
        assert f"{link} — A chunk does not authenticate (chunk 2)." in page
        assert "Kodori will not serve it" in page and "restore the stored object from a backup" in page
        assert "The last integrity check of all of Acme Corp" in page
        assert page.count(">Damaged</span>") == 1 and page.count("Not served") == 1

    other = client_for(outsider).get(reverse("blobs:list")).content.decode()
    assert "damaged or missing" not in other and "ledger.xlsx" not in other and "Damaged</span>" not in other


def test_the_banner_goes_once_the_object_is_restored(member: Any, blob_root: Path) -> None:
    blob = make_blob(member, pattern(SIZE), name="photo.jpg")
    path = blob_root / blob.storage_key
    original = path.read_bytes()
    path.write_bytes(original[:-1])
    command()
    assert "1 file is damaged" in client_for(member).get(reverse("blobs:list")).content.decode()
    path.write_bytes(original)
    assert command()[0] == 0
    page = client_for(member).get(reverse("blobs:list")).content.decode()
    assert "damaged or missing" not in page and "Not served" not in page


# --- support's view ---------------------------------------------------------------------------------------


def test_support_sees_the_passes_read_only_in_the_admin(member: Any) -> None:
    make_blob(member, pattern(100))
    scrub_now()
    root = make_user("root@kodori.test", is_staff=True, is_superuser=True)
    client = client_for(root)
    page = client.get(reverse("admin:blobs_scrubpass_changelist"))
    assert page.status_code == 200 and "every tenant" in page.content.decode()
    assert client.get(reverse("admin:blobs_scrubpass_add")).status_code == 403


# --- real processes -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_task_and_the_real_command_exits_1(member: Any, blob_root: Path) -> None:
    hit = make_blob(member, pattern(SIZE), name="w.bin")
    path = blob_root / hit.storage_key
    path.write_bytes(flip(path.read_bytes(), chunk_offset(MIDDLE)))
    env = {"BLOB_ROOT": str(blob_root), "BLOB_SCRUB_BYTES_PER_SECOND": "0"}
    worker = start_worker("scrub-worker", env)
    try:
        result = tasks.scrub_blobs.delay().get(timeout=60)
    finally:
        stop_process(worker)
    assert result["damaged"] == [{"tenant": "acme", "blob": str(hit.pk), "damage": "chunk", "chunk": MIDDLE}]
    assert fresh(hit).damaged_chunk == MIDDLE

    done = subprocess.run(
        [sys.executable, "manage.py", "scrub_blobs", "--restart"],
        cwd=REPO,
        env={**subprocess_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert (
        f"tenant=acme blob={hit.pk} name='w.bin' damage=chunk chunk={MIDDLE} (already marked)" in done.stdout
    )
