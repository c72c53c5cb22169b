"""The re-wrap walk when things go wrong, in process: rows that do not authenticate, keys that refuse
(disabled, revoked, busy), the task's retries, the watchdog, and what the job row and the audit log may
never contain.
``tests/encryption/rewrap_live/test_rewrap_worker.py`` is the integration twin (real workers, SIGKILLs, a
throttled AWS emulator).

Providers are the real ones; a refusing kodori-managed KEK is simulated (``GlobalKeyProvider.unwrap`` raising
what a cloud KMS would).
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from encryption import keyring, rewrap, services, tasks
from encryption.format.envelope import FORMAT_VERSION
from encryption.models import (
    DataKey,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
)
from encryption.providers import FailureKind, ProviderError
from encryption.rewrap import ending, walk
from tenants.models import Tenant
from tests.encryption.rewrap.support import (
    BATCH,
    N,
    Rotated,
    activate_another_kek,
    checkpoint,
    events,
    finish,
    refuse_unwrap,
)
from tests.encryption.support import rotate_kek, seed_data_keys, under, unopenable, wrapped_rows

pytestmark = pytest.mark.django_db

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
    third = rotate_kek(rotated.tenant)
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
    assert ending.stalled_jobs() == [dead.pk]
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
