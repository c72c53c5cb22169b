"""The counters pages read instead of counting rows (issue 17) stay exact under real concurrency.

Per key version data-key counts and per tenant blob totals are a base plus deltas that PostgreSQL triggers
append in the same transaction as the rows; a fold moves deltas into the bases. Here uploads, deletes (of
data keys the walk is moving), another tenant's uploads, an abandoned upload, a re-wrap walk and repeated
folds all run at once on their own connections; afterwards every counter, read as pages read it, equals a
real COUNT/SUM over the rows, before and after a final fold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, Q, Sum

from blobs import services as blob_services
from blobs.models import Blob, BlobStatDelta, BlobStatus, TenantBlobStats, fold_counters
from blobs.uploads import Upload
from encryption import coverage
from encryption.models import DataKey, DataKeyCountDelta, RewrapStatus, TenantKeyVersion
from encryption.rewrap import jobs, walk
from tenants.models import Tenant
from tests.blobs.support import make_blob
from tests.encryption.support import rotate_kek

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BEFORE = 120  # blobs under the version that retires
UPLOADS = 40  # per uploading thread, during the walk
DELETES = 50


def _real_version_counts() -> dict[int, int]:
    rows = DataKey.objects.values("tkv_id").annotate(n=Count("id")).values_list("tkv_id", "n")
    counts = {pk: 0 for pk in TenantKeyVersion.objects.values_list("pk", flat=True)}
    counts.update(dict(rows))
    return counts


def _kept_version_counts() -> dict[int, int]:
    return {tkv.pk: n for tkv, n in coverage.with_data_keys(TenantKeyVersion.objects.all())}


def _real_tenant_stats(tenant: Tenant) -> tuple[int, int, int]:
    ready = Q(status=BlobStatus.READY)
    totals = Blob.objects.filter(tenant=tenant).aggregate(
        c=Count("id", filter=ready), b=Sum("size", filter=ready), t=Sum("size")
    )
    return int(totals["c"]), int(totals["b"] or 0), int(totals["t"] or 0)


def _kept_tenant_stats(tenant: Tenant) -> tuple[int, int, int]:
    stats = TenantBlobStats.of(tenant.pk)
    return stats.ready_count, stats.ready_bytes, stats.total_bytes


def _run_all(*jobs_: Callable[[], None]) -> list[BaseException]:
    start = threading.Barrier(len(jobs_))
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs_]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors


def test_counters_equal_real_counts_after_concurrent_uploads_deletes_and_a_rewrap(
    tenant: Tenant, other_tenant: Tenant, member: Any, outsider: Any, blob_root: Path, settings: Any
) -> None:
    settings.KODORI_REWRAP_BATCH_SIZE = 7  # many small batches, interleaved with the uploads and deletes
    before = [make_blob(member, b"x" * (i % 13 + 1), name=f"before-{i}.txt") for i in range(BEFORE)]
    old_version = before[0].data_key.tkv_id
    new_version = rotate_kek(tenant)
    job = jobs.start_rewrap(tenant)
    assert job is not None
    abandoned = Upload.begin(tenant, member, "abandoned.bin", None, declared_size=1000)

    def upload(user: Any, prefix: str) -> Callable[[], None]:
        def run() -> None:
            for i in range(UPLOADS):
                make_blob(user, b"y" * (i + 1), name=f"{prefix}-{i}.txt")

        return run

    def delete() -> None:
        for blob in before[::2][:DELETES]:
            blob_services.delete_blob(Blob.objects.get(pk=blob.pk), actor=member)

    done = threading.Event()

    def fold() -> None:
        while not done.wait(0.02):
            fold_counters()

    def walk_then_stop_folding() -> None:
        try:
            walk.walk(job.pk)
        finally:
            done.set()

    errors = _run_all(
        upload(member, "a"),
        upload(member, "b"),
        upload(outsider, "other"),
        delete,
        walk_then_stop_folding,
        fold,
    )
    assert not errors, "\n\n".join(map(str, errors))
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED
    # Mid-state: the abandoned reservation counts against the quota but is not a file.
    assert _kept_tenant_stats(tenant) == _real_tenant_stats(tenant)
    ready, _, total = _kept_tenant_stats(tenant)
    assert ready == BEFORE - DELETES + 2 * UPLOADS
    assert total == _kept_tenant_stats(tenant)[1] + 1000
    abandoned.abort()

    kept, real = _kept_version_counts(), _real_version_counts()
    assert kept == real
    assert kept[old_version] == 0  # everything moved off the retired version, nothing counted twice
    assert kept[new_version.pk] == BEFORE - DELETES + 2 * UPLOADS
    for t in (tenant, other_tenant):
        assert _kept_tenant_stats(t) == _real_tenant_stats(t)
    assert _kept_tenant_stats(other_tenant)[0] == UPLOADS
    assert _kept_tenant_stats(tenant)[2] == _kept_tenant_stats(tenant)[1]  # the reservation's bytes are freed

    assert fold_counters() > 0
    assert not BlobStatDelta.objects.exists() and not DataKeyCountDelta.objects.exists()
    assert dict(TenantKeyVersion.objects.values_list("pk", "data_key_count")) == real  # the bases alone
    for t in (tenant, other_tenant):
        base = TenantBlobStats.objects.get(tenant=t)
        assert (base.ready_count, base.ready_bytes, base.total_bytes) == _real_tenant_stats(t)


def test_a_statement_that_changes_no_total_appends_no_delta(
    tenant: Tenant, member: Any, blob_root: Path
) -> None:
    """The scrub marks blobs verified all day: that must not grow the deltas."""
    blob = make_blob(member, b"abc")
    before = BlobStatDelta.objects.count()
    Blob.objects.filter(pk=blob.pk).update(verified_at=blob.completed_at)
    assert BlobStatDelta.objects.count() == before
    Blob.objects.filter(pk=blob.pk).update(size=5)  # one that does change a total appends one row
    assert BlobStatDelta.objects.count() == before + 1
    assert _kept_tenant_stats(tenant) == (1, 5, 5)


def test_a_counter_can_never_go_negative(tenant: Tenant, member: Any, blob_root: Path) -> None:
    """A bug that subtracts twice fails loudly at the database instead of showing a wrong number."""
    from django.db import IntegrityError

    make_blob(member, b"abc")
    fold_counters()
    with pytest.raises(IntegrityError, match="blob_tenant_stats_not_negative"):
        TenantBlobStats.objects.filter(tenant=tenant).update(ready_count=-1)
