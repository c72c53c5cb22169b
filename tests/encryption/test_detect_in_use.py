"""A key revoked in the customer's KMS is noticed by the first download that meets the refusal: it queues a
re-verify of that key, and a real Celery worker marks the key (and seals the tenant, for the active key)
within seconds, with no beat running and nobody pressing "Retry now". The AWS emulator; the worker is a
subprocess on the test database and the test Redis."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from blobs.models import Blob
from emulators.dev import DevEmulators
from encryption import services
from encryption.models import KeyStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.blobs.support import make_blob
from tests.conftest import start_worker, stop_process
from tests.encryption.support import download, enable_cloud_kms, fresh, verified, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WITHIN = 15.0  # seconds from the first refused download to the key's new state


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def ran(self, task: str) -> bool:
        return f"Task {task}[" in self.log.read_text() and "succeeded" in self.log.read_text()


@pytest.fixture
def worker(clouds: DevEmulators, tmp_path: Path) -> Iterator[Worker]:
    """A real worker, started after the emulators so that it inherits their settings; no beat."""
    path = tmp_path / "worker.log"
    with path.open("w") as log:
        proc = start_worker("detect-in-use", {"KODORI_TKV_CACHE_TTL_CUSTOMER": "1"}, log=log)
        try:
            yield Worker(proc, path)
        finally:
            stop_process(proc)


def aws_key(clouds: DevEmulators, tenant: Tenant, name: str, owner: Any) -> TenantKey:
    """A customer key and role in the AWS emulator, registered and verified: the tenant's active key."""
    assert clouds.aws is not None
    key_arn = clouds.aws.create_key(alias=f"alias/{name}")
    role_arn = clouds.aws.create_tenant_role(name, services.external_id_for(tenant), key_arn)
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    key = verified(key)
    assert key.status == KeyStatus.ACTIVE, key.last_verify_error
    return key


def uploaded(owner: Any, name: str) -> tuple[Blob, bytes]:
    data = os.urandom(20_000)
    return make_blob(owner, data, name), data


def event(tenant: Tenant, kind: str) -> AuditEvent:
    (found,) = AuditEvent.objects.filter(tenant=tenant, type=kind)
    return found


def test_a_download_refused_by_the_active_key_seals_the_tenant_within_seconds(
    clouds: DevEmulators, worker: Worker, tenant: Tenant, owner: Any, as_user: Any
) -> None:
    tenant = enable_cloud_kms(tenant)
    key = aws_key(clouds, tenant, "detect-active", owner)
    blob, data = uploaded(owner, "active.bin")
    client = as_user(owner)
    assert download(client, blob) == (200, data)
    assert clouds.aws is not None
    clouds.aws.revoke_role_access("detect-active")

    status, body = download(client, blob)  # the TKV cache is cleared first: this unwrap reaches AWS
    started = time.monotonic()
    assert status == 503 and b"denied" in body.lower()
    wait_for("the tenant to be sealed", lambda: Tenant.objects.get(pk=tenant.pk).is_sealed, timeout=WITHIN)
    took = time.monotonic() - started

    tenant.refresh_from_db()
    assert took < WITHIN and "denied" in tenant.seal_reason.lower()
    row = fresh(key)
    assert row.status == KeyStatus.ACTIVE and row.refused_at is not None and row.last_verify_error
    sealed = event(tenant, "tenant.sealed")
    assert sealed.payload["trigger"] == "use" and sealed.payload["keyRowId"] == key.pk
    assert sealed.actor_email == ""  # the system acted, not a person
    unreachable = event(tenant, "tenant-kms.unreachable")
    assert unreachable.payload["trigger"] == "use" and unreachable.payload["dataKeys"] == 1
    assert worker.ran("encryption.tasks.reverify_key")
    status, body = download(client, blob)
    assert status == 503 and b"sealed" in body


def test_a_download_refused_by_a_retired_key_marks_only_that_key_within_seconds(
    clouds: DevEmulators, worker: Worker, tenant: Tenant, owner: Any, as_user: Any
) -> None:
    tenant = enable_cloud_kms(tenant)
    old = aws_key(clouds, tenant, "detect-old", owner)
    old_blob, _ = uploaded(owner, "old.bin")
    new = aws_key(clouds, tenant, "detect-new", owner)
    new_blob, new_data = uploaded(owner, "new.bin")
    assert fresh(old).status == KeyStatus.RETIRED
    client = as_user(owner)
    assert clouds.aws is not None
    clouds.aws.revoke_role_access("detect-old")

    status, _ = download(client, old_blob)
    started = time.monotonic()
    assert status == 503
    wait_for("the retired key to be marked", lambda: fresh(old).refused_at is not None, timeout=WITHIN)
    assert time.monotonic() - started < WITHIN

    tenant.refresh_from_db()
    assert not tenant.is_sealed
    assert fresh(old).status == KeyStatus.RETIRED and fresh(new).refused_at is None
    unreachable = event(tenant, "tenant-kms.unreachable")
    assert unreachable.payload["keyRowId"] == old.pk and unreachable.payload["trigger"] == "use"
    assert unreachable.payload["status"] == "retired"
    assert not AuditEvent.objects.filter(tenant=tenant, type="tenant.sealed").exists()
    status, body = download(client, old_blob)  # now refused by Kodori itself, naming the key
    assert status == 503 and old.key_id[-12:].encode() in body and b"refuses Kodori" in body
    assert download(client, new_blob) == (200, new_data)
