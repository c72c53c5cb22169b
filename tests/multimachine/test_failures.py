"""Machines lost: a worker SIGKILLed in the middle of a re-wrap walk both workers share, Redis restarted
empty in the middle of another, and a web server SIGKILLed in the middle of an upload. Nothing is lost and
nothing half-done becomes visible (the cluster: ``conftest.py``)."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, EventType
from blobs.models import Blob, BlobStatus
from encryption import keyring
from encryption.models import (
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    VersionStatus,
    WrapMethod,
)
from kodori.devtools import cluster
from tenants.models import Tenant
from tests.blobs.support import make_token
from tests.conftest import PASSWORD
from tests.encryption.support import (
    enable_cloud_kms,
    seed_data_keys,
    under,
    unopenable,
    wait_for,
    wrapped_rows,
)
from tests.multimachine.conftest import Cluster, cluster_password
from tests.multimachine.support import (
    MIB,
    Browser,
    address_of,
    api,
    aws_key_for,
    fetch,
    listed,
    parts_in_s3,
    redis_inventory,
    refreshed,
    sha256_of,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


# --- A walk shared by both workers, one of them killed ------------------------------------------------------

SEEDED = 40_000
# A worker's log lines for each slice of the walk it takes, and for the slice that finishes the walk.
WALK_SLICE = re.compile(r"Task encryption\.tasks\.run_rewrap\[[0-9a-f-]+\] received")
WALK_FINISHED = re.compile(
    r"Task encryption\.tasks\.run_rewrap\[[0-9a-f-]+\] succeeded in [0-9.]+s: 'finished'"
)


def test_a_rewrap_walk_shared_by_both_workers_completes_on_the_survivor_of_a_sigkill(
    whole: Cluster, kms: Any, tenant: Tenant, owner: Any, member: Any
) -> None:
    enable_cloud_kms(tenant)
    token = make_token(member)
    a, b = api(whole.web_a, whole.port, token), api(whole.web_b, whole.port, token)
    files: dict[str, str] = {}  # blob id -> sha256, uploaded before the rotation through both servers
    for i in range(4):
        data = os.urandom(random.randrange(0, 300_000))
        status, created = (a if i % 2 else b).upload(f"file-{i}.bin", data, len(data))
        assert status == 201, created
        files[created["id"]] = hashlib.sha256(data).hexdigest()
    old = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, SEEDED, old)
    before = wrapped_rows(tenant)
    moved = SEEDED + len(files)
    assert len(before) == moved

    # The owner (signed in on B) registers an AWS key through A; a worker probes it and activates it, and the
    # rotation starts the walk (KODORI_REWRAP_AFTER_ROTATION is on in production).
    key_arn, role_arn = aws_key_for(kms, tenant)
    browser = Browser()
    browser.sign_in(whole.url(whole.web_b), cluster_password(owner).email, PASSWORD)
    form = {"key_id": key_arn, "role_arn": role_arn, "region": ""}
    status, _headers, page = browser.request(whole.url(whole.web_a), "POST", "/encryption/register/aws", form)
    assert status == 302, page[-2000:]
    job = wait_for(
        "the walk the rotation starts",
        lambda: RewrapJob.objects.filter(tenant=tenant).first(),
        timeout=60,
        every=0.1,
    )
    assert job.total == moved
    # A second chain of slices, so that each worker (one task at a time) walks one.
    whole.celery.send_task("encryption.tasks.run_rewrap", args=[job.pk])
    workers = list(cluster.WORKER_NAMES)
    seen = {name: len(whole.processes.log(name)) for name in workers}

    def slices(name: str) -> list[str]:
        """The walk's slices ``name`` received since ``seen``."""
        return WALK_SLICE.findall(whole.processes.log(name)[seen[name] :])

    def both_walking() -> bool:
        job.refresh_from_db()
        return (all(slices(name) for name in workers) and job.done > 0) or not job.is_live

    wait_for("both workers to walk", both_walking, timeout=60, every=0.02)
    assert job.status == RewrapStatus.RUNNING, "the walk ended before both workers took part (make it longer)"
    whole.processes.kill(workers[0])
    seen[workers[1]] = len(whole.processes.log(workers[1]))
    job.refresh_from_db()
    done_at_kill = job.done
    assert 0 < done_at_kill < moved
    wait_for("the survivor to finish the walk", lambda: not refreshed(job).is_live, timeout=90, every=0.2)
    whole.notes["redis_keys_after_worker_kill"] = redis_inventory(whole.env["REDIS_URL"])

    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == job.total == moved and job.unreadable == 0
    assert sum(entry["done"] for entry in job.versions.values()) == moved
    assert whole.processes.running[workers[0]].poll() is not None
    wait_for(
        "the survivor's log to show the slice that finished the walk",
        lambda: WALK_FINISHED.search(whole.processes.log(workers[1])[seen[workers[1]] :]),
        timeout=30,
    )
    # Every data key moved exactly once: each row now under the target, rewritten, and counted once.
    after = wrapped_rows(tenant)
    assert after.keys() == before.keys()
    assert {tkv for tkv, _ in after.values()} == {job.target_tkv_id}
    assert all(after[blob][1] != before[blob][1] for blob in before)
    old.refresh_from_db()
    assert old.status == VersionStatus.DESTROYED
    assert unopenable(tenant, keys, through_keyring=100) == []
    # Every file still downloads, and authenticates, through either server.
    for blob_id, sha in files.items():
        for server in (a, b):
            code, _headers, chunks = server.download(blob_id)
            assert code == 200 and sha256_of(chunks) == sha
    (completed,) = AuditEvent.objects.filter(tenant=tenant, type=EventType.REWRAP_COMPLETED)
    assert completed.payload["rewrapped"] == moved
    assert chain.verify(tenant, full=True).ok


# --- Redis restarted empty --------------------------------------------------------------------------------


def test_redis_restarted_empty_loses_no_work(
    whole: Cluster, kms: Any, tenant: Tenant, owner: Any, other_tenant: Tenant, outsider: Any
) -> None:
    enable_cloud_kms(tenant)
    # Enough that the first slice (1 s) cannot finish it, however fast the machine: it needs Redis afterwards.
    old = keyring.active_tkv(tenant)
    seed_data_keys(tenant, 40_000, old)
    key_arn, role_arn = aws_key_for(kms, tenant)
    browser = Browser()
    browser.sign_in(whole.url(whole.web_a), cluster_password(owner).email, PASSWORD)
    form = {"key_id": key_arn, "role_arn": role_arn, "region": ""}
    status, _headers, page = browser.request(whole.url(whole.web_a), "POST", "/encryption/register/aws", form)
    assert status == 302, page[-2000:]
    job = wait_for("the rotation's walk", lambda: RewrapJob.objects.filter(tenant=tenant).first(), timeout=60)
    wait_for("the walk to begin", lambda: refreshed(job).done > 0 or not job.is_live, timeout=60, every=0.02)
    # Every message in Redis goes: the walk's next slice, and the unacknowledged one of the slice in flight.
    seen = {name: len(whole.processes.log(name)) for name in cluster.WORKER_NAMES}
    whole.restart_redis()
    restarted = time.monotonic()
    assert refreshed(job).is_live, "the walk ended before Redis restarted (make it longer)"
    wait_for(
        "the walk to finish after the restart", lambda: not refreshed(job).is_live, timeout=90, every=0.2
    )
    walk_resumed_in = time.monotonic() - restarted
    assert any(WALK_SLICE.search(whole.processes.log(name)[offset:]) for name, offset in seen.items()), (
        "the slice in flight finished the walk: no message went through the new Redis (make it longer)"
    )
    assert job.status == RewrapStatus.COMPLETED, job.last_error
    assert job.done == job.total == 40_000
    assert under(job.target_tkv_id) == 40_000 and under(old) == 0

    # A web server's next task reaches a worker: another tenant's owner registers a GCP key through B, and a
    # worker verifies and activates it.
    enable_cloud_kms(other_tenant)
    other = Browser()
    other.sign_in(whole.url(whole.web_b), cluster_password(outsider).email, PASSWORD)
    gcp = {"key_id": kms.env["KODORI_EMULATOR_GCP_KEY"]}
    status, _headers, page = other.request(whole.url(whole.web_b), "POST", "/encryption/register/gcp", gcp)
    assert status == 302, page[-2000:]
    wait_for(
        "a worker to verify the GCP key",
        lambda: TenantKey.objects.filter(
            tenant=other_tenant, wrap_method=WrapMethod.CUSTOMER_KMS_GCP, status=KeyStatus.ACTIVE
        ).exists(),
        timeout=60,
        every=0.1,
    )
    whole.notes["walk_finished_after_redis_restart_s"] = round(walk_resumed_in, 1)


# --- An upload cut off by killing its web server ------------------------------------------------------------


def test_an_upload_cut_off_by_killing_its_web_server_is_never_visible_and_is_swept(
    whole: Cluster, tenant: Tenant, member: Any
) -> None:
    token = make_token(member)
    b = api(whole.web_b, whole.port, token)
    conn = http.client.HTTPConnection(address_of(whole.web_a), whole.port, timeout=60)
    conn.putrequest("POST", "/api/v1/blobs?name=cut.bin")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(64 * MIB))
    conn.endheaders()
    piece = os.urandom(MIB)
    for _ in range(12):
        conn.send(piece)
    blob = wait_for(
        "the upload's reservation",
        lambda: Blob.objects.filter(name="cut.bin").first(),
        timeout=30,
        every=0.05,
    )
    wait_for(
        "a part of it in S3",
        lambda: parts_in_s3(whole.s3, whole.bucket, blob.storage_key),
        timeout=60,
        every=0.1,
    )
    whole.processes.kill(whole.web_a.name)
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.send(piece)
        conn.getresponse()
    conn.close()

    blob.refresh_from_db()
    assert blob.status == BlobStatus.UPLOADING and DataKey.objects.filter(blob_id=blob.pk).exists()
    assert str(blob.pk) not in listed(b) and fetch(b, str(blob.pk))[0] == 404
    assert blob.storage_key not in whole.object_keys()  # S3 never completed the object
    parts = parts_in_s3(whole.s3, whole.bucket, blob.storage_key)  # what reached S3 before the kill
    assert parts >= 1
    # The real sweeper task, on a worker, once the upload is older than BLOB_STALE_UPLOAD_SECONDS (3 s here).
    wait_for(
        "the upload to become stale",
        lambda: timezone.now() - blob.created_at > timedelta(seconds=4),
        timeout=30,
        every=0.2,
    )
    assert whole.celery.send_task("blobs.tasks.sweep_stale_uploads").get(timeout=60) == 1
    assert not Blob.objects.filter(pk=blob.pk).exists()
    assert not DataKey.objects.filter(blob_id=blob.pk).exists()
    assert blob.storage_key not in whole.object_keys()
    # The parts of the unfinished multipart upload are aborted too: nothing of the cut-off upload is left.
    assert parts_in_s3(whole.s3, whole.bucket, blob.storage_key) == 0
