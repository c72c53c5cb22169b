"""The re-wrap walk's rules, in process: who may start one and when, pause / resume / cancel, what each batch
does to the table, rotations during a walk, and tenant isolation. ``test_failures.py`` covers what goes wrong;
``tests/encryption/rewrap_live/test_rewrap_worker.py`` is the integration twin (real workers, SIGKILLs).

No Celery worker runs here: ``run_rewrap.delay`` is replaced by a list the tests read, and the walk is driven
batch by batch with ``walk.run_batch``. Providers are the real ones; a refusing kodori-managed KEK is
simulated (``GlobalKeyProvider.unwrap`` raising what a cloud KMS would), and one test wraps the walk's
``_seal`` only to delete a row between a batch's read and its write.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from audit.models import EventType
from encryption import keyring, rewrap, services
from encryption.coverage import version_coverage
from encryption.models import (
    DataKey,
    RewrapJob,
    RewrapStatus,
    RewrapTrigger,
    TenantKeyVersion,
    VersionStatus,
)
from encryption.rewrap import walk
from tenants.models import Tenant
from tests.encryption.rewrap.support import (
    BATCH,
    N,
    Rotated,
    activate_another_kek,
    checkpoint,
    events,
    finish,
    rotate_with_keys,
)
from tests.encryption.support import rotate_kek, seed_data_keys, under, unopenable, wrapped_rows

pytestmark = pytest.mark.django_db

# --- Starting -----------------------------------------------------------------------------------------------


def test_it_starts_a_walk_of_every_data_key_not_under_the_active_version(
    rotated: Rotated, owner: Any, queued: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    assert job.status == RewrapStatus.RUNNING
    assert (job.trigger, job.started_by) == (RewrapTrigger.MANUAL, owner)
    assert job.target_tkv_id == rotated.new.pk
    assert job.total == N and job.done == 0
    assert job.versions == {
        str(rotated.old.pk): {"version": 1, "kek": rotated.old.kek_id, "total": N, "done": 0}
    }
    assert queued == [job.pk]  # queued once, after commit
    (started,) = events(rotated.tenant, EventType.REWRAP_STARTED)
    assert started.actor_id == owner.pk
    assert started.payload["dataKeys"] == N
    assert started.payload["versions"] == {"1": N}
    assert started.payload["jobId"] == job.pk
    assert started.payload["trigger"] == RewrapTrigger.MANUAL
    assert started.payload["toKeyRowId"] == rotated.new.kek_id


def test_it_refuses_a_second_walk_while_one_is_live(rotated: Rotated, owner: Any) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    with pytest.raises(rewrap.RewrapError, match=rf"already running \(0 of {N:,} data keys\)"):
        rewrap.start_rewrap(rotated.tenant, actor=owner)
    rewrap.pause_rewrap(job, actor=owner)
    with pytest.raises(rewrap.RewrapError, match=r"already paused .*Resume it or cancel it first"):
        rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert RewrapJob.objects.filter(tenant=rotated.tenant).count() == 1


def test_it_refuses_while_the_tenant_is_sealed(rotated: Rotated, owner: Any) -> None:
    services.seal_tenant(rotated.tenant, "Access to the key was denied.")
    with pytest.raises(rewrap.RewrapError, match="Acme Corp is sealed: Access to the key was denied"):
        rewrap.start_rewrap(rotated.tenant, actor=owner)
    # After a rotation a sealed tenant just gets no walk (nobody to tell).
    assert rewrap.start_rewrap(rotated.tenant, trigger=RewrapTrigger.ROTATION) is None
    assert not RewrapJob.objects.exists()


def test_it_refuses_when_there_is_nothing_to_rewrap(tenant: Tenant, owner: Any) -> None:
    with pytest.raises(rewrap.RewrapError, match="no active key to re-wrap to"):
        rewrap.start_rewrap(tenant, actor=owner)
    seed_data_keys(tenant, 10)  # all under the only (active) version
    with pytest.raises(rewrap.RewrapError, match="Nothing to re-wrap: every data key is already under"):
        rewrap.start_rewrap(tenant, actor=owner)
    assert rewrap.start_rewrap(tenant, trigger=RewrapTrigger.ROTATION) is None
    assert not RewrapJob.objects.exists()


def test_a_rotation_starts_no_walk_when_the_deployment_says_so(tenant: Tenant, settings: Any) -> None:
    settings.KODORI_REWRAP_AFTER_ROTATION = False
    rotate_with_keys(tenant, 20)
    assert not RewrapJob.objects.exists()
    assert not events(tenant, EventType.REWRAP_STARTED)


@pytest.mark.django_db(transaction=True)
def test_a_rotation_starts_exactly_one_walk_and_a_second_rotation_joins_it(
    tenant: Tenant, settings: Any, queued: list[int]
) -> None:
    settings.KODORI_REWRAP_AFTER_ROTATION = True
    first = keyring.active_tkv(tenant)
    seed_data_keys(tenant, 30, first)
    second = rotate_kek(tenant)
    (job,) = RewrapJob.objects.filter(tenant=tenant)
    assert (job.trigger, job.started_by, job.status) == (RewrapTrigger.ROTATION, None, RewrapStatus.RUNNING)
    assert (job.target_tkv_id, job.total) == (second.pk, 30)
    assert queued == [job.pk]
    (started,) = events(tenant, EventType.REWRAP_STARTED)
    assert started.actor_id is None and started.payload["trigger"] == RewrapTrigger.ROTATION

    rotate_kek(tenant)  # the running walk retargets itself; no second job, nothing queued twice
    activate_another_kek(tenant, None)  # a new KEK is a rotation too
    assert list(RewrapJob.objects.filter(tenant=tenant).values_list("pk", flat=True)) == [job.pk]
    assert queued == [job.pk]
    assert len(events(tenant, EventType.REWRAP_STARTED)) == 1


@pytest.mark.django_db(transaction=True)
def test_activating_a_new_key_starts_a_walk(
    tenant: Tenant, owner: Any, settings: Any, queued: list[int]
) -> None:
    settings.KODORI_REWRAP_AFTER_ROTATION = True
    seed_data_keys(tenant, 30)
    target = activate_another_kek(tenant, owner)
    (job,) = RewrapJob.objects.filter(tenant=tenant)
    assert (job.trigger, job.target_tkv_id, job.total) == (RewrapTrigger.ROTATION, target.pk, 30)
    assert queued == [job.pk]


def test_a_tenant_with_only_empty_retired_versions_completes_at_once_and_destroys_them(
    tenant: Tenant, owner: Any
) -> None:
    first = keyring.active_tkv(tenant)
    rotate_kek(tenant)
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None and job.total == 0
    assert finish(job) == [walk.Outcome.FINISHED]
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.destroyed_versions == [1] and job.percent == 100
    first.refresh_from_db()
    assert first.status == VersionStatus.DESTROYED
    assert bytes(first.wrapped_key) == b"" and first.destroyed_at is not None
    (completed,) = events(tenant, EventType.REWRAP_COMPLETED)
    assert completed.payload["rewrapped"] == 0 and completed.payload["destroyedVersions"] == [1]


def test_the_database_allows_one_live_job_per_tenant(rotated: Rotated, other_tenant: Tenant) -> None:
    target = rotated.new
    RewrapJob.objects.create(tenant=rotated.tenant, target_tkv=target, status=RewrapStatus.COMPLETED)
    RewrapJob.objects.create(tenant=rotated.tenant, target_tkv=target, status=RewrapStatus.RUNNING)
    for status in (RewrapStatus.RUNNING, RewrapStatus.PAUSED):
        with pytest.raises(IntegrityError), transaction.atomic():
            RewrapJob.objects.create(tenant=rotated.tenant, target_tkv=target, status=status)
    # Finished jobs pile up freely, and the limit is per tenant.
    RewrapJob.objects.create(tenant=rotated.tenant, target_tkv=target, status=RewrapStatus.FAILED)
    other_target = keyring.active_tkv(other_tenant)
    RewrapJob.objects.create(tenant=other_tenant, target_tkv=other_target, status=RewrapStatus.RUNNING)


# --- Walking ------------------------------------------------------------------------------------------------


def test_it_moves_every_data_key_to_the_active_version_and_destroys_the_retired_one(
    rotated: Rotated, owner: Any
) -> None:
    before = wrapped_rows(rotated.tenant)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    outcomes = finish(job)
    assert outcomes == [walk.Outcome.MORE] * (N // BATCH) + [walk.Outcome.FINISHED]
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == job.total == N and job.unreadable == 0 and job.remaining == 0
    assert job.versions[str(rotated.old.pk)]["done"] == N
    assert job.finished_at is not None and job.rate > 0 and job.eta_seconds is None
    assert (under(rotated.old), under(rotated.new)) == (0, N)
    assert {c.tkv.version: c.data_keys for c in version_coverage(rotated.tenant)} == {1: 0, 2: N}
    after = wrapped_rows(rotated.tenant)
    # Every wrapped value is new (new key, new nonce, new associated data); the DEKs inside are the same.
    assert all(after[blob_id][1] != before[blob_id][1] for blob_id in before)
    assert unopenable(rotated.tenant, rotated.keys, through_keyring=50) == []
    rotated.old.refresh_from_db()
    assert rotated.old.status == VersionStatus.DESTROYED and bytes(rotated.old.wrapped_key) == b""
    assert job.destroyed_versions == [1]
    rotated.new.refresh_from_db()
    assert rotated.new.wrap_count >= N  # counted before wrapping, as uploads do
    (completed,) = events(rotated.tenant, EventType.REWRAP_COMPLETED)
    assert completed.payload["rewrapped"] == N and completed.payload["total"] == N
    assert completed.payload["unreadable"] == 0
    assert completed.payload["destroyedVersions"] == [1]
    # The rotation retired the old KEK; with its only version destroyed it protects nothing any more.
    assert completed.payload["retiredKeyRowIds"] == [rotated.old.kek_id]
    # Running it again does nothing.
    assert walk.run_batch(job.pk) == walk.Outcome.STOPPED


def test_a_finished_walk_names_the_retired_kek_that_now_protects_nothing(
    rotated: Rotated, owner: Any
) -> None:
    retired_keks = [rotated.old.kek_id, rotated.new.kek_id]  # both retired once a third KEK is active
    activate_another_kek(rotated.tenant, owner)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None and job.total == N
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.unreferenced_keys == retired_keks
    (completed,) = events(rotated.tenant, EventType.REWRAP_COMPLETED)
    assert completed.payload["retiredKeyRowIds"] == retired_keks
    assert sorted(completed.payload["destroyedVersions"]) == [1, 2]  # version 2 never wrapped anything
    assert unopenable(rotated.tenant, rotated.keys) == []


def test_pause_stops_the_walk_and_resume_carries_on_from_the_checkpoint(
    rotated: Rotated, owner: Any, admin: Any, queued: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    assert [walk.run_batch(job.pk) for _ in range(2)] == [walk.Outcome.MORE] * 2
    rewrap.pause_rewrap(job, actor=admin)
    paused = checkpoint(job)
    rows = wrapped_rows(rotated.tenant)
    assert paused[0] == RewrapStatus.PAUSED and paused[3] == 2 * BATCH
    assert job.eta_seconds is None
    assert walk.run_batch(job.pk) == walk.Outcome.STOPPED
    assert walk.walk(job.pk) == walk.Outcome.STOPPED
    assert checkpoint(job) == paused and wrapped_rows(rotated.tenant) == rows
    with pytest.raises(rewrap.RewrapError, match="This re-wrap is paused; only a running one can be paused"):
        rewrap.pause_rewrap(job, actor=admin)

    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        rewrap.resume_rewrap(job, actor=owner)
    assert queued == [job.pk]
    with pytest.raises(rewrap.RewrapError, match="only a paused one can be resumed"):
        rewrap.resume_rewrap(job, actor=owner)
    outcomes = finish(job)
    # Carried on from the checkpoint: only the remaining batches ran.
    assert outcomes == [walk.Outcome.MORE] * (N // BATCH - 2) + [walk.Outcome.FINISHED]
    assert job.status == RewrapStatus.COMPLETED and job.done == job.total == N
    assert unopenable(rotated.tenant, rotated.keys) == []
    (paused_event,) = events(rotated.tenant, EventType.REWRAP_PAUSED)
    (resumed_event,) = events(rotated.tenant, EventType.REWRAP_RESUMED)
    assert paused_event.actor_id == admin.pk and resumed_event.actor_id == owner.pk
    assert paused_event.payload == {"jobId": job.pk, "rewrapped": 2 * BATCH, "total": N}
    assert resumed_event.payload == {"jobId": job.pk, "rewrapped": 2 * BATCH, "total": N}


def test_cancel_keeps_moved_keys_valid_and_leaves_the_rest_untouched(rotated: Rotated, owner: Any) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    walk.run_batch(job.pk)
    before = wrapped_rows(rotated.tenant)
    rewrap.cancel_rewrap(job, actor=owner)
    assert walk.run_batch(job.pk) == walk.Outcome.STOPPED
    job.refresh_from_db()
    assert job.status == RewrapStatus.CANCELLED and job.finished_at is not None and not job.is_live
    assert wrapped_rows(rotated.tenant) == before
    assert (under(rotated.new), under(rotated.old)) == (2 * BATCH, N - 2 * BATCH)
    rotated.old.refresh_from_db()
    assert rotated.old.status == VersionStatus.RETIRED  # still needed: not destroyed
    assert unopenable(rotated.tenant, rotated.keys, through_keyring=20) == []
    (cancelled,) = events(rotated.tenant, EventType.REWRAP_CANCELLED)
    assert cancelled.actor_id == owner.pk
    assert cancelled.payload == {"jobId": job.pk, "rewrapped": 2 * BATCH, "total": N}
    with pytest.raises(rewrap.RewrapError, match="This re-wrap is cancelled already"):
        rewrap.cancel_rewrap(job, actor=owner)
    # A new walk picks up exactly what is left.
    again = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert again is not None and again.total == N - 2 * BATCH


def test_a_data_key_deleted_during_a_batch_is_not_counted(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compare-and-swap: a row gone between the batch's read and its write is simply not written."""
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    victim = DataKey.objects.filter(tenant=rotated.tenant).order_by("id").values_list("pk", flat=True)[3]
    real = walk._seal

    def seal(*args: Any) -> Any:
        DataKey.objects.filter(pk=victim).delete()  # after the SELECT, before the UPDATE
        return real(*args)

    monkeypatch.setattr(walk, "_seal", seal)
    assert walk.run_batch(job.pk) == walk.Outcome.MORE
    monkeypatch.undo()
    job.refresh_from_db()
    assert job.done == BATCH - 1 and under(rotated.new) == BATCH - 1
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == N - 1 == under(rotated.new) and under(rotated.old) == 0


def test_it_retargets_when_the_tenant_rotates_during_the_walk(rotated: Rotated, owner: Any) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    walk.run_batch(job.pk)
    uploaded = seed_data_keys(rotated.tenant, 7, rotated.new)  # uploads under the target meanwhile
    newest = rotate_kek(rotated.tenant)
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.target_tkv_id == newest.pk
    moved_to_second = 2 * BATCH + len(uploaded)
    assert job.versions[str(rotated.new.pk)]["total"] == moved_to_second
    assert job.versions[str(rotated.new.pk)]["done"] == moved_to_second
    assert job.versions[str(rotated.old.pk)]["done"] == N
    assert job.total == job.done == N + moved_to_second
    assert under(rotated.old) == under(rotated.new) == 0
    assert under(newest) == N + len(uploaded)
    assert sorted(job.destroyed_versions) == [1, 2]
    assert unopenable(rotated.tenant, {**rotated.keys, **uploaded}) == []


def test_a_full_target_version_is_rotated_and_the_walk_retargets(
    rotated: Rotated, owner: Any, settings: Any
) -> None:
    settings.KODORI_TKV_MAX_WRAPS = 300
    TenantKeyVersion.objects.filter(pk=rotated.new.pk).update(wrap_count=280)  # one batch would pass it
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    assert walk.run_batch(job.pk) == walk.Outcome.MORE
    rotated.new.refresh_from_db()
    assert rotated.new.status == VersionStatus.RETIRED and rotated.new.wrap_count == 280
    assert under(rotated.new) == 0
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    third = TenantKeyVersion.objects.get(tenant=rotated.tenant, status=VersionStatus.ACTIVE)
    assert third.version == 3 and job.target_tkv_id == third.pk
    assert job.done == job.total == N and under(third) == N
    assert third.wrap_count == N <= settings.KODORI_TKV_MAX_WRAPS
    assert sorted(job.destroyed_versions) == [1, 2]
    assert unopenable(rotated.tenant, rotated.keys) == []


def test_a_walk_stops_when_the_tenant_is_sealed(rotated: Rotated, owner: Any) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    services.seal_tenant(rotated.tenant, "Access to the key was denied.")
    assert walk.run_batch(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.FAILED
    assert job.last_error == "Stopped because Acme Corp was sealed: Access to the key was denied."
    assert job.done == BATCH and under(rotated.old) == N - BATCH
    (failed,) = events(rotated.tenant, EventType.REWRAP_FAILED)
    assert failed.payload["error"] == job.last_error and failed.payload["rewrapped"] == BATCH


# --- Tenants ------------------------------------------------------------------------------------------------


def test_it_never_touches_another_tenants_data_keys(
    rotated: Rotated, owner: Any, other_tenant: Tenant
) -> None:
    theirs = rotate_with_keys(other_tenant, 120)
    their_rows = wrapped_rows(other_tenant)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    finish(job)
    assert job.status == RewrapStatus.COMPLETED and job.done == N
    assert wrapped_rows(other_tenant) == their_rows
    theirs.old.refresh_from_db()
    assert theirs.old.status == VersionStatus.RETIRED
    assert under(theirs.old) == 120
    assert unopenable(other_tenant, theirs.keys) == []
    assert not events(other_tenant, EventType.REWRAP_COMPLETED)


def test_another_tenants_job_is_out_of_reach_through_its_scope(
    rotated: Rotated, owner: Any, other_tenant: Tenant
) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    assert rewrap.live_job(other_tenant) is None
    assert not RewrapJob.objects.for_tenant(other_tenant).filter(pk=job.pk).exists()
    assert RewrapJob.objects.for_tenant(rotated.tenant).get(pk=job.pk) == job
    # The other tenant's own walk is independent: one live job per tenant, not per deployment.
    rotate_with_keys(other_tenant, 10)
    theirs = rewrap.start_rewrap(other_tenant)
    assert theirs is not None and theirs.total == 10
    assert rewrap.live_job(rotated.tenant) == job and rewrap.live_job(other_tenant) == theirs
    finish(theirs)
    job.refresh_from_db()
    assert job.status == RewrapStatus.RUNNING and job.done == 0 and under(rotated.old) == N
