"""What runs beside an erasure: another tenant working all along is untouched; two erasures at once do
the work once; a deletion cancelled before it falls due erases nothing, and a cancellation that lands after
the task listed the request wins.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, EventType
from blobs.models import Blob
from offboarding import erasure
from offboarding.models import DeletionRequest, DeletionStatus, ErasureStep, Via
from offboarding.services import cancel_deletion, schedule_deletion
from offboarding.tasks import erase_due_tenants
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob, pattern
from tests.conftest import client_for
from tests.encryption.support import rotate_kek
from tests.offboarding.erasure_support import (
    body,
    event_types,
    rows_left,
    run_task,
    schedule_due,
    wrapped_state,
)

pytestmark = pytest.mark.django_db


# --- 4. other tenants are untouched -------------------------------------------------------------------------


class OtherTenantTraffic(threading.Thread):
    """Uploads to and downloads from another tenant in a loop, on its own database connection."""

    def __init__(self, user: Any, tenant: Tenant, known: dict[uuid.UUID, bytes]) -> None:
        super().__init__(name="other-tenant", daemon=True)
        self.user, self.tenant = user, tenant
        self.known = dict(known)
        self.uploads: list[float] = []  # when each upload finished (time.monotonic)
        self.downloads = 0
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        import time

        client = client_for(self.user)
        try:
            number = 0
            while not self.stopping.is_set():
                data = pattern(5_000 + number * 997, seed=number)
                blob = make_blob(self.user, data, name=f"during-{number}.bin", tenant=self.tenant)
                self.known[blob.pk] = data
                self.uploads.append(time.monotonic())
                for blob_id in list(self.known)[-3:]:
                    response = client.get(reverse("blobs:download", args=[blob_id]))
                    if response.status_code != 200 or body(response) != self.known[blob_id]:
                        self.errors.append(f"download of {blob_id}: {response.status_code}")
                    self.downloads += 1
                number += 1
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_another_tenant_works_on_untouched_while_the_erasure_runs(
    tenant: Tenant,
    owner: Any,
    member: Any,
    other_tenant: Tenant,
    outsider: Any,
    blob_root: Path,
    settings: Any,
) -> None:
    import time

    settings.TENANT_ERASURE_BATCH_SIZE = 2
    for n in range(24):
        make_blob(member, pattern(2_000, seed=n), name=f"acme-{n}.bin")
    theirs = {}
    for n in range(4):
        data = pattern(40_000, seed=100 + n)
        theirs[make_blob(outsider, data, name=f"globex-{n}.bin", tenant=other_tenant).pk] = data
    rotate_kek(other_tenant)
    keys_before, versions_before = wrapped_state(other_tenant)
    deletion = schedule_due(tenant, owner)
    traffic = OtherTenantTraffic(outsider, other_tenant, theirs)
    traffic.start()
    try:
        while len(traffic.uploads) < 2:
            time.sleep(0.01)
        started = time.monotonic()
        assert erase_due_tenants() == [tenant.slug]
        ended = time.monotonic()
        while len([t for t in traffic.uploads if t > ended]) < 2:
            time.sleep(0.01)
    finally:
        traffic.stopping.set()
        traffic.join(timeout=60)

    deletion.refresh_from_db()
    assert deletion.status == DeletionStatus.ERASED
    assert traffic.errors == []
    assert any(started < t < ended for t in traffic.uploads), "no upload of the other tenant overlapped"
    # Every file of the other tenant, from before and from during, downloads byte for byte.
    client = client_for(outsider)
    for blob_id, data in traffic.known.items():
        response = client.get(reverse("blobs:download", args=[blob_id]))
        assert response.status_code == 200 and body(response) == data
    keys_after, versions_after = wrapped_state(other_tenant)
    assert {b: keys_after[b] for b in keys_before} == keys_before
    assert set(keys_after) == set(traffic.known)
    assert versions_after == versions_before
    assert chain.verify(other_tenant, full=True).ok
    assert not AuditEvent.objects.filter(
        tenant=other_tenant, type__in=[EventType.TENANT_ERASURE_STARTED, EventType.TENANT_ERASED]
    ).exists()


# --- 6. two erasures at once --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_erasures_at_once_do_the_work_once(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path
) -> None:
    import time

    from django.db import connections

    for n in range(3):
        make_blob(member, pattern(1_000, seed=n), name=f"{n}.bin")
    deletion = schedule_due(tenant, owner)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def erase(name: str) -> None:
        try:
            results[name] = erasure.erase(deletion.pk)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    # A third session holds the tenant row, so the first erasure stops inside its lock until we let go.
    holder = connections.create_connection("default")
    try:
        with holder.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT id FROM tenants_tenant WHERE id = %s FOR UPDATE", [tenant.pk])
            first = threading.Thread(target=erase, args=("first",))
            first.start()
            deadline = time.monotonic() + 30
            # The first holds the advisory lock and waits for the row. (Asked on this test's own connection:
            # pg_stat_activity is a snapshot per transaction, and the holder's transaction is open.)
            with connection.cursor() as watcher:
                while True:
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                    if watcher.fetchone()[0]:
                        break
                    assert time.monotonic() < deadline, "the first erasure never reached the tenant row"
                    time.sleep(0.02)
            second = threading.Thread(target=erase, args=("second",))
            second.start()
            second.join(timeout=30)
            assert results == {"second": False}  # refused at once by the advisory lock
            cursor.execute("ROLLBACK")
        first.join(timeout=60)
    finally:
        holder.close()

    assert errors == [] and results == {"first": True, "second": False}
    tenant.refresh_from_db()
    deletion.refresh_from_db()
    assert tenant.state == TenantState.ERASED and deletion.status == DeletionStatus.ERASED
    assert rows_left(tenant) == {}
    types = event_types(tenant)
    assert types.count(EventType.TENANT_ERASURE_STARTED) == types.count(EventType.TENANT_ERASED) == 1
    assert chain.verify(tenant, full=True).ok


# --- 7. cancellation ----------------------------------------------------------------------------------------


def key_material(tenant: Tenant) -> tuple[Any, ...]:
    keys, versions = wrapped_state(tenant)
    return keys, versions, Blob.objects.filter(tenant=tenant).count(), event_types(tenant)


def test_a_deletion_cancelled_before_it_falls_due_erases_nothing(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    blob = make_blob(member, pattern(5_000), name="keep.bin")
    deletion = schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=7)
    before = key_material(tenant)

    assert erasure.destroy_keys(deletion) is False  # not due yet: nothing happens
    assert key_material(tenant) == before
    cancel_deletion(tenant, actor=owner, via=Via.OWNER)
    # Even with its date in the past, a cancelled request is never picked up.
    DeletionRequest.objects.filter(pk=deletion.pk).update(due_at=timezone.now() - timedelta(days=1))
    assert run_task(django_capture_on_commit_callbacks) == []

    tenant.refresh_from_db()
    deletion.refresh_from_db()
    assert tenant.state == TenantState.ACTIVE and deletion.status == DeletionStatus.CANCELLED
    assert deletion.step == ErasureStep.NOT_STARTED
    assert key_material(tenant)[:3] == before[:3]
    response = client_for(member).get(reverse("blobs:download", args=[blob.pk]))
    assert response.status_code == 200 and body(response) == pattern(5_000)


def test_a_cancellation_that_lands_after_the_task_listed_the_request_wins(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path
) -> None:
    make_blob(member, pattern(5_000), name="keep.bin")
    deletion = schedule_due(tenant, owner)
    assert [d.pk for d in erasure.due_requests()] == [deletion.pk]  # the task has it in its list ...
    cancel_deletion(tenant, actor=owner, via=Via.OWNER)  # ... when an owner cancels
    before = key_material(tenant)

    assert erasure.erase(deletion.pk) is False

    assert key_material(tenant) == before
    tenant.refresh_from_db()
    assert tenant.state == TenantState.ACTIVE
    assert DeletionRequest.objects.get(pk=deletion.pk).status == DeletionStatus.CANCELLED
