"""The re-wrap walk's rules, in process: who may start one and when, pause / resume / cancel, what each batch
does to the table, what happens when a key refuses or a row does not authenticate, and what the audit log and
the job row say about it. ``test_rewrap_worker.py`` is the integration twin (real workers, SIGKILLs).

No Celery worker runs here: ``run_rewrap.delay`` is replaced by a list the tests read, and the walk is driven
batch by batch with ``walk.run_batch``. Providers are the real ones; a refusing kodori-managed KEK is
simulated (``GlobalKeyProvider.unwrap`` raising what a cloud KMS would), and one test wraps the walk's
``_rewrap_rows`` only to delete a row between a batch's read and its write.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEvent, EventType
from encryption import keyring, rewrap, services, tasks, walk
from encryption.coverage import version_coverage
from encryption.envelope import FORMAT_VERSION
from encryption.models import (
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    RewrapTrigger,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
    WrapMethod,
)
from encryption.providers import FailureKind, KeyContext, ProviderError
from encryption.providers.local import GlobalKeyProvider
from tenants.models import Tenant
from tests.encryption.rewrap_support import seed_data_keys, under, unopenable, wrapped_rows

pytestmark = pytest.mark.django_db

N = 250  # data keys under the retired version
BATCH = 50


@dataclass
class Rotated:
    """A tenant with ``N`` data keys under ``old`` (retired) and ``new`` active, no job yet."""

    tenant: Tenant
    keys: dict[uuid.UUID, bytes] = field(repr=False)  # plaintext DEKs: never in a failure report
    old: TenantKeyVersion
    new: TenantKeyVersion


@pytest.fixture(autouse=True)
def queued(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[int]:
    """Job ids handed to ``run_rewrap.delay`` (nothing reaches Redis); small batches, no automatic walks."""
    settings.KODORI_REWRAP_BATCH_SIZE = BATCH
    settings.KODORI_REWRAP_AFTER_ROTATION = False
    keyring.cache.clear()
    calls: list[int] = []
    monkeypatch.setattr(tasks.run_rewrap, "delay", lambda job_pk: calls.append(job_pk))
    monkeypatch.setattr(tasks.vacuum_data_keys, "delay", lambda: None)
    return calls


def _rotated(tenant: Tenant, n: int = N) -> Rotated:
    old = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, n, old)
    new = keyring.rotate_tkv(tenant)
    return Rotated(tenant, keys, old, new)


@pytest.fixture
def rotated(tenant: Tenant) -> Rotated:
    return _rotated(tenant)


def finish(job: RewrapJob, max_batches: int = 100) -> list[walk.Outcome]:
    """Run batches until the walk is done; a walk that never ends fails the test instead of hanging."""
    outcomes = []
    for _ in range(max_batches):
        outcome = walk.run_batch(job.pk)
        outcomes.append(outcome)
        if outcome != walk.Outcome.MORE:
            job.refresh_from_db()
            return outcomes
    raise AssertionError(f"the walk was not done after {max_batches} batches: {outcomes[-5:]}")


def events(tenant: Tenant, kind: EventType) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, type=kind).order_by("seq"))


def refuse_unwrap(monkeypatch: pytest.MonkeyPatch, version: int, kind: FailureKind) -> list[int]:
    """Make the kodori-managed KEK refuse to unwrap key version ``version`` as a KMS would; count calls."""
    real = GlobalKeyProvider.unwrap
    calls: list[int] = []

    def unwrap(self: GlobalKeyProvider, ciphertext: bytes, context: KeyContext) -> bytes:
        if context.key_version == version:
            calls.append(version)
            raise ProviderError(kind, f"Simulated {kind} from the KMS for key version {version}.")
        return real(self, ciphertext, context)

    monkeypatch.setattr(GlobalKeyProvider, "unwrap", unwrap)
    keyring.cache.clear()
    return calls


def activate_another_kek(tenant: Tenant, owner: Any) -> TenantKeyVersion:
    """Register and activate another (kodori-managed) KEK: the current one retires, a new version starts."""
    kek = TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING)
    services.activate_key(kek, actor=owner)
    return keyring.active_tkv(tenant)


def checkpoint(job: RewrapJob) -> tuple[Any, ...]:
    job.refresh_from_db()
    return (job.status, job.cursor_tkv_id, job.cursor_id, job.done, job.unreadable, job.total, job.versions)


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
    _rotated(tenant, 20)
    assert not RewrapJob.objects.exists()
    assert not events(tenant, EventType.REWRAP_STARTED)


@pytest.mark.django_db(transaction=True)
def test_a_rotation_starts_exactly_one_walk_and_a_second_rotation_joins_it(
    tenant: Tenant, settings: Any, queued: list[int]
) -> None:
    settings.KODORI_REWRAP_AFTER_ROTATION = True
    first = keyring.active_tkv(tenant)
    seed_data_keys(tenant, 30, first)
    second = keyring.rotate_tkv(tenant)
    (job,) = RewrapJob.objects.filter(tenant=tenant)
    assert (job.trigger, job.started_by, job.status) == (RewrapTrigger.ROTATION, None, RewrapStatus.RUNNING)
    assert (job.target_tkv_id, job.total) == (second.pk, 30)
    assert queued == [job.pk]
    (started,) = events(tenant, EventType.REWRAP_STARTED)
    assert started.actor_id is None and started.payload["trigger"] == RewrapTrigger.ROTATION

    keyring.rotate_tkv(tenant)  # the running walk retargets itself; no second job, nothing queued twice
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
    keyring.rotate_tkv(tenant)
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
    assert completed.payload["retiredKeyRowIds"] == []  # the same KEK is still active
    # Running it again does nothing.
    assert walk.run_batch(job.pk) == walk.Outcome.STOPPED


def test_a_finished_walk_names_the_retired_kek_that_now_protects_nothing(
    rotated: Rotated, owner: Any
) -> None:
    retired_kek = TenantKey.objects.get(pk=rotated.old.kek_id)
    activate_another_kek(rotated.tenant, owner)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None and job.total == N
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.unreferenced_keys == [retired_kek.pk]
    (completed,) = events(rotated.tenant, EventType.REWRAP_COMPLETED)
    assert completed.payload["retiredKeyRowIds"] == [retired_kek.pk]
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
    real = walk._rewrap_rows

    def rewrap_rows(*args: Any) -> tuple[int, int]:
        DataKey.objects.filter(pk=victim).delete()  # after the SELECT, before the UPDATE
        return real(*args)

    monkeypatch.setattr(walk, "_rewrap_rows", rewrap_rows)
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
    newest = keyring.rotate_tkv(rotated.tenant)
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
    theirs = _rotated(other_tenant, 120)
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
    _rotated(other_tenant, 10)
    theirs = rewrap.start_rewrap(other_tenant)
    assert theirs is not None and theirs.total == 10
    assert rewrap.live_job(rotated.tenant) == job and rewrap.live_job(other_tenant) == theirs
    finish(theirs)
    job.refresh_from_db()
    assert job.status == RewrapStatus.RUNNING and job.done == 0 and under(rotated.old) == N


# --- Data keys that do not authenticate ---------------------------------------------------------------------


def test_a_tampered_wrapped_key_is_counted_unreadable_and_left_in_place(rotated: Rotated, owner: Any) -> None:
    victim = DataKey.objects.filter(tenant=rotated.tenant).order_by("id")[BATCH + 7]
    tampered = bytearray(victim.wrapped_dek)
    tampered[20] ^= 0x01
    DataKey.objects.filter(pk=victim.pk).update(wrapped_dek=bytes(tampered))
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    finish(job)
    assert job.status == RewrapStatus.FAILED
    assert (job.done, job.unreadable, job.total) == (N - 1, 1, N)
    assert job.remaining == 0 and job.percent == 100
    assert job.versions[str(rotated.old.pk)]["unreadable"] == 1
    assert "1 data keys did not authenticate under their own key version" in job.last_error
    victim.refresh_from_db()
    assert (victim.tkv_id, bytes(victim.wrapped_dek)) == (rotated.old.pk, bytes(tampered))
    rotated.old.refresh_from_db()
    assert rotated.old.status == VersionStatus.RETIRED  # still referenced: not destroyed
    assert job.destroyed_versions == []
    others = {k: v for k, v in rotated.keys.items() if k != victim.blob_id}
    assert unopenable(rotated.tenant, others) == []
    with pytest.raises(ProviderError) as refused:
        keyring.open_data_key(rotated.tenant, victim.blob_id)
    assert refused.value.kind == FailureKind.INTEGRITY
    (failed,) = events(rotated.tenant, EventType.REWRAP_FAILED)
    assert failed.payload["error"] == job.last_error and failed.payload["rewrapped"] == N - 1
    assert not events(rotated.tenant, EventType.REWRAP_COMPLETED)


def test_a_data_key_copied_to_another_blob_opens_neither_before_nor_after_the_walk(
    rotated: Rotated, owner: Any
) -> None:
    original = DataKey.objects.filter(tenant=rotated.tenant).first()
    assert original is not None
    stranger = uuid.uuid4()
    DataKey.objects.create(
        tenant=rotated.tenant,
        blob_id=stranger,
        tkv=rotated.old,
        wrapped_dek=bytes(original.wrapped_dek),
        format_version=FORMAT_VERSION,
    )
    with pytest.raises(ProviderError, match="does not match its blob"):
        keyring.open_data_key(rotated.tenant, stranger)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None and job.total == N + 1
    finish(job)
    assert (job.status, job.done, job.unreadable) == (RewrapStatus.FAILED, N, 1)
    keyring.cache.clear()
    with pytest.raises(ProviderError, match="does not match its blob"):
        keyring.open_data_key(rotated.tenant, stranger)
    assert DataKey.objects.get(blob_id=stranger).tkv_id == rotated.old.pk
    assert keyring.open_data_key(rotated.tenant, original.blob_id) == rotated.keys[original.blob_id]


# --- Keys that refuse ---------------------------------------------------------------------------------------


def test_a_source_version_under_a_disabled_key_is_not_walked(tenant: Tenant, owner: Any) -> None:
    first = keyring.active_tkv(tenant)
    seed_data_keys(tenant, N, first)
    second = activate_another_kek(tenant, owner)
    movable = seed_data_keys(tenant, 40, second)
    activate_another_kek(tenant, owner)
    services.disable_key(TenantKey.objects.get(pk=first.kek_id), actor=owner)
    stranded = {k: v for k, v in wrapped_rows(tenant).items() if v[0] == first.pk}
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    assert job.total == 40 and list(job.versions) == [
        str(second.pk)
    ]  # the disabled KEK's version: not counted
    finish(job)
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == 40 and job.destroyed_versions == [2]
    first.refresh_from_db()
    assert first.status == VersionStatus.RETIRED and under(first) == N
    assert {k: v for k, v in wrapped_rows(tenant).items() if v[0] == first.pk} == stranded  # untouched
    assert unopenable(tenant, movable) == []
    # What is left can only be reached by enabling that key again: a new walk has nothing to do.
    with pytest.raises(rewrap.RewrapError, match="Nothing to re-wrap"):
        rewrap.start_rewrap(tenant, actor=owner)


def test_a_key_disabled_during_the_walk_stops_the_walk_on_its_versions(rotated: Rotated, owner: Any) -> None:
    old_kek = TenantKey.objects.get(pk=rotated.old.kek_id)
    activate_another_kek(rotated.tenant, owner)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    services.disable_key(old_kek, actor=owner)
    finish(job)
    assert job.status == RewrapStatus.FAILED
    assert job.done == BATCH and under(rotated.old) == N - BATCH
    assert f"{N - BATCH:,} data keys under key version 1" in job.last_error
    assert "disabled" in job.last_error
    rotated.old.refresh_from_db()
    assert rotated.old.status == VersionStatus.RETIRED


def test_a_retired_version_whose_key_refuses_is_skipped_and_named(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 refuses from the first batch on; version 2's keys still move; the tenant is not sealed."""
    second_batch = seed_data_keys(rotated.tenant, 60, rotated.new)
    third = keyring.rotate_tkv(rotated.tenant)
    refused = refuse_unwrap(monkeypatch, 1, FailureKind.DENIED)
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None and job.total == N + 60
    finish(job, max_batches=20)
    assert refused
    assert job.status == RewrapStatus.FAILED
    assert job.done == 60 and under(third) == 60 and under(rotated.old) == N
    entry = job.versions[str(rotated.old.pk)]
    assert entry["done"] == 0 and "Simulated denied" in entry["error"]
    assert f"{N:,} data keys under key version 1: Simulated denied" in job.last_error
    assert job.destroyed_versions == [2]
    rotated.tenant.refresh_from_db()
    assert not rotated.tenant.is_sealed  # a retired key refusing seals nothing: uploads still work
    monkeypatch.undo()
    assert unopenable(rotated.tenant, {**rotated.keys, **second_batch}) == []


def test_a_retired_version_refusing_midway_is_skipped_from_its_checkpoint(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    refuse_unwrap(monkeypatch, 1, FailureKind.NOT_FOUND)
    finish(job, max_batches=20)
    assert job.status == RewrapStatus.FAILED
    assert job.done == BATCH and under(rotated.old) == N - BATCH
    assert f"{N - BATCH:,} data keys under key version 1" in job.last_error


def test_the_active_key_refusing_fails_the_job_and_seals_the_tenant(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    refuse_unwrap(monkeypatch, 2, FailureKind.DENIED)
    assert walk.run_batch(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.FAILED and job.done == 0
    assert job.last_error.startswith("The active key could not be used: Simulated denied")
    assert under(rotated.old) == N
    rotated.tenant.refresh_from_db()
    assert rotated.tenant.is_sealed and "Simulated denied" in rotated.tenant.seal_reason
    assert events(rotated.tenant, EventType.TENANT_SEALED)
    (failed,) = events(rotated.tenant, EventType.REWRAP_FAILED)
    assert failed.payload["error"] == job.last_error


def test_a_transient_provider_error_leaves_the_checkpoint_and_is_shown(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    before = checkpoint(job)
    rows = wrapped_rows(rotated.tenant)
    refuse_unwrap(monkeypatch, 1, FailureKind.TRANSIENT)
    with pytest.raises(ProviderError):
        walk.run_batch(job.pk)
    assert checkpoint(job) == before and wrapped_rows(rotated.tenant) == rows
    assert job.status == RewrapStatus.RUNNING
    assert job.last_error == "Simulated transient from the KMS for key version 1. Kodori retries on its own."
    monkeypatch.undo()
    finish(job)
    assert job.status == RewrapStatus.COMPLETED and job.last_error == "" and job.done == N


def test_the_task_gives_up_on_a_kms_that_stays_busy(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    calls = refuse_unwrap(monkeypatch, 1, FailureKind.TRANSIENT)
    result = tasks.run_rewrap.apply(args=(job.pk,))  # eager: every retry runs at once, countdowns skipped
    assert result.get() == walk.Outcome.FINISHED
    assert len(calls) == tasks.REWRAP_RETRIES + 1
    job.refresh_from_db()
    assert job.status == RewrapStatus.FAILED and job.done == 0
    assert job.last_error.startswith(f"Gave up after {tasks.REWRAP_RETRIES} retries: Simulated transient")


def test_the_task_walks_a_slice_and_queues_the_rest(
    rotated: Rotated, owner: Any, settings: Any, queued: list[int]
) -> None:
    settings.KODORI_REWRAP_SLICE_SECONDS = 0  # one batch per slice
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    queued.clear()
    assert tasks.run_rewrap(job.pk) == walk.Outcome.MORE
    assert queued == [job.pk]
    outcomes = []
    while queued:
        outcomes.append(tasks.run_rewrap(queued.pop()))
    assert outcomes[-1] == walk.Outcome.FINISHED and len(outcomes) == N // BATCH
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED and job.done == N
    assert tasks.run_rewrap(job.pk) == walk.Outcome.STOPPED and queued == []


# --- Watchdog and progress ----------------------------------------------------------------------------------


def test_the_watchdog_requeues_only_stale_running_jobs(
    tenant: Tenant, other_tenant: Tenant, settings: Any, queued: list[int]
) -> None:
    settings.KODORI_REWRAP_STALL_SECONDS = 60
    third = Tenant.objects.create(slug="initech", name="Initech")
    fourth = Tenant.objects.create(slug="umbrella", name="Umbrella")
    stale = timezone.now() - datetime.timedelta(seconds=61)

    def job(for_tenant: Tenant, status: RewrapStatus, updated: datetime.datetime | None) -> RewrapJob:
        created = RewrapJob.objects.create(
            tenant=for_tenant, target_tkv=keyring.active_tkv(for_tenant), status=status
        )
        if updated is not None:  # auto_now: only an update() can set it back
            RewrapJob.objects.filter(pk=created.pk).update(updated_at=updated)
        return created

    dead = job(tenant, RewrapStatus.RUNNING, stale)
    job(other_tenant, RewrapStatus.RUNNING, None)  # its worker just checkpointed
    job(third, RewrapStatus.PAUSED, stale)
    job(fourth, RewrapStatus.COMPLETED, stale)
    job(fourth, RewrapStatus.FAILED, stale)
    assert walk.stalled_jobs() == [dead.pk]
    assert tasks.resume_stalled_rewraps() == [dead.pk]
    assert queued == [dead.pk]


def test_progress_eta_and_remaining() -> None:
    job = RewrapJob(total=1000, done=250, unreadable=50, rate=100.0, status=RewrapStatus.RUNNING)
    assert (job.remaining, job.percent, job.eta_seconds) == (700, 30, 7)
    job.rate = 0.0
    assert job.eta_seconds is None  # no batch yet: no estimate
    job.rate, job.status = 100.0, RewrapStatus.PAUSED
    assert job.eta_seconds is None and job.is_live
    assert RewrapJob(total=0, done=0).percent == 100
    # Keys deleted meanwhile never push the numbers past their ends.
    assert RewrapJob(total=10, done=12).percent == 100
    assert RewrapJob(total=10, done=12).remaining == 0
    assert RewrapJob(total=3, done=1, rate=3.0, status=RewrapStatus.RUNNING).eta_seconds == 1


# --- What is written down -----------------------------------------------------------------------------------


def _secrets_in(texts: list[str], secrets: list[bytes]) -> list[str]:
    found = []
    for secret in secrets:
        forms = [
            secret.hex(),
            base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="),
            secret.decode("latin-1"),
        ]
        found += [form[:12] for form in forms for text in texts if form in text]
    return found


def test_no_key_material_reaches_the_job_row_or_the_audit_log(
    rotated: Rotated, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = TenantKeyVersion.objects.select_related("kek").filter(pk__in=[rotated.old.pk, rotated.new.pk])
    tkv_keys = [keyring.tkv_key(tkv) for tkv in versions]
    victim = DataKey.objects.filter(tenant=rotated.tenant).order_by("id").first()
    assert victim is not None
    DataKey.objects.filter(pk=victim.pk).update(wrapped_dek=bytes(victim.wrapped_dek)[:-1] + b"\x00")
    job = rewrap.start_rewrap(rotated.tenant, actor=owner)
    assert job is not None
    walk.run_batch(job.pk)
    refuse_unwrap(monkeypatch, 1, FailureKind.TRANSIENT)
    with pytest.raises(ProviderError):
        walk.run_batch(job.pk)
    job.refresh_from_db()
    texts = [json.dumps(job.versions), job.last_error]
    monkeypatch.undo()
    finish(job)
    assert job.status == RewrapStatus.FAILED  # the tampered row: a long last_error to search too
    payloads = [json.dumps(e.payload) for e in AuditEvent.objects.filter(tenant=rotated.tenant)]
    assert len(events(rotated.tenant, EventType.REWRAP_STARTED)) == 1
    assert len(events(rotated.tenant, EventType.REWRAP_FAILED)) == 1
    texts += [
        json.dumps(job.versions),
        job.last_error,
        json.dumps(job.destroyed_versions),
        json.dumps(job.unreferenced_keys),
        *payloads,
    ]
    assert _secrets_in(texts, [*tkv_keys, *rotated.keys.values()]) == []
