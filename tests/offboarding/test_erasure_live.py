"""The erasure with real Celery workers on PostgreSQL, killed at every crash point and resumed.

For each of ``offboarding.erasure``'s crash points a real ``celery worker --pool=solo`` runs
``offboarding.tasks.erase_due_tenants`` with ``KODORI_ERASURE_CRASH_AT`` set: the worker SIGKILLs itself
there, as a machine losing power would. At that moment the invariant of the erasure must hold: either nothing
has changed, or every data key and key version of the tenant is already empty; never a removed object or row
while a key is intact. A second worker, without the crash, then runs the task again and the erasure ends
exactly as an uninterrupted one: nothing of the tenant left, one ``tenant.erasure-started`` and one
``tenant.erased``, the counts of what there was, a valid certificate.

Batches of 3 (``TENANT_ERASURE_BATCH_SIZE``) over 8 files, 3 tokens and 4 memberships, so the batch crash
points fall between batches that repeat. The workers' e-mail is Django's console backend (DJANGO_ENV=test),
which writes each message to the worker's output: the certificate e-mail is counted in the workers' logs.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import chain, signing
from audit.models import EventType
from blobs.models import Blob
from offboarding.models import DeletionStatus, ErasureStep
from offboarding.tasks import erase_due_tenants
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob, make_token, pattern
from tests.conftest import start_worker, stop_process
from tests.encryption.support import rotate_kek
from tests.offboarding.erasure_support import (
    certificate_of,
    event_types,
    rows_left,
    schedule_due,
    snapshot_counts,
    tenant_rows,
    wrapped_state,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BATCH = 3
FILES = 8
SUBJECT = "Subject: Acme Corp was erased: your erasure certificate"
CRASH_POINTS = ["keys-destroyed", "object-batch", "objects-removed", "row-batch", "rows-removed", "certified"]


class Workers:
    """The workers a test started, each with its log; every one is stopped (or killed) at the end."""

    def __init__(self, logs: Path, blob_root: Path) -> None:
        self.logs, self.blob_root = logs, blob_root
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("w") as log:  # the child keeps its own copy of the descriptor
            proc: subprocess.Popen[bytes] = start_worker(
                name,
                {"BLOB_ROOT": str(self.blob_root), "TENANT_ERASURE_BATCH_SIZE": str(BATCH), **env},
                log=log,
            )
        self.started.append(proc)
        return proc

    def output(self) -> str:
        return "".join(path.read_text() for path in sorted(self.logs.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            stop_process(proc)


@pytest.fixture
def workers(tmp_path: Path, blob_root: Path) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Workers(logs, blob_root)
    try:
        yield running
    finally:
        running.stop_all()


def stored(blob_root: Path, tenant: Tenant) -> set[str]:
    folder = blob_root / "tenants" / str(tenant.pk)
    return {p.name for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def all_empty(tenant: Tenant) -> bool:
    keys, versions = wrapped_state(tenant)
    return all(w == b"" for w in keys.values()) and all(w == b"" for w, _ in versions.values())


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_worker_killed_at_each_crash_point_leaves_no_key_behind_and_the_next_run_finishes(
    point: str,
    tenant: Tenant,
    owner: Any,
    admin: Any,
    member: Any,
    viewer: Any,
    blob_root: Path,
    workers: Workers,
) -> None:
    for n in range(FILES):
        if n == FILES // 2:
            rotate_kek(tenant)  # two key versions, the first retired
        make_blob(member, pattern(20_000 + n, seed=n), name=f"{n}.bin")
    for user in (owner, admin, member):
        make_token(user)
    deletion = schedule_due(tenant, owner)
    before = snapshot_counts(tenant)
    rows_before = tenant_rows(tenant)
    objects_before = stored(blob_root, tenant)
    keys_before = wrapped_state(tenant)
    assert len(objects_before) == FILES and before["keyVersions"] == 2 and before["apiTokens"] == 3

    crashing = workers.start(f"crash-{point}", KODORI_ERASURE_CRASH_AT=point)
    erase_due_tenants.delay()
    try:
        crashing.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker never reached crash point {point}:\n{workers.output()[-3000:]}")
    assert crashing.returncode == -signal.SIGKILL
    assert f"crash point {point} reached" in workers.output()

    # The moment of death: nothing changed, or every key is empty already. Never anything removed with a key.
    deletion.refresh_from_db()
    tenant.refresh_from_db()
    nothing_changed = (
        deletion.status == DeletionStatus.SCHEDULED
        and wrapped_state(tenant) == keys_before
        and tenant_rows(tenant) == rows_before
        and stored(blob_root, tenant) == objects_before
    )
    assert nothing_changed or all_empty(tenant), point
    # ... and the worker died where it says, with exactly the work of the steps before done.
    rows, objects = tenant_rows(tenant), stored(blob_root, tenant)
    expected = {
        "keys-destroyed": (ErasureStep.KEYS_DESTROYED, FILES, FILES, 3),
        "object-batch": (ErasureStep.KEYS_DESTROYED, FILES - BATCH, FILES, 3),
        "objects-removed": (ErasureStep.OBJECTS_REMOVED, 0, 0, 3),
        "row-batch": (ErasureStep.OBJECTS_REMOVED, 0, 0, 0),
        "rows-removed": (ErasureStep.ROWS_REMOVED, 0, 0, 0),
        "certified": (ErasureStep.CERTIFIED, 0, 0, 0),
    }[point]
    assert (deletion.step, len(objects), rows["blobs"], rows["blob_api_tokens"]) == expected
    assert not nothing_changed and all_empty(tenant)
    if point == "row-batch":
        assert rows["memberships"] == 4  # the first batch (the tokens) went; the next tables wait
    if rows["tenant_key_versions"]:
        assert rows["tenant_key_versions"] == 2  # the rows may still be there, their keys are not
    if point == "certified":
        assert deletion.status == DeletionStatus.ERASED and tenant.state == TenantState.ERASED
        assert SUBJECT not in workers.output()  # killed after the commit, before the e-mail
    else:
        assert deletion.status == DeletionStatus.ERASING and tenant.state == TenantState.ERASING
    assert event_types(tenant).count(EventType.TENANT_ERASURE_STARTED) == 1

    # A worker without the crash runs the task again: it resumes and finishes, once.
    workers.start(f"resume-{point}")
    finished = erase_due_tenants.delay().get(timeout=90)

    # A crash after the commit leaves only the e-mail to send: the run delivers it and reports the tenant.
    assert finished == [tenant.slug]
    deletion.refresh_from_db()
    tenant.refresh_from_db()
    assert tenant.state == TenantState.ERASED and tenant.erased_at is not None
    assert deletion.status == DeletionStatus.ERASED and deletion.step == ErasureStep.CERTIFIED
    assert deletion.last_error == ""
    assert rows_left(tenant) == {} and stored(blob_root, tenant) == set()
    assert not Blob.objects.filter(tenant=tenant).exists()
    assert {name: deletion.counts[name] for name in before} == before
    assert deletion.counts["objectsRemoved"] + deletion.counts["strayObjectsRemoved"] == FILES
    types = event_types(tenant)
    assert types[-2:] == [EventType.TENANT_ERASURE_STARTED, EventType.TENANT_ERASED]
    assert types.count(EventType.TENANT_ERASURE_STARTED) == types.count(EventType.TENANT_ERASED) == 1
    assert chain.verify(tenant, full=True).ok
    assert signing.document_signature_valid(certificate_of(deletion))
    assert certificate_of(deletion)["document"]["audit_chain"]["head_seq"] == len(types)
    # The certificate e-mail: exactly once, by the worker that finished or, after a crash that came after the
    # commit, by the next run (at least once; noted, so never again).
    assert workers.output().count(SUBJECT) == 1
    assert deletion.certificate_mailed_at is not None
    assert erase_due_tenants.delay().get(timeout=90) == []
    assert workers.output().count(SUBJECT) == 1
    assert os.environ.get("KODORI_ERASURE_CRASH_AT") is None  # the crash was the worker's alone
