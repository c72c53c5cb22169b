"""Damaged files in an export: damage found before a file's first byte lists it as skipped; damage found
later cuts the download short and the next download skips it; a file store that fails interrupts the part
rather than leave a file out; a file restored from a backup is exported again and its damage mark lifted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent, EventType
from blobs.downloads import DownloadAborted
from blobs.errors import StorageUnavailable
from blobs.models import Blob, Damage
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE
from offboarding.models import PartStatus
from tenants.models import Tenant
from tests.blobs.support import FileStore, Store
from tests.conftest import client_for
from tests.offboarding import export_support
from tests.offboarding.export_support import (
    KIB,
    check_files,
    fetch,
    fresh_part,
    make_export,
    manifest,
    part_url,
    read_archive,
    records,
    upload,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = export_support.private_blob_root


# --- damaged files -----------------------------------------------------------------------------------------


def _flip(store: Store, blob: Blob, offset: int) -> None:
    stored = bytearray(store.read(blob))
    stored[offset] ^= 1
    store.write(blob, bytes(stored))


def test_a_file_found_damaged_before_its_first_byte_is_listed_as_skipped(
    settings: Any, store: Store, tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * KIB  # files over it stream, as files over 8 MiB do
    first = upload(owner, tenant, "first.txt", 1000)
    small = upload(owner, tenant, "small.bin", 50_000)  # checked whole before its first byte
    streamed = upload(owner, tenant, "streamed.bin", 300_000)  # its final chunk is checked first
    last = upload(owner, tenant, "last.txt", 2000)
    _flip(store, small.blob, envelope.HEADER_SIZE + SEALED_CHUNK_SIZE + 5)
    _flip(store, streamed.blob, envelope.ciphertext_size(300_000) - 3)
    client = client_for(owner)
    export_row = make_export(client, "zip")
    fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    members = read_archive(tmp_path / "part1.zip", "zip")
    check_files(members, [first, last])
    lines = manifest(members)
    skipped = records(lines, "skipped")
    assert [(s["name"], s["size"], s["blob_id"]) for s in skipped] == [
        ("small.bin", 50_000, str(small.blob.pk)),
        ("streamed.bin", 300_000, str(streamed.blob.pk)),
    ]
    assert all("damaged in storage" in s["reason"] for s in skipped)
    assert lines[-1] == {"record": "end", "files": 2, "bytes": 3000, "skipped": 2, "deleted_since_export": 0}
    part = fresh_part(export_row)
    assert (part.status, part.files_sent, part.bytes_sent) == (PartStatus.COMPLETE, 2, 3000)
    corrupt = AuditEvent.objects.filter(tenant=tenant, type=EventType.BLOB_CORRUPT)
    assert sorted(e.payload["blobId"] for e in corrupt) == sorted([str(small.blob.pk), str(streamed.blob.pk)])


def test_a_chunk_that_fails_after_the_first_byte_cuts_the_download_and_the_next_download_skips_it(
    settings: Any, tenant: Tenant, owner: Any, blob_root: Path, tmp_path: Path
) -> None:
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * KIB
    damaged_chunk = 40
    first = upload(owner, tenant, "first.txt", 5000)
    big = upload(owner, tenant, "big.bin", 64 * CHUNK_SIZE + 100)
    last = upload(owner, tenant, "last.txt", 3000)
    _flip(FileStore(blob_root), big.blob, envelope.HEADER_SIZE + damaged_chunk * SEALED_CHUNK_SIZE + 10)
    client = client_for(owner)
    export_row = make_export(client, "tar")
    response: Any = client.get(part_url(export_row, 1))
    assert response.status_code == 200
    received = bytearray()
    with pytest.raises(DownloadAborted):
        for piece in response.streaming_content:
            received += piece
    # What went out before the failure is authentic: the first file, then big.bin up to the damaged chunk.
    assert big.data is not None and first.data is not None
    authentic = damaged_chunk * CHUNK_SIZE
    assert first.data in received and received.endswith(big.data[:authentic])
    part = fresh_part(export_row)
    assert (part.status, part.files_sent, part.bytes_sent) == (PartStatus.INTERRUPTED, 1, 5000 + authentic)
    assert "'big.bin' is damaged in storage" in part.error and "listed as skipped" in part.error
    (corrupt,) = AuditEvent.objects.filter(tenant=tenant, type=EventType.BLOB_CORRUPT)
    assert (corrupt.payload["blobId"], corrupt.payload["chunk"]) == (str(big.blob.pk), damaged_chunk)
    assert Blob.objects.get(pk=big.blob.pk).damage == Damage.CHUNK

    # The damage is known now, so it is found before big.bin's first byte: the part completes without it.
    fetch(client, part_url(export_row, 1), tmp_path / "part1.tar")
    members = read_archive(tmp_path / "part1.tar", "tar")
    check_files(members, [first, last])
    (skipped,) = records(manifest(members), "skipped")
    assert skipped["blob_id"] == str(big.blob.pk) and "chunk" in skipped["reason"]
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.files_sent) == (PartStatus.COMPLETE, 2, 2)


def test_a_file_store_failure_interrupts_the_part_instead_of_leaving_files_out(
    tenant: Tenant, owner: Any, blob_root: Path, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, f"f{n}.txt", 1000 + n) for n in range(3)]
    path = blob_root / sent[1].blob.storage_key
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()  # opening it fails with an OS error that says nothing about the object, as a dead store does
    client = client_for(owner)
    export_row = make_export(client, "zip")
    response: Any = client.get(part_url(export_row, 1))
    assert response.status_code == 200
    with pytest.raises(StorageUnavailable):
        b"".join(response.streaming_content)
    part = fresh_part(export_row)
    assert (part.status, part.files_sent) == (PartStatus.INTERRUPTED, 1)
    assert "'f1.txt' could not be read: The file store is not reachable" in part.error
    assert not AuditEvent.objects.filter(tenant=tenant, type=EventType.BLOB_CORRUPT).exists()

    path.rmdir()
    path.write_bytes(saved)
    fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    members = read_archive(tmp_path / "part1.zip", "zip")
    check_files(members, sent)
    assert records(manifest(members), "skipped") == []


def test_a_damaged_file_restored_from_a_backup_is_exported_again_and_its_damage_mark_lifted(
    settings: Any, tenant: Tenant, owner: Any, blob_root: Path, tmp_path: Path
) -> None:
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * KIB
    small = upload(owner, tenant, "small.bin", 50_000)  # checked whole before its first byte
    big = upload(owner, tenant, "big.bin", 64 * CHUNK_SIZE + 100)  # streamed
    store = FileStore(blob_root)
    backups = {s.blob.pk: store.read(s.blob) for s in (small, big)}
    _flip(store, small.blob, envelope.HEADER_SIZE + 5)
    _flip(store, big.blob, envelope.HEADER_SIZE + 40 * SEALED_CHUNK_SIZE + 10)
    client = client_for(owner)
    export_row = make_export(client, "zip")
    with pytest.raises(DownloadAborted):
        b"".join(client.get(part_url(export_row, 1)).streaming_content)  # type: ignore[attr-defined]
    assert set(Blob.objects.filter(damaged_at__isnull=False).values_list("pk", flat=True)) == set(backups)

    for s in (small, big):
        store.write(s.blob, backups[s.blob.pk])
    fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    check_files(read_archive(tmp_path / "part1.zip", "zip"), [small, big])
    assert not Blob.objects.filter(damaged_at__isnull=False).exists()
    repaired = AuditEvent.objects.filter(tenant=tenant, type=EventType.BLOB_REPAIRED)
    assert sorted(e.payload["blobId"] for e in repaired) == sorted(str(pk) for pk in backups)
