"""The walk's prepared batches (``encryption.rewrap.ahead``): batch N+1 is read, counted and sealed in the
background while batch N is written. What must hold is what holds without them: every data key moved exactly
once and still opening, the wrap counter never behind, nothing prepared in a transaction that rolled back
ever written, and a prepared batch used only where the job still stands (another worker, a rotation, a key
made active again all throw it away).

These run with real commits (``transaction=True``): a prepared batch is only used after its transaction
committed, and inside a test's surrounding transaction the walk prepares nothing. ``test_rules.py`` drives
the same walk without preparation; ``tests/multimachine`` runs it in two Celery workers, one SIGKILLed.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import DatabaseError

from encryption import rewrap, services
from encryption.models import DataKey, RewrapJob, RewrapStatus, TenantKey, TenantKeyVersion
from encryption.rewrap import ahead, walk
from tests.encryption.rewrap.support import BATCH, N, Rotated, finish
from tests.encryption.support import rotate_kek, under, unopenable, wrapped_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def prepared() -> Iterator[ahead.Ahead]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield ahead.Ahead(pool)


@pytest.fixture
def sealed_in_background(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the first row of every batch sealed by the pool (not in the walk's own thread)."""
    firsts: list[int] = []
    real = ahead.seal_rows

    def seal_rows(*args: Any) -> ahead.Sealed:
        firsts.append(args[-1][0][0])
        return real(*args)

    monkeypatch.setattr(ahead, "seal_rows", seal_rows)
    return firsts


def started(rotated: Rotated, owner: Any) -> RewrapJob:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    return job


def wrap_count(tkv: TenantKeyVersion) -> int:
    tkv.refresh_from_db()
    return tkv.wrap_count


def ids_of(rotated: Rotated) -> list[int]:
    return list(
        DataKey.objects.filter(tenant=rotated.tenant, tkv=rotated.old)
        .order_by("id")
        .values_list("id", flat=True)
    )


def test_a_whole_walk_with_prepared_batches_moves_every_key_once(
    rotated: Rotated, owner: Any, sealed_in_background: list[int]
) -> None:
    ids = ids_of(rotated)
    before = wrapped_rows(rotated.tenant)
    job = started(rotated, owner)
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == job.total == N and job.unreadable == 0
    # Every batch after the first was sealed in the background, each starting where the previous ended.
    assert sealed_in_background == ids[BATCH::BATCH]
    assert (under(rotated.old), under(rotated.new)) == (0, N)
    after = wrapped_rows(rotated.tenant)
    assert all(after[blob_id][1] != before[blob_id][1] for blob_id in before)
    assert unopenable(rotated.tenant, rotated.keys, through_keyring=N) == []
    # Counted before sealing, and nothing was counted twice: no prepared batch was thrown away.
    assert wrap_count(rotated.new) == N


def test_a_prepared_batch_skips_a_row_deleted_after_it_was_read(
    rotated: Rotated, owner: Any, prepared: ahead.Ahead
) -> None:
    job = started(rotated, owner)
    ids = ids_of(rotated)
    assert walk.run_batch(job.pk, prepared) == walk.Outcome.MORE  # writes batch 1, prepares batch 2
    DataKey.objects.filter(pk=ids[BATCH + 3]).delete()
    assert walk.run_batch(job.pk, prepared) == walk.Outcome.MORE  # writes the prepared batch 2
    job.refresh_from_db()
    assert job.done == 2 * BATCH - 1 and job.cursor_id == ids[2 * BATCH - 1]
    assert under(rotated.new) == 2 * BATCH - 1
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED and job.done == N - 1 == under(rotated.new)


def test_another_worker_taking_the_next_batch_makes_the_prepared_one_void(
    rotated: Rotated, owner: Any, prepared: ahead.Ahead
) -> None:
    """Worker A prepares batch 2, worker B writes batch 2 first: A must go on with batch 3, not write its
    batch 2 again (which would move the cursor back and walk batch 3 twice)."""
    job = started(rotated, owner)
    ids = ids_of(rotated)
    walk.run_batch(job.pk, prepared)  # A: batch 1, prepares batch 2
    walk.run_batch(job.pk)  # B: batch 2
    walk.run_batch(job.pk, prepared)  # A: must be batch 3
    job.refresh_from_db()
    assert job.done == 3 * BATCH and job.cursor_id == ids[3 * BATCH - 1]
    assert under(rotated.new) == 3 * BATCH
    # A's void batch 2 was counted (ahead of use, which is allowed), never behind.
    assert wrap_count(rotated.new) >= under(rotated.new)
    finish(job)
    assert job.status == RewrapStatus.COMPLETED and job.done == N
    assert unopenable(rotated.tenant, rotated.keys, through_keyring=N) == []


def test_a_batch_that_rolls_back_leaves_nothing_prepared_and_counts_nothing(
    rotated: Rotated, owner: Any, prepared: ahead.Ahead, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = started(rotated, owner)
    walk.run_batch(job.pk, prepared)  # batch 1 written, batch 2 prepared and counted
    counted = wrap_count(rotated.new)
    assert counted == 2 * BATCH

    def fail(*args: Any) -> int:
        raise DatabaseError("simulated: the connection dropped during the UPDATE")

    monkeypatch.setattr(walk, "_write", fail)
    with pytest.raises(DatabaseError):
        walk.run_batch(job.pk, prepared)  # takes batch 2, prepares and counts batch 3, then rolls back
    monkeypatch.undo()
    # Batch 3's count rolled back with it; batch 2 was taken, batch 3 never committed: nothing is ready.
    assert wrap_count(rotated.new) == counted
    assert (
        prepared.take(ahead.Plan(job.pk, rotated.old.pk, rotated.new.pk, ids_of(rotated)[BATCH - 1])) is None
    )
    job.refresh_from_db()
    assert job.done == BATCH and under(rotated.new) == BATCH
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED and job.done == N == under(rotated.new)
    assert unopenable(rotated.tenant, rotated.keys, through_keyring=N) == []


def test_a_rotation_after_preparing_throws_the_batch_away_and_retargets(
    rotated: Rotated, owner: Any, prepared: ahead.Ahead
) -> None:
    job = started(rotated, owner)
    walk.run_batch(job.pk, prepared)  # batch 1 to rotated.new; batch 2 sealed under rotated.new
    newest = rotate_kek(rotated.tenant)  # rotated.new is retired now
    walk.run_batch(job.pk, prepared)
    job.refresh_from_db()
    # The prepared batch was not written under the version that is no longer active: the job retargeted.
    assert job.target_tkv_id == newest.pk
    assert under(rotated.new) == BATCH and job.done == BATCH
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert under(newest) == N and under(rotated.old) == under(rotated.new) == 0
    assert unopenable(rotated.tenant, rotated.keys, through_keyring=N) == []


def test_a_source_key_made_active_again_after_preparing_keeps_its_data(
    rotated: Rotated, owner: Any, prepared: ahead.Ahead
) -> None:
    job = started(rotated, owner)
    walk.run_batch(job.pk, prepared)  # batch 1 moved; batch 2 prepared
    old_kek = TenantKey.objects.get(pk=rotated.old.kek_id)
    services.make_active(old_kek, actor=owner)  # the owner makes the old key active again mid-walk
    walk.run_batch(job.pk, prepared)
    job.refresh_from_db()
    # The prepared batch 2 was not written: its source's key is active again, so the walk leaves it.
    assert under(rotated.old) == N - BATCH and job.done == BATCH
    assert job.versions[str(rotated.old.pk)]["total"] == BATCH
