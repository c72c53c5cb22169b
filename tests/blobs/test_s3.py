"""The S3 backend (django-storages' S3Storage) against moto's S3 server over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from blobs import storage
from encryption.format import envelope
from tests.blobs.support import bearer, make_token, pattern
from tests.s3 import delete_bucket, s3_client, storage_options

pytestmark = pytest.mark.django_db
BUCKET = "kodori-test-blobs"


@pytest.fixture
def s3(settings: Any, moto_s3: str) -> Any:
    client = s3_client(moto_s3)
    client.create_bucket(Bucket=BUCKET)
    settings.AWS_S3_FILE_BUFFER_SIZE = 5 * 1024 * 1024  # S3's minimum part size: several parts per test blob
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": storage_options(moto_s3, BUCKET)},
    }
    yield client
    delete_bucket(client, BUCKET)


def _keys(s3: Any) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_it_round_trips_through_s3_with_ranges_and_delete(
    s3: Any, member: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    data = pattern(12 * 1024 * 1024 + 12345)
    auth = bearer(make_token(member))
    client: Any = Client()
    created = client.generic(
        "POST",
        reverse("blobs:api_blobs") + "?name=s3.bin",
        data,
        content_type="application/octet-stream",
        **auth,
    )
    assert created.status_code == 201, created.content
    blob_id = created.json()["id"]
    (key,) = _keys(s3)
    assert key.startswith("prefix/tenants/") and key.endswith(".kdrb")
    stored = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert len(stored) == envelope.ciphertext_size(len(data))
    assert data[:4096] not in stored

    # Ranged reads fetch windows of the object, never the whole of it.
    windows: list[str] = []
    original = storage.S3RangeReader._open_window

    def spy(self: storage.S3RangeReader, size: int) -> None:
        original(self, size)
        windows.append(f"{self._body_pos}-{self._body_end}")

    monkeypatch.setattr(storage.S3RangeReader, "_open_window", spy)
    url = reverse("blobs:api_blob", args=[blob_id])
    whole = client.get(url, **auth)
    assert b"".join(whole.streaming_content) == data
    start = 10 * 1024 * 1024 + 7
    windows.clear()
    part = client.get(url, HTTP_RANGE=f"bytes={start}-{start + 99}", **auth)
    assert part.status_code == 206
    assert b"".join(part.streaming_content) == data[start : start + 100]
    assert all(int(w.split("-")[1]) - int(w.split("-")[0]) <= storage.S3_WINDOW for w in windows)
    suffix = client.get(url, HTTP_RANGE="bytes=-5", **auth)
    assert b"".join(suffix.streaming_content) == data[-5:]

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(url, **auth).status_code == 204
    assert _keys(s3) == []


def test_an_upload_cut_short_leaves_no_s3_object(s3: Any, member: Any) -> None:
    from blobs.uploads import Upload
    from tenants.models import Membership

    tenant = Membership.objects.get(user=member).tenant
    upload = Upload.begin(tenant, member, "cut.bin", None, declared_size=8 * 1024 * 1024)
    upload.write(b"x" * 6 * 1024 * 1024)  # one part is already in S3's multipart upload
    upload.abort()
    assert _keys(s3) == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
