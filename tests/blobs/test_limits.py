"""Per-blob maximum size and per-tenant quota: 413 with a clear message, up front and while streaming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from blobs.models import Blob
from encryption.models import DataKey
from tests.blobs.support import bearer, make_blob, make_token, stored_files

pytestmark = pytest.mark.django_db


def _raw(client: Client, secret: str, body: bytes, **extra: Any) -> Any:
    url = reverse("blobs:api_blobs") + "?name=big.bin"
    return client.generic(
        "POST", url, body, content_type="application/octet-stream", **bearer(secret), **extra
    )


def _nothing_left(blob_root: Path, keep: int = 0) -> None:
    assert Blob.objects.count() == keep
    assert DataKey.objects.count() == keep
    assert len(stored_files(blob_root)) == keep


def test_it_refuses_a_blob_over_the_maximum_size_up_front(
    settings: Any, member: Any, blob_root: Path
) -> None:
    settings.BLOB_MAX_SIZE = 1000
    response = _raw(Client(), make_token(member), b"x" * 1001)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert "at most 1000 bytes" in error["message"]
    _nothing_left(blob_root)


def test_it_accepts_a_blob_of_exactly_the_maximum_size(settings: Any, member: Any) -> None:
    settings.BLOB_MAX_SIZE = 1000
    assert _raw(Client(), make_token(member), b"x" * 1000).status_code == 201


def test_it_refuses_past_the_tenant_quota(settings: Any, member: Any, blob_root: Path) -> None:
    settings.BLOB_TENANT_QUOTA = 5000
    make_blob(member, b"y" * 4000)
    response = _raw(Client(), make_token(member), b"x" * 1001)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "quota" in error["message"] and "1000 bytes left" in error["message"]
    _nothing_left(blob_root, keep=1)
    assert _raw(Client(), make_token(member), b"x" * 1000).status_code == 201


def test_a_multipart_file_over_the_limit_is_stopped_while_it_streams(
    settings: Any, member: Any, blob_root: Path
) -> None:
    # The multipart body's length only bounds the file's size, so the limit bites while the bytes arrive.
    settings.BLOB_MAX_SIZE = 100_000
    upload = SimpleUploadedFile("big.bin", b"z" * 150_000)
    response = Client().post(reverse("blobs:api_blobs"), {"file": upload}, **bearer(make_token(member)))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    _nothing_left(blob_root)


def test_a_multipart_body_far_over_the_limit_is_refused_before_reading(
    settings: Any, member: Any, blob_root: Path, monkeypatch: Any
) -> None:
    from blobs import uploads

    settings.BLOB_MAX_SIZE = 10
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    began: list[Any] = []
    monkeypatch.setattr(uploads.Upload, "begin", lambda *a, **k: began.append(a))
    upload = SimpleUploadedFile("big.bin", b"z" * 200_000)
    response = Client().post(reverse("blobs:api_blobs"), {"file": upload}, **bearer(make_token(member)))
    assert response.status_code == 413
    assert began == []


def test_the_upload_page_refuses_over_the_limit_with_a_message(
    settings: Any, as_user: Any, member: Any, blob_root: Path
) -> None:
    settings.BLOB_MAX_SIZE = 10
    url = reverse("blobs:upload") + "?name=a.bin"
    raw = as_user(member).generic("POST", url, b"x" * 11, content_type="application/octet-stream")
    assert raw.status_code == 413
    assert raw.json()["error"]["code"] == "too_large"
    form = as_user(member).post(reverse("blobs:upload"), {"file": SimpleUploadedFile("a.bin", b"x" * 11)})
    assert form.status_code == 413
    assert b"at most 10 bytes" in form.content
    _nothing_left(blob_root)


def test_a_raw_upload_needs_a_content_length(member: Any) -> None:
    response = Client().generic(
        "POST",
        reverse("blobs:api_blobs") + "?name=a",
        b"",
        content_type="application/octet-stream",
        HTTP_TRANSFER_ENCODING="chunked",
        **bearer(make_token(member)),
    )
    assert response.status_code == 411
