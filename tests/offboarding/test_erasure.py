"""Cryptographic erasure of a tenant (``offboarding.erasure``), in process, on the filesystem and on S3.

A tenant with everything a tenant can have (ready blobs, an upload half-written, API tokens, a member of every
role, a rotated key with a retired version and a live re-wrap, a scrub pass, an export) is scheduled for
deletion and erased by the real task. Afterwards nothing of it is left but its tombstone row, its deletion
request and its audit chain; a saved copy of a ciphertext object opens with the key captured before and with
nothing the database still holds; a customer key the tenant revoked is never called; another tenant working
all along is untouched; two erasures at once do the work once; a cancelled deletion erases nothing.

The same story with real Celery workers killed at every crash point is ``test_erasure_live.py``; the
certificate's content and signature are ``test_certificate.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, EventType
from blobs import scrub
from blobs.errors import IncompleteUpload, StorageUnavailable
from blobs.models import Blob
from blobs.uploads import Upload
from encryption import aead, keyring, services
from encryption.format import envelope
from encryption.format.errors import EnvelopeError, NotAuthentic
from encryption.models import (
    DataKey,
    RewrapJob,
    RewrapStatus,
    TenantKeyVersion,
    VersionStatus,
)
from encryption.rewrap import start_rewrap
from offboarding import certificate, erasure
from offboarding.exports import create_export
from offboarding.models import DeletionRequest, DeletionStatus, ErasureStep, Via
from offboarding.services import cancel_deletion, schedule_deletion
from offboarding.tasks import erase_due_tenants
from tenants.models import Membership, Role, Tenant, TenantState
from tests.blobs.support import make_blob, make_token, pattern
from tests.conftest import client_for, make_user
from tests.encryption.support import rotate_kek
from tests.offboarding.erasure_support import (
    body,
    certificate_of,
    event_types,
    rows_left,
    run_task,
    schedule_due,
    snapshot_counts,
    tenant_rows,
    wrapped_state,
)
from tests.s3 import delete_bucket, moto_server, s3_client, storage_options

pytestmark = pytest.mark.django_db

BUCKET = "kodori-test-erasure"
MiB = 1 << 20


# --- where the objects are: the filesystem or S3 ------------------------------------------------------------


class Objects:
    """The objects of the ``blobs`` storage, seen behind Kodori's back."""

    def __init__(self, root: Path | None = None, client: Any = None) -> None:
        self.root, self.client = root, client

    def under(self, prefix: str) -> dict[str, bytes]:
        """Every object whose key starts with ``prefix``: key -> bytes."""
        if self.client is None:
            assert self.root is not None
            base = self.root / prefix
            files = [p for p in base.rglob("*") if p.is_file()] if base.exists() else []
            return {str(p.relative_to(self.root)): p.read_bytes() for p in files}
        listing = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"prefix/{prefix}")
        return {
            item["Key"].removeprefix("prefix/"): self.read(item["Key"].removeprefix("prefix/"))
            for item in listing.get("Contents", [])
        }

    def read(self, key: str) -> bytes:
        if self.client is None:
            assert self.root is not None
            return (self.root / key).read_bytes()
        return bytes(self.client.get_object(Bucket=BUCKET, Key=f"prefix/{key}")["Body"].read())

    def unfinished_uploads(self, prefix: str) -> list[str]:
        """S3 multipart uploads begun and never completed nor aborted (their parts are stored bytes too)."""
        if self.client is None:
            return []
        found = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"prefix/{prefix}")
        return [upload["Key"].removeprefix("prefix/") for upload in found.get("Uploads", [])]


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture(params=["filesystem", "s3"])
def objects(request: Any, settings: Any, blob_root: Path) -> Iterator[Objects]:
    if request.param == "filesystem":
        yield Objects(root=blob_root)
        return
    endpoint = request.getfixturevalue("moto_s3")
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    # Parts of 5 MiB (S3's least), so an upload in progress has really sent bytes to the store.
    settings.AWS_S3_FILE_BUFFER_SIZE = 5 * MiB
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": storage_options(endpoint, BUCKET)},
    }
    try:
        yield Objects(client=client)
    finally:
        for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
        delete_bucket(client, BUCKET)


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


# --- 2. crypto-erasure is real ------------------------------------------------------------------------------


def test_destroying_the_keys_alone_empties_every_wrapped_key_and_downloads_answer_410(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path
) -> None:
    blobs = [make_blob(member, pattern(30_000, seed=n), name=f"{n}.bin") for n in range(2)]
    rotate_kek(tenant)
    blobs.append(make_blob(member, pattern(30_000, seed=2), name="2.bin"))
    secret = make_token(member)
    assert client_for(member).get(reverse("blobs:download", args=[blobs[0].pk])).status_code == 200
    deletion = schedule_due(tenant, owner)
    stored_before = sorted(p.name for p in blob_root.rglob("*.kdrb"))

    assert erasure.destroy_keys(deletion) is True

    data_keys = list(DataKey.objects.filter(tenant=tenant).values_list("wrapped_dek", flat=True))
    versions = list(TenantKeyVersion.objects.filter(tenant=tenant).values_list("wrapped_key", "status"))
    assert len(data_keys) == 3 and len(versions) == 2  # the rows are all there ...
    assert [bytes(w) for w in data_keys] == [b""] * 3  # ... with nothing in them
    assert [(bytes(w), s) for w, s in versions] == [(b"", VersionStatus.DESTROYED)] * 2
    # Nothing else was removed yet: step 1 is the keys, and only the keys.
    assert sorted(p.name for p in blob_root.rglob("*.kdrb")) == stored_before
    assert Blob.objects.filter(tenant=tenant).count() == 3
    tenant.refresh_from_db()
    deletion.refresh_from_db()
    assert tenant.state == TenantState.ERASING and deletion.step == ErasureStep.KEYS_DESTROYED
    response = client_for(member).get(reverse("blobs:download", args=[blobs[0].pk]))
    assert response.status_code == 410
    api = client_for(member).get(f"/api/v1/blobs/{blobs[2].pk}", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.status_code == 410 and api.json()["error"]["code"] == "tenant_erased"
    keyring.cache.clear()
    with pytest.raises(keyring.KeyUnavailable, match="destroyed"):
        keyring.open_data_key(tenant, blobs[1].pk)


def test_a_saved_copy_of_an_object_opens_with_the_old_key_and_with_nothing_the_database_still_holds(
    tenant: Tenant,
    owner: Any,
    member: Any,
    other_tenant: Tenant,
    outsider: Any,
    objects: Objects,
    django_capture_on_commit_callbacks: Any,
) -> None:
    data = pattern(150_000, seed=5)
    blob = make_blob(member, data, name="secret.pdf")
    for n in range(3):  # another tenant's keys stay in the database: none of them may open the copy either
        make_blob(outsider, pattern(1000, seed=20 + n), name=f"other-{n}.bin", tenant=other_tenant)
    rotate_kek(other_tenant)
    make_blob(outsider, pattern(1000, seed=30), name="other-new.bin", tenant=other_tenant)
    # What survives the erasure outside Kodori: an object version, and a database backup's wrapped DEK.
    copy = objects.read(blob.storage_key)
    backed_up = DataKey.objects.get(blob_id=blob.pk)
    backed_up_wrapped, backed_up_aad = (
        bytes(backed_up.wrapped_dek),
        keyring.dek_aad(tenant.pk, blob.pk, backed_up.tkv_id, backed_up.format_version),
    )
    context = envelope.blob_context(tenant.pk, blob.pk)
    dek = keyring.open_data_key(tenant, blob.pk)
    assert envelope.decrypt(dek, context, copy) == data
    schedule_due(tenant, owner)

    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    assert objects.under(f"tenants/{tenant.pk}/") == {}
    assert not DataKey.objects.filter(blob_id=blob.pk).exists()
    with pytest.raises(DataKey.DoesNotExist):
        keyring.open_data_key(tenant, blob.pk)
    # Every key the database can still produce: each data key opened under its own version, as a download
    # opens it, and each version's key. None is the tenant's, and none opens the copy or the backed-up DEK.
    keyring.cache.clear()
    rows = list(DataKey.objects.select_related("tkv").order_by("pk"))
    version_rows = list(TenantKeyVersion.objects.select_related("kek").order_by("pk"))
    assert {r.tenant_id for r in rows} == {r.tenant_id for r in version_rows} == {other_tenant.pk}
    deks = [keyring.open_data_key(other_tenant, r.blob_id) for r in rows]
    tkv_keys = [keyring.tkv_key(v) for v in version_rows if bytes(v.wrapped_key)]
    assert len(deks) == 4 and len(tkv_keys) == 2
    raw = [bytes(r.wrapped_dek)[:32] for r in rows] + [bytes(v.wrapped_key)[:32] for v in version_rows]
    for candidate in [*deks, *tkv_keys, *raw]:
        with pytest.raises(EnvelopeError):
            envelope.decrypt(candidate, context, copy)
    for tkv_key in tkv_keys:
        with pytest.raises(NotAuthentic):
            aead.open(tkv_key, backed_up_wrapped, backed_up_aad)
    # The copy itself is intact: the key captured before still opens it, so the refusals above are the keys'.
    assert envelope.decrypt(dek, context, copy) == data


# --- 3. independent of the customer's KMS -------------------------------------------------------------------


def test_a_tenant_sealed_by_its_revoked_customer_key_is_erased_without_a_kms_call(
    clouds: Any,
    tenant: Tenant,
    owner: Any,
    member: Any,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from encryption.health import probe_key
    from encryption.models import KeyStatus, WrapMethod
    from encryption.sealing import Trigger

    aws = clouds.aws
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    before_rotation = make_blob(member, pattern(20_000, seed=1), name="kodori-managed.bin")
    key_arn = aws.create_key(alias="alias/acme-byok")
    role_arn = aws.create_tenant_role("acme-byok", services.external_id_for(tenant), key_arn)
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    assert services.verify_key(key.pk).status == KeyStatus.ACTIVE
    make_blob(member, pattern(20_000, seed=2), name="customer-key.bin")
    # The customer disables the key in their KMS: the next probe seals the tenant.
    aws.disable_key(key_arn)
    keyring.cache.clear()
    assert probe_key(key.pk, trigger=Trigger.SCHEDULE) is False
    tenant.refresh_from_db()
    assert tenant.is_sealed
    deletion = schedule_due(tenant, owner)
    calls_before = sum(aws.counts().values())
    aws.stop()  # and for good measure, nobody answers at all any more

    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    assert sum(aws.counts().values()) == calls_before
    deletion.refresh_from_db()
    tenant.refresh_from_db()
    assert tenant.state == TenantState.ERASED and deletion.last_error == ""
    assert rows_left(tenant) == {}
    assert not Blob.objects.filter(pk=before_rotation.pk).exists()
    assert [p for p in blob_root.rglob("*") if p.is_file() and "tenants" in p.parts] == []
    # The certificate names the customer's key by provider and suffix, never in full, and says what to do.
    document = certificate_of(deletion)["document"]
    customer = [k for k in document["keys"] if k["customer_managed"]]
    assert customer == [
        {
            "provider": "aws-kms",
            "wrap_method": WrapMethod.CUSTOMER_KMS_AWS,
            "key_id_suffix": key_arn[-12:],
            "status_at_erasure": KeyStatus.ACTIVE,
            "customer_managed": True,
        }
    ]
    assert key_arn not in certificate.as_bytes(certificate_of(deletion)).decode()
    byok = [line for line in document["coverage"]["not_covered"] if "customer's own KMS" in line]
    assert len(byok) == 1 and f"aws-kms …{key_arn[-12:]}" in byok[0]


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
