"""Fixtures shared by the offboarding tests' modules.

* moto's S3 server, one per test module that asks for it;
* the export tests' blob store: a private directory or a bucket of moto's S3 (``store``, ``s3``);
* the erasure tests' view of the stored objects, on the filesystem or S3 (``objects``);
* the deletion tests' ``committed`` (runs what was queued for after the commit) and ``second_owner``;
* the certificate tests' ``signing_key`` and ``erased`` tenant;
* the archive writer's tests' ``fmt``, each archive format in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import signing
from offboarding.archive import FORMATS
from offboarding.models import Via
from tenants.models import Membership, Role, Tenant
from tests.blobs.support import FileStore, S3Store, Store, make_blob, make_token, pattern
from tests.conftest import make_user
from tests.encryption.support import rotate_kek
from tests.offboarding.deletion_support import Capture
from tests.offboarding.erasure_support import BUCKET, REASON, RETENTION_DAYS, Erased, MiB, Objects, erase
from tests.offboarding.export_support import MIB
from tests.s3 import delete_bucket, moto_server, s3_client, storage_options

EXPORT_BUCKET = "kodori-test-exports"


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


# --- the export tests ---------------------------------------------------------------------------------------


@pytest.fixture
def s3(settings: Any, moto_s3: str) -> Iterator[S3Store]:
    """This test's blob objects in a bucket of moto's S3."""
    client = s3_client(moto_s3)
    client.create_bucket(Bucket=EXPORT_BUCKET)
    settings.AWS_S3_FILE_BUFFER_SIZE = 5 * MIB  # S3's least part size: a 5 MiB file is a multipart upload
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": storage_options(moto_s3, EXPORT_BUCKET),
        },
    }
    try:
        yield S3Store(client, EXPORT_BUCKET)
    finally:
        for upload in client.list_multipart_uploads(Bucket=EXPORT_BUCKET).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=EXPORT_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        delete_bucket(client, EXPORT_BUCKET)


@pytest.fixture(params=["filesystem", "s3"])
def store(request: Any, blob_root: Path) -> Store:
    """Where this test's blob objects are: a private directory, or a bucket of moto's S3."""
    if request.param == "filesystem":
        return FileStore(blob_root)
    s3: Store = request.getfixturevalue("s3")
    return s3


# --- the erasure tests --------------------------------------------------------------------------------------


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


# --- the deletion tests -------------------------------------------------------------------------------------


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Capture) -> Capture:
    """``with committed():`` runs what the code under test queued for after its commit (the e-mails)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def second_owner(tenant: Tenant) -> Any:
    user = make_user("second-owner@acme.test")
    Membership.objects.create(user=user, tenant=tenant, role=Role.OWNER)
    return user


# --- the certificate tests ----------------------------------------------------------------------------------


@pytest.fixture
def signing_key(settings: Any) -> str:
    """A fresh deployment audit key in ``AUDIT_SIGNING_KEY``; its public half (what /audit shows)."""
    private, public = signing.generate_private_key()
    settings.AUDIT_SIGNING_KEY = private
    settings.TENANT_AUDIT_RETENTION_DAYS = RETENTION_DAYS
    return public


@pytest.fixture
def erased(
    tenant: Tenant,
    owner: Any,
    admin: Any,
    member: Any,
    viewer: Any,
    staff: Any,
    signing_key: str,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> Erased:
    """Acme, with three files under two key versions and a token, erased on a written request to support."""
    make_blob(member, pattern(1_000, seed=1), name="a.bin")
    make_blob(owner, pattern(70_000, seed=2), name="b.bin")
    rotate_kek(tenant)
    make_blob(admin, pattern(5, seed=3), name="c.bin")
    make_token(member)
    capture = django_capture_on_commit_callbacks
    return erase(tenant, staff, capture, via=Via.SUPPORT, days=12, reason=REASON)


# --- the archive writer's tests -----------------------------------------------------------------------------


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)
