"""Concurrent writers on real PostgreSQL: one chain per tenant, no forks, no gaps, and it verifies.

Each thread has its own database connection (Django opens one per thread), so the appends really race.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from audit import payloads, services
from audit.chain import verify
from audit.models import AuditEvent, EventType
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


def race(writers: int, work: Callable[[int], None]) -> float:
    """Run ``work(writer)`` in ``writers`` threads started together; the wall-clock seconds it took."""
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            barrier.wait()
            work(writer)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    # Hand the GIL over sooner than every 5 ms, or the writer holding the tenant's lock waits its turn behind
    # 31 others: in production the writers are separate processes.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    return time.perf_counter() - started


def assert_one_linear_chain(tenant: Tenant, length: int) -> None:
    rows = list(AuditEvent.objects.for_tenant(tenant).order_by("seq").values_list("seq", "prev_hash", "hash"))
    assert [seq for seq, _, _ in rows] == list(range(1, length + 1))  # no gaps
    assert len({prev for _, prev, _ in rows}) == length  # no fork: no two events share a predecessor
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, length))
    status = verify(tenant, full=True)
    assert status.ok and status.verified_seq == length


@pytest.mark.slow
def test_32_writers_times_500_events_make_one_chain(
    tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    writers, each = 32, 500

    def append(writer: int) -> None:
        for i in range(each):
            payload = payloads.blob_uploaded(blob_id=f"{writer}-{i}", name=f"w{writer}.bin", size=i)
            services.record(tenant, EventType.BLOB_UPLOADED, payload=payload)

    seconds = race(writers, append)
    assert_one_linear_chain(tenant, writers * each)
    with capsys.disabled():
        print(f"\n  audit: {writers} writers x {each} appends: {writers * each / seconds:,.0f} appends/s")


def test_rolled_back_appends_leave_no_gaps_between_committed_ones(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    writers, each = 8, 50

    def append(writer: int) -> None:
        for i in range(each):
            target = tenant if (writer + i) % 4 else other_tenant
            try:
                with transaction.atomic():
                    services.record(target, EventType.API_TOKEN_CREATED, payload={"tokenId": i, "w": writer})
                    if i % 5 == 0:
                        raise RuntimeError("the action failed: its event goes too")
            except RuntimeError:
                pass

    race(writers, append)
    committed = sum(1 for w in range(writers) for i in range(each) if i % 5)
    acme = AuditEvent.objects.for_tenant(tenant).count()
    assert acme + AuditEvent.objects.for_tenant(other_tenant).count() == committed
    assert_one_linear_chain(tenant, acme)
    assert_one_linear_chain(other_tenant, committed - acme)
