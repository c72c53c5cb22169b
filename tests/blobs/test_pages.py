"""The blobs pages: list (search, sort, pages), upload, detail, download headers, delete (audited)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import AuditEvent
from blobs.models import Blob
from encryption.models import DataKey
from tests.blobs.support import make_blob, stored_files

pytestmark = pytest.mark.django_db


def _names(content: bytes) -> list[str]:
    return re.findall(r'<a href="/blobs/[0-9a-f-]+">([^<]+)</a>', content.decode())


def test_the_list_searches_sorts_and_pages_in_the_url(as_user: Any, member: Any, settings: Any) -> None:
    settings.BLOB_PAGE_SIZE = 2
    for name, size in [("beta.txt", 30), ("alpha.txt", 10), ("gamma.log", 20)]:
        make_blob(member, b"x" * size, name=name)
    client = as_user(member)
    assert _names(client.get(reverse("blobs:list"), {"sort": "name"}).content) == ["alpha.txt", "beta.txt"]
    first = client.get(reverse("blobs:list"), {"sort": "name"}).content.decode()
    following = re.search(r'href="([^"]+)" rel="next"', first)
    assert following is not None
    assert _names(client.get(html.unescape(following.group(1))).content) == ["gamma.log"]
    assert _names(client.get(reverse("blobs:list"), {"sort": "-size"}).content) == ["beta.txt", "gamma.log"]
    assert _names(client.get(reverse("blobs:list"), {"sort": "size"}).content) == ["alpha.txt", "gamma.log"]
    assert _names(client.get(reverse("blobs:list")).content) == ["gamma.log", "alpha.txt"]  # newest first
    assert _names(client.get(reverse("blobs:list"), {"q": "TXT", "sort": "name"}).content) == [
        "alpha.txt",
        "beta.txt",
    ]
    page = client.get(reverse("blobs:list"), {"q": "txt", "sort": "name"}).content.decode()
    assert 'aria-sort="ascending"' in page and "sort=-name" in page
    assert client.get(reverse("blobs:list"), {"sort": "evil"}).status_code == 200


def test_unfinished_uploads_are_invisible(as_user: Any, member: Any, tenant: Any) -> None:
    from blobs.uploads import Upload

    pending = Upload.begin(tenant, member, "pending.bin", None, declared_size=5)
    client = as_user(member)
    assert b"pending.bin" not in client.get(reverse("blobs:list")).content
    assert client.get(reverse("blobs:detail", args=[pending.blob.pk])).status_code == 404
    assert client.get(reverse("blobs:download", args=[pending.blob.pk])).status_code == 404
    pending.abort()


def test_the_upload_form_works_without_javascript(as_user: Any, member: Any, blob_root: Path) -> None:
    files = [SimpleUploadedFile("one.txt", b"first"), SimpleUploadedFile("two.txt", b"second")]
    response = as_user(member).post(reverse("blobs:upload"), {"file": files})
    assert response.status_code == 302
    assert sorted(Blob.objects.values_list("name", "size")) == [("one.txt", 5), ("two.txt", 6)]
    assert len(stored_files(blob_root)) == 2
    assert AuditEvent.objects.filter(type="blob.uploaded").count() == 2


def test_the_raw_upload_used_by_the_page_needs_the_csrf_header(
    as_user: Any, member: Any, blob_root: Path
) -> None:
    client = as_user(member, csrf=True)
    client.get(reverse("blobs:upload"))
    url = reverse("blobs:upload") + "?name=hello.txt&type=text/plain"
    refused = client.generic("POST", url, b"hello", content_type="application/octet-stream")
    assert refused.status_code == 403
    assert not Blob.objects.exists() and stored_files(blob_root) == []
    token = client.cookies["csrftoken"].value
    accepted = client.generic(
        "POST", url, b"hello", content_type="application/octet-stream", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 201
    blob = Blob.objects.get()
    assert (blob.name, blob.content_type, blob.size) == ("hello.txt", "text/plain", 5)
    assert accepted.json()["url"] == reverse("blobs:detail", args=[blob.pk])


def test_the_detail_page_names_the_key_that_protects_the_blob(as_user: Any, member: Any) -> None:
    blob = make_blob(member, b"abc", name="report.pdf")
    page = as_user(member).get(reverse("blobs:detail", args=[blob.pk])).content.decode()
    assert "report.pdf" in page and "member@acme.test" in page and "3 bytes" in page
    assert "Key version 1" in page and "Kodori-managed" in page


@pytest.mark.parametrize(
    ("name", "stored_type", "served_type", "disposition"),
    [
        ("report.pdf", "application/pdf", "application/pdf", 'attachment; filename="report.pdf"'),
        ("page.html", "text/html", "application/octet-stream", 'attachment; filename="page.html"'),
        ("logo.svg", "image/svg+xml", "application/octet-stream", 'attachment; filename="logo.svg"'),
        ("notes.txt", "text/plain", "text/plain", 'attachment; filename="notes.txt"'),
        (
            'Grüße "x".txt',
            "text/plain",
            "text/plain",
            "attachment; filename*=utf-8''Gr%C3%BC%C3%9Fe%20%22x%22.txt",
        ),
        (
            'a"b.bin',
            "application/octet-stream",
            "application/octet-stream",
            'attachment; filename="a\\"b.bin"',
        ),
        # A Windows path: only the last part is the name.
        (
            "C:\\Users\\me\\c.bin",
            "application/octet-stream",
            "application/octet-stream",
            'attachment; filename="c.bin"',
        ),
    ],
)
def test_downloads_are_safe_attachments(
    as_user: Any, member: Any, tenant: Any, name: str, stored_type: str, served_type: str, disposition: str
) -> None:
    from blobs.uploads import Upload

    upload = Upload.begin(tenant, member, name, stored_type, declared_size=4)
    upload.write(b"<b/>")
    blob = upload.finish()
    response = as_user(member).get(reverse("blobs:download", args=[blob.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == served_type
    assert response["Content-Disposition"] == disposition
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == b"<b/>"


def test_names_cannot_inject_headers_or_paths(as_user: Any, member: Any, blob_root: Path) -> None:
    client = as_user(member)
    url = reverse("blobs:upload") + "?name=" + "..%2F..%2Fevil%0D%0ASet-Cookie:%20x=1.txt"
    response = client.generic("POST", url, b"data", content_type="application/octet-stream")
    assert response.status_code == 201
    blob = Blob.objects.get()
    assert blob.name == "evilSet-Cookie: x=1.txt"
    (stored,) = stored_files(blob_root)
    assert stored.is_relative_to(blob_root) and blob.name not in str(stored)
    download = client.get(reverse("blobs:download", args=[blob.pk]))
    assert "\n" not in download["Content-Disposition"] and "Set-Cookie" not in download.headers


def test_delete_asks_first_then_destroys_the_key_and_the_object(
    as_user: Any, member: Any, blob_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    blob = make_blob(member, name="old.txt")
    client = as_user(member)
    confirm = client.get(reverse("blobs:delete", args=[blob.pk]))
    assert confirm.status_code == 200 and b"Delete old.txt?" in confirm.content
    assert Blob.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("blobs:delete", args=[blob.pk]))
    assert response.status_code == 302
    assert not Blob.objects.exists() and not DataKey.objects.exists()
    assert stored_files(blob_root) == []
    event = AuditEvent.objects.get(type="blob.deleted")
    assert event.payload["name"] == "old.txt" and event.actor_email == "member@acme.test"


def test_downloads_are_audited_only_when_switched_on(as_user: Any, member: Any, settings: Any) -> None:
    blob = make_blob(member)
    client = as_user(member)
    b"".join(client.get(reverse("blobs:download", args=[blob.pk])).streaming_content)
    assert not AuditEvent.objects.filter(type="blob.downloaded").exists()
    settings.AUDIT_BLOB_DOWNLOADS = True
    b"".join(client.get(reverse("blobs:download", args=[blob.pk]), HTTP_RANGE="bytes=0-1").streaming_content)
    event = AuditEvent.objects.get(type="blob.downloaded")
    assert event.payload["range"] == "bytes=0-1"


def test_a_form_upload_refused_for_csrf_leaves_nothing(as_user: Any, member: Any, blob_root: Path) -> None:
    # The body is encrypted as it arrives, before the token in it can be checked; a refusal throws it away.
    response = as_user(member, csrf=True).post(
        reverse("blobs:upload"), {"file": SimpleUploadedFile("x.txt", b"x")}
    )
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert not Blob.objects.exists() and not DataKey.objects.exists() and stored_files(blob_root) == []
