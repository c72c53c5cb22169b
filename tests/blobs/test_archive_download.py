"""Several files of /blobs as one zip: ``POST /blobs/archive`` (``offboarding.selection``).

The archive opens with Python's zipfile and every member is byte for byte the uploaded file, under its name
made safe (duplicates numbered, hostile names defused); it streams in memory that does not grow with the
files; each file is audited as a download; and a selection that cannot be served whole (another tenant's
file, a deleted one, a damaged one, too many, none, a forged id) is refused before the first byte with a
message, never answered with an archive that lacks a file or stops short. A chunk found damaged only
mid-stream aborts the body, as a single download does.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent, EventType
from blobs import damage
from blobs.downloads import DownloadAborted
from blobs.models import Blob, Damage
from blobs.selection import MAX_FILES
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE
from tests.blobs.support import FileStore, make_blob, pattern
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
URL = "/blobs/archive"


def _post(client: Client, ids: list[Any]) -> Any:
    return client.post(reverse("offboarding:download_selected"), {"ids": [str(i) for i in ids]})


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def _zip(response: Any) -> zipfile.ZipFile:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="acme-files-')
    archive = zipfile.ZipFile(io.BytesIO(_body(response)))
    assert archive.testzip() is None  # every member's CRC-32 checks out
    return archive


def test_url_is_where_the_list_posts() -> None:
    assert reverse("offboarding:download_selected") == URL


def test_the_archive_holds_each_selected_file_byte_for_byte(member: Any, settings: Any) -> None:
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * 1024  # the big file streams rather than being read whole
    files = {
        "big.bin": pattern(3 * MIB + 12345, seed=1),
        "notes.txt": b"some notes\n",
        "empty.txt": b"",
    }
    blobs = {name: make_blob(member, data, name=name) for name, data in files.items()}
    make_blob(member, b"not selected", name="other.txt")

    archive = _zip(_post(client_for(member), [blobs[name].pk for name in files]))

    assert archive.namelist() == list(files)  # in the order they were selected, nothing else
    for name, data in files.items():
        assert archive.read(name) == data
        info = archive.getinfo(name)
        assert info.file_size == len(data)
        assert info.compress_type == zipfile.ZIP_STORED


def test_duplicate_and_hostile_names_are_made_safe_and_unique(member: Any) -> None:
    uploads = [
        ("report.pdf", b"first report"),
        ("report.pdf", b"second report"),
        ("REPORT.pdf", b"third, differing only in case"),
        ("..", b"-"),  # refused by uploads: stands for an unnamed file below
        ("CON.txt", b"a Windows device name"),
        ("what?: <yes>|no*.txt", b"characters Windows refuses"),
        ("...hidden. ", b"leading dots and trailing space"),
    ]
    blobs = []
    for name, data in uploads:
        if name == "..":
            blob = make_blob(member, data, name="placeholder")
            Blob.objects.filter(pk=blob.pk).update(name="..")  # as an older row or a direct write might hold
            blob.name = ".."
        else:
            blob = make_blob(member, data, name=name)
        blobs.append(blob)

    archive = _zip(_post(client_for(member), [b.pk for b in blobs]))

    assert archive.namelist() == [
        "report.pdf",
        "report (2).pdf",
        "REPORT (3).pdf",
        "unnamed",
        "_CON.txt",
        "what__ _yes__no_.txt",
        "hidden",
    ]
    assert [archive.read(n) for n in archive.namelist()] == [data for _name, data in uploads]
    for name in archive.namelist():
        assert "/" not in name and "\\" not in name and not name.startswith(".")


def test_memory_stays_flat_while_large_files_stream(member: Any, settings: Any) -> None:
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * 1024
    size = 8 * MIB + 7
    blobs = [make_blob(member, pattern(size, seed=n), name=f"part-{n}.bin") for n in range(3)]
    expected = hashlib.sha256()
    for n in range(3):
        expected.update(pattern(size, seed=n))
    response = _post(client_for(member), [b.pk for b in blobs])
    assert response.status_code == 200

    tracemalloc.start()
    try:
        total = 0
        archive_hash = hashlib.sha256()
        for piece in response.streaming_content:
            total += len(piece)
            archive_hash.update(piece)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 3 * size  # every byte went through, plus headers and the central directory
    # 24 MiB of files, handled about 1 MiB at a time: never more than a few pieces alive at once.
    assert peak < 6 * MIB, f"peak {peak / MIB:.1f} MiB while streaming {total / MIB:.1f} MiB"


def test_each_file_is_audited_as_a_download(member: Any, settings: Any) -> None:
    settings.AUDIT_BLOB_DOWNLOADS = True
    blobs = [make_blob(member, b"a", name="a.txt"), make_blob(member, b"b", name="b.txt")]
    _zip(_post(client_for(member), [b.pk for b in blobs]))
    events = AuditEvent.objects.filter(type=EventType.BLOB_DOWNLOADED).order_by("seq")
    assert [(e.payload["blobId"], e.payload["name"], e.payload["range"]) for e in events] == [
        (str(b.pk), b.name, "") for b in blobs
    ]
    assert {e.actor_id for e in events} == {member.pk}


def test_nothing_is_audited_when_download_auditing_is_off(member: Any, settings: Any) -> None:
    settings.AUDIT_BLOB_DOWNLOADS = False
    blob = make_blob(member, b"a", name="a.txt")
    _zip(_post(client_for(member), [blob.pk]))
    assert not AuditEvent.objects.filter(type=EventType.BLOB_DOWNLOADED).exists()


def test_a_viewer_downloads_an_archive_too(member: Any, viewer: Any) -> None:
    blob = make_blob(member, b"for everyone", name="shared.txt")
    assert _zip(_post(client_for(viewer), [blob.pk])).read("shared.txt") == b"for everyone"


def test_another_tenants_file_refuses_the_whole_archive(
    member: Any, outsider: Any, other_tenant: Any, settings: Any
) -> None:
    settings.AUDIT_BLOB_DOWNLOADS = True
    mine = make_blob(member, b"mine", name="mine.txt")
    theirs = make_blob(outsider, b"theirs", name="secret-plans.txt", tenant=other_tenant)
    response = _post(client_for(member), [mine.pk, theirs.pk])
    assert response.status_code == 404
    page = response.content.decode()
    assert "1 of the 2 selected files is not among Acme Corp" in page
    assert "secret-plans" not in page and str(theirs.pk) not in page
    assert not AuditEvent.objects.filter(type=EventType.BLOB_DOWNLOADED).exists()
    # And from the other side: the outsider cannot fetch acme's file through their own tenant.
    assert _post(client_for(outsider), [mine.pk]).status_code == 404


def test_a_file_deleted_since_the_list_was_shown_is_named_not_skipped(member: Any) -> None:
    kept, gone = make_blob(member, b"kept", name="kept.txt"), make_blob(member, b"gone", name="gone.txt")
    gone_id = gone.pk
    from blobs.services import delete_blob

    delete_blob(gone, actor=member)
    response = _post(client_for(member), [kept.pk, gone_id])
    assert response.status_code == 404
    assert "1 of the 2 selected files is not among Acme Corp" in response.content.decode()


def test_an_upload_in_flight_cannot_be_selected(member: Any, tenant: Any) -> None:
    from blobs.uploads import Upload

    pending = Upload.begin(tenant, member, "half.bin", None, declared_size=10)
    try:
        assert _post(client_for(member), [pending.blob.pk]).status_code == 404
    finally:
        pending.abort()


def test_a_file_known_to_be_damaged_is_refused_by_name(member: Any, settings: Any) -> None:
    settings.AUDIT_BLOB_DOWNLOADS = True
    fine = make_blob(member, b"fine", name="fine.txt")
    broken = make_blob(member, b"broken", name="broken.txt")
    damage.report(broken, Damage.CHUNK, chunk=0, found_by="scrub")
    response = _post(client_for(member), [fine.pk, broken.pk])
    assert response.status_code == 409
    page = response.content.decode()
    assert "“broken.txt” is damaged in storage" in page and "Nothing was sent" in page
    assert "Back to the files" in page
    assert not AuditEvent.objects.filter(type=EventType.BLOB_DOWNLOADED).exists()


def test_damage_not_yet_known_is_found_before_the_first_byte(member: Any, blob_root: Path) -> None:
    fine = make_blob(member, b"fine", name="fine.txt")
    cut = make_blob(member, pattern(CHUNK_SIZE * 2), name="cut.bin")
    store = FileStore(blob_root)
    store.write(cut, store.read(cut)[:-10])  # truncated in storage behind Kodori's back
    response = _post(client_for(member), [fine.pk, cut.pk])
    assert response.status_code == 409
    assert "“cut.bin” is damaged in storage" in response.content.decode()
    cut.refresh_from_db()
    assert cut.damage == Damage.LENGTH  # recorded, so the list marks it from now on
    assert AuditEvent.objects.filter(type=EventType.BLOB_CORRUPT, payload__blobId=str(cut.pk)).count() == 1


def test_a_chunk_that_fails_mid_stream_aborts_the_archive(
    member: Any, blob_root: Path, settings: Any
) -> None:
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * 1024
    blob = make_blob(member, pattern(40 * CHUNK_SIZE), name="long.bin")
    store = FileStore(blob_root)
    stored = bytearray(store.read(blob))
    stored[envelope.HEADER_SIZE + 20 * SEALED_CHUNK_SIZE + 100] ^= 0x01  # inside chunk 20 of 40
    store.write(blob, bytes(stored))
    response = _post(client_for(member), [blob.pk])
    assert response.status_code == 200  # the header, first and final chunks authenticate
    received = bytearray()
    with pytest.raises(DownloadAborted):
        for piece in response.streaming_content:
            received += piece
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(bytes(received)))
    blob.refresh_from_db()
    assert blob.damage == Damage.CHUNK


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "Select at least one file to download."),
        (["not-an-id"], "That selection is not valid"),
        ([uuid4() for _ in range(MAX_FILES + 1)], f"Select at most {MAX_FILES} files for one archive; 101"),
    ],
    ids=["none", "forged", "too-many"],
)
def test_a_bad_selection_is_refused_with_what_to_change(member: Any, ids: list[Any], message: str) -> None:
    response = _post(client_for(member), ids)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert response["Content-Type"].startswith("text/html")


def test_the_same_id_twice_is_one_member(member: Any) -> None:
    blob = make_blob(member, b"once", name="once.txt")
    assert _zip(_post(client_for(member), [blob.pk, blob.pk])).namelist() == ["once.txt"]


def test_only_post_is_answered(member: Any) -> None:
    blob = make_blob(member, b"x", name="x.txt")
    assert client_for(member).get(URL, {"ids": [str(blob.pk)]}).status_code == 405


def test_a_sealed_tenant_sends_nothing(member: Any, tenant: Any) -> None:
    blob = make_blob(member, b"x", name="x.txt")
    tenant.__class__.objects.filter(pk=tenant.pk).update(
        sealed_at=tenant.created_at, seal_reason="Key revoked."
    )
    response = _post(client_for(member), [blob.pk])
    assert response.status_code == 503
    assert "Key revoked." in response.content.decode()
