"""A sealed tenant: every blob read and write answers 503 naming the cause, and nothing changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from audit.models import AuditEvent
from blobs.models import Blob
from encryption import keyring
from encryption.models import DataKey, KeyStatus, TenantKey
from encryption.providers import FailureKind, ProviderError
from tests.blobs.support import bearer, make_blob, make_token, stored_files

pytestmark = pytest.mark.django_db
CAUSE = "Your AWS KMS key denied Decrypt to Kodori's role."


@pytest.fixture
def sealed(tenant: Any, member: Any) -> tuple[Any, Any]:
    blob = make_blob(member, b"precious bytes", name="keep.txt")
    token = make_token(member)
    tenant.sealed_at = timezone.now()
    tenant.seal_reason = CAUSE
    tenant.save()
    return blob, token


def _state(blob_root: Path) -> tuple[Any, ...]:
    return (
        list(Blob.objects.values_list("pk", "status", "size")),
        DataKey.objects.count(),
        sorted((p.name, p.read_bytes()) for p in stored_files(blob_root)),
        AuditEvent.objects.count(),
    )


def test_the_api_answers_503_naming_the_cause_and_changes_nothing(sealed: Any, blob_root: Path) -> None:
    blob, token = sealed
    before = _state(blob_root)
    client, auth = Client(), bearer(token)
    url = reverse("blobs:api_blob", args=[blob.pk])
    responses = [
        client.get(url, **auth),
        client.get(url, HTTP_RANGE="bytes=0-1", **auth),
        client.delete(url, **auth),
        client.generic(
            "POST", reverse("blobs:api_blobs") + "?name=n", b"new", content_type="text/plain", **auth
        ),
    ]
    for response in responses:
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "tenant_sealed"
        assert CAUSE in response.json()["error"]["message"]
    assert client.head(url, **auth).status_code == 503
    assert _state(blob_root) == before
    # Listing what exists is not reading a blob: it still works, so people see what is waiting for them.
    assert client.get(reverse("blobs:api_blobs"), **auth).status_code == 200


def test_the_pages_answer_503_naming_the_cause_and_change_nothing(
    sealed: Any, as_user: Any, member: Any, blob_root: Path
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    blob, _token = sealed
    before = _state(blob_root)
    client = as_user(member)
    download = client.get(reverse("blobs:download", args=[blob.pk]))
    delete = client.post(reverse("blobs:delete", args=[blob.pk]))
    form = client.post(reverse("blobs:upload"), {"file": SimpleUploadedFile("a.txt", b"a")})
    raw = client.generic(
        "POST", reverse("blobs:upload") + "?name=a", b"a", content_type="application/octet-stream"
    )
    for response in (download, delete, form, raw):
        assert response.status_code == 503
        text = response.content.decode()
        assert CAUSE in text or escape(CAUSE) in text
    assert _state(blob_root) == before
    listing = client.get(reverse("blobs:list"))
    assert listing.status_code == 200 and b"keep.txt" in listing.content
    assert escape(CAUSE) in listing.content.decode()


@pytest.mark.parametrize(
    "failure",
    [
        keyring.KeyUnavailable("The key protecting this data is disabled."),
        ProviderError(FailureKind.DENIED, "Your Azure key vault denied unwrapKey."),
    ],
)
def test_a_key_failure_during_a_download_answers_503_naming_it(
    member: Any, monkeypatch: Any, failure: Exception
) -> None:
    blob = make_blob(member)
    token = make_token(member)

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise failure

    monkeypatch.setattr(keyring, "open_data_key", refuse)
    response = Client().get(reverse("blobs:api_blob", args=[blob.pk]), **bearer(token))
    assert response.status_code == 503
    assert str(failure) in response.json()["error"]["message"]
    blob.tenant.refresh_from_db()
    assert not blob.tenant.is_sealed  # sealing is the encryption app's job, not a download's


def test_a_disabled_key_stops_uploads_with_503_and_leaves_nothing(
    member: Any, tenant: Any, blob_root: Path
) -> None:
    make_blob(member)  # provisions the tenant's kodori-managed key
    before = _state(blob_root)
    TenantKey.objects.for_tenant(tenant).update(status=KeyStatus.DISABLED)
    keyring.cache.clear()
    response = Client().generic(
        "POST",
        reverse("blobs:api_blobs") + "?name=n",
        b"new",
        content_type="text/plain",
        **bearer(make_token(member)),
    )
    assert response.status_code == 503
    assert "disabled" in response.json()["error"]["message"]
    after = _state(blob_root)
    assert after[:3] == before[:3]
