"""Cryptographic erasure of a tenant (``offboarding.erasure``), in process, on the filesystem and on S3:
the whole of it.

A tenant with everything a tenant can have (ready blobs, an upload half-written, API tokens, a member of every
role, a rotated key with a retired version and a live re-wrap, a scrub pass, an export) is scheduled for
deletion and erased by the real task. Afterwards nothing of it is left but its tombstone row, its deletion
request and its audit chain, and it is certified; an erasure stopped by a storage outage resumes on the next
run and ends clean; a mail server that refuses the certificate does not fail the finished erasure.

The same story with real Celery workers killed at every crash point is ``test_erasure_live.py``; the
certificate's content and signature are ``test_certificate_*.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core import mail

from audit import chain
from audit.models import AuditEvent, EventType
from blobs import scrub
from blobs.errors import IncompleteUpload, StorageUnavailable
from blobs.models import Blob
from blobs.uploads import Upload
from encryption import services
from encryption.models import RewrapJob, RewrapStatus
from encryption.rewrap import start_rewrap
from offboarding import certificate, erasure
from offboarding.exports import create_export
from offboarding.models import DeletionStatus, ErasureStep
from tenants.models import Membership, Role, Tenant, TenantState
from tests.blobs.support import make_blob, make_token, pattern
from tests.conftest import make_user
from tests.encryption.support import rotate_kek
from tests.offboarding.erasure_support import (
    BUCKET,
    MiB,
    Objects,
    certificate_of,
    event_types,
    rows_left,
    run_task,
    schedule_due,
    snapshot_counts,
    tenant_rows,
    wrapped_state,
)
from tests.s3 import storage_options

pytestmark = pytest.mark.django_db


# --- a tenant with one of everything ------------------------------------------------------------------------


class World:
    """What ``populate`` made, and what existed right before the erasure."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.blobs: dict[uuid.UUID, bytes] = {}
        self.upload: Upload | None = None
        self.owners: list[str] = []

    @property
    def prefix(self) -> str:
        return f"tenants/{self.tenant.pk}/"


def populate(tenant: Tenant, owner: Any, admin: Any, member: Any, viewer: Any, objects: Objects) -> World:
    world = World(tenant)
    second_owner = make_user("second-owner@acme.test")
    Membership.objects.create(user=second_owner, tenant=tenant, role=Role.OWNER)
    world.owners = sorted([owner.email, second_owner.email])
    for number, (user, size) in enumerate([(owner, 10), (member, 70_000), (admin, 200_000), (member, 0)]):
        data = pattern(size, seed=number)
        world.blobs[make_blob(user, data, name=f"file-{number}.bin", tenant=tenant).pk] = data
    for user in (owner, admin, member):
        make_token(user, tenant)
    # A rotation: version 1 retires under the old key, and a re-wrap walk is live (never run here).
    rotate_kek(tenant)
    for number in range(2):
        data = pattern(50_000, seed=10 + number)
        world.blobs[make_blob(member, data, name=f"after-{number}.bin", tenant=tenant).pk] = data
    assert start_rewrap(tenant, actor=owner) is not None
    scrub.run(tenant=tenant, rate=0, limit=2)  # a pass that stopped half-way: it stays running
    create_export(tenant, "zip", actor=owner)
    services.external_id_for(tenant)
    # An upload half-written: its row is "uploading" and part of its object is in the store.
    upload = Upload.begin(tenant, member, "partial.bin", "application/octet-stream", declared_size=12 * MiB)
    upload.write(pattern(6 * MiB, seed=99))
    world.upload = upload
    partial = upload.blob.storage_key
    if objects.client is None:  # the file, most of it written already
        assert len(objects.read(partial)) > 5 * MiB
    else:  # a multipart upload with its first part stored
        assert objects.unfinished_uploads(world.prefix) == [partial]
    return world


# --- 1. the whole erasure -----------------------------------------------------------------------------------


def test_it_erases_everything_of_the_tenant_and_certifies_it(
    tenant: Tenant,
    owner: Any,
    admin: Any,
    member: Any,
    viewer: Any,
    objects: Objects,
    django_capture_on_commit_callbacks: Any,
) -> None:
    world = populate(tenant, owner, admin, member, viewer, objects)
    deletion = schedule_due(tenant, owner)
    before = snapshot_counts(tenant)
    assert before["uploadsInProgress"] == 1 and before["keyVersions"] == 2 and before["memberships"] == 5
    assert RewrapJob.objects.filter(tenant=tenant, status=RewrapStatus.RUNNING).exists()
    assert all(n > 0 for n in tenant_rows(tenant).values()), tenant_rows(tenant)
    mail.outbox.clear()

    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    tenant.refresh_from_db()
    deletion.refresh_from_db()
    assert tenant.state == TenantState.ERASED and tenant.erased_at is not None
    assert deletion.status == DeletionStatus.ERASED and deletion.step == ErasureStep.CERTIFIED
    assert deletion.last_error == ""
    assert rows_left(tenant) == {}
    assert objects.under(world.prefix) == {}
    assert objects.unfinished_uploads(world.prefix) == []
    # What the request counted is what there was.
    assert {name: deletion.counts[name] for name in before} == before
    assert deletion.counts["objectsRemoved"] == len(world.blobs) + 1  # the upload's object too
    assert deletion.counts["strayObjectsRemoved"] == 0
    assert deletion.counts["unfinishedUploadsAborted"] == (0 if objects.client is None else 1)  # S3 parts
    assert deletion.owner_emails == world.owners
    # The chain is whole and ends with the erasure, started once and finished once.
    assert chain.verify(tenant, full=True).ok
    types = event_types(tenant)
    assert types[-2:] == [EventType.TENANT_ERASURE_STARTED, EventType.TENANT_ERASED]
    assert types.count(EventType.TENANT_ERASURE_STARTED) == types.count(EventType.TENANT_ERASED) == 1
    started = AuditEvent.objects.get(tenant=tenant, type=EventType.TENANT_ERASURE_STARTED)
    assert started.payload["counts"] == before
    # The owners the tenant had got the certificate, once, as a JSON attachment.
    (message,) = mail.outbox
    assert sorted(message.to) == world.owners
    (attachment,) = message.attachments
    name, content, mimetype = attachment
    assert name == certificate.filename(deletion) and mimetype == "application/json"
    assert content == certificate.as_bytes(certificate_of(deletion))

    # The upload that was half-way cannot finish into the erased tenant (its row is gone; on S3 its multipart
    # upload was aborted too), and leaves nothing when thrown away.
    assert world.upload is not None
    with pytest.raises((IncompleteUpload, StorageUnavailable)):
        world.upload.finish()
    world.upload.abort()
    assert objects.under(world.prefix) == {} and objects.unfinished_uploads(world.prefix) == []

    # Running the task again changes nothing and sends nothing.
    events, certificate_before = event_types(tenant), deletion.certificate
    assert run_task(django_capture_on_commit_callbacks) == []
    deletion.refresh_from_db()
    assert event_types(tenant) == events and deletion.certificate == certificate_before
    assert len(mail.outbox) == 1
    assert erasure.erase(deletion.pk) is True and event_types(tenant) == events


def test_an_erasure_stopped_by_a_storage_outage_resumes_on_the_next_run_and_ends_clean(
    tenant: Tenant,
    owner: Any,
    member: Any,
    blob_root: Path,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from botocore.config import Config

    from kodori.devtools.servers import free_port

    for n in range(3):
        make_blob(member, pattern(1_000, seed=n), name=f"{n}.bin")
    deletion = schedule_due(tenant, owner)
    filesystem = settings.STORAGES["blobs"]
    # The object store is down: an S3 endpoint where nothing listens (one attempt, no retries).
    down = storage_options(f"http://127.0.0.1:{free_port()}", BUCKET)
    down["client_config"] = Config(retries={"max_attempts": 1}, connect_timeout=1)
    settings.STORAGES = {**settings.STORAGES, "blobs": {"BACKEND": "storages.backends.s3.S3Storage",
                                                        "OPTIONS": down}}  # fmt: skip
    mail.outbox.clear()

    assert run_task(django_capture_on_commit_callbacks) == []

    deletion.refresh_from_db()
    assert deletion.status == DeletionStatus.ERASING and deletion.step == ErasureStep.KEYS_DESTROYED
    assert deletion.last_error.startswith("EndpointConnectionError")
    keys, versions = wrapped_state(tenant)  # stuck, but never readable: the keys went first
    assert set(keys.values()) == {b""} and {w for w, _ in versions.values()} == {b""}
    assert Blob.objects.filter(tenant=tenant).count() == 3 and len(list(blob_root.rglob("*.kdrb"))) == 3
    assert mail.outbox == []

    settings.STORAGES = {**settings.STORAGES, "blobs": filesystem}  # the store is back
    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    deletion.refresh_from_db()
    assert deletion.status == DeletionStatus.ERASED and deletion.last_error == ""
    assert rows_left(tenant) == {} and list(blob_root.rglob("*.kdrb")) == []
    assert event_types(tenant).count(EventType.TENANT_ERASURE_STARTED) == 1 and len(mail.outbox) == 1


# The e-mail goes after the commit, inside the task, as in production.
@pytest.mark.django_db(transaction=True)
def test_a_mail_server_that_refuses_the_certificate_does_not_fail_the_finished_erasure(
    tenant: Tenant,
    owner: Any,
    member: Any,
    blob_root: Path,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from kodori.devtools.servers import free_port

    make_blob(member, pattern(1_000), name="a.bin")
    deletion = schedule_due(tenant, owner)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there

    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    deletion.refresh_from_db()
    assert deletion.status == DeletionStatus.ERASED and deletion.last_error == ""
    assert rows_left(tenant) == {}
    assert "could not e-mail the erasure certificate" in caplog.text
    assert deletion.certificate_mailed_at is None

    # The mail server is back: the next run delivers the certificate, once, and then leaves it alone.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox.clear()
    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]
    assert [m.subject for m in mail.outbox] == [f"{tenant.name} was erased: your erasure certificate"]
    deletion.refresh_from_db()
    assert deletion.certificate_mailed_at is not None
    assert run_task(django_capture_on_commit_callbacks) == []
    assert len(mail.outbox) == 1
