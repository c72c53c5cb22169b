"""The tenant export (``offboarding.exports``) in process, through the real pages and API, on the filesystem
and on S3 (moto's server over real HTTP).

* Round trip: files of 0 B, 1 B, 16383, 16384, 16385 B and 5 MiB (and, once, 100 MiB uploaded as a stream)
  come back byte for byte from zip and tar parts; the manifest names each one with the SHA-256 of its real
  bytes; README.txt is there; part 1 carries the audit evidence, which verifies offline and holds the
  ``tenant.exported`` event of the very download that carries it; README.txt's own instructions check an
  extracted part (and fail on a changed byte).
* Parts: cut by ``EXPORT_PART_FILES`` and ``EXPORT_PART_BYTES`` (a larger file alone), each file in exactly
  one part, a part downloaded twice is the same archive, later uploads are not in it, files deleted since
  are left out and counted in the manifest's last line.
* Names: duplicates and hostile names become safe, unique paths under ``files/``; the manifest keeps the name.
* Progress and audit: one ``tenant.exported`` per download; ready → streaming → complete with the totals; a
  download abandoned half-way is ``interrupted`` with its reason and completes when downloaded again; only
  the latest download of a part writes its state; the page and its htmx partial show it.
* Refusals before any byte: sealed (503, the seal's reason), a disabled key the part needs (503 naming it),
  erasure begun (410). Damage found before a file's first byte lists it as skipped; damage found later cuts
  the download short and the next download skips it; a file store that fails interrupts the part rather
  than leave a file out; a file restored from a backup is exported again and its damage mark lifted.
* The API: create, status, part download with its headers, errors as JSON.

Over a real gunicorn (100 MiB, an abandoned socket, constant memory at 1 GiB): ``test_export_live.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit import signing, verify_bundle
from audit.models import AuditEvent, EventType
from blobs.downloads import DownloadAborted
from blobs.errors import StorageUnavailable
from blobs.models import Blob, Damage
from blobs.services import delete_blob
from blobs.uploads import Upload
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring
from encryption import services as key_services
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE
from encryption.models import DataKey, TenantKey
from encryption.sealing import Trigger, seal_tenant
from offboarding import erasure, exports
from offboarding.models import STALLED_AFTER, DeletionRequest, Export, ExportPart, PartStatus, Via
from offboarding.services import schedule_deletion
from tenants.models import Tenant, TenantState
from tests.blobs.support import FileStore, S3Store, Store, bearer, make_token, random_stream
from tests.conftest import client_for
from tests.encryption import conftest as encryption_fixtures
from tests.encryption.support import active_azure_key, enable_cloud_kms, rotate_kek
from tests.s3 import delete_bucket, moto_server, s3_client, storage_options

pytestmark = pytest.mark.django_db

KIB = 1024
MIB = 1024 * KIB
KEEP = 8 * MIB  # files up to this size are kept in memory to compare bytes; larger ones by SHA-256 only
BUCKET = "kodori-test-exports"
SIZES = [0, 1, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 5 * MIB]


# The Azure Key Vault emulator and Kodori's settings for it, as the encryption tests have them.
vault = encryption_fixtures.vault
kodori_app = encryption_fixtures.kodori_app


@pytest.fixture(autouse=True)
def _private_blob_root(blob_root: Path) -> None:
    """Every test's objects in its own directory (``store`` moves them to S3 for the S3 cases)."""


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture
def s3(settings: Any, moto_s3: str) -> Iterator[S3Store]:
    """This test's blob objects in a bucket of moto's S3."""
    client = s3_client(moto_s3)
    client.create_bucket(Bucket=BUCKET)
    settings.AWS_S3_FILE_BUFFER_SIZE = 5 * MIB  # S3's least part size: a 5 MiB file is a multipart upload
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": storage_options(moto_s3, BUCKET)},
    }
    try:
        yield S3Store(client, BUCKET)
    finally:
        for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
        delete_bucket(client, BUCKET)


@pytest.fixture(params=["filesystem", "s3"])
def store(request: Any, blob_root: Path) -> Store:
    """Where this test's blob objects are: a private directory, or a bucket of moto's S3."""
    if request.param == "filesystem":
        return FileStore(blob_root)
    s3: Store = request.getfixturevalue("s3")
    return s3


# --- uploading, downloading and reading archives ---------------------------------------------------------


@dataclass
class Sent:
    """A file as it was uploaded: its row, the SHA-256 of the bytes sent, and the bytes when small."""

    blob: Blob
    sha256: str
    data: bytes | None

    @property
    def size(self) -> int:
        return self.blob.size


def upload(user: Any, tenant: Tenant, name: str, size: int) -> Sent:
    """Upload ``size`` random bytes through the real upload service, fed piece by piece as a request body
    would be; nothing of a large file is held in memory."""
    digest = hashlib.sha256()
    kept: bytearray | None = bytearray() if size <= KEEP else None
    started = Upload.begin(tenant, user, name, "application/octet-stream", declared_size=size)
    try:
        for piece in random_stream(size):
            digest.update(piece)
            if kept is not None:
                kept += piece
            started.write(piece)
        blob = started.finish(expected_size=size)
    except BaseException:
        started.abort()
        raise
    return Sent(blob, digest.hexdigest(), bytes(kept) if kept is not None else None)


def make_export(client: Client, fmt: str = "zip") -> Export:
    """Make an export through the export page, as an owner does."""
    response = client.post(reverse("offboarding:export"), {"format": fmt})
    assert response.status_code == 302, response.content[:500]
    export_row = Export.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert response["Location"] == reverse("offboarding:export_detail", args=[export_row.pk])
    return export_row


def part_url(export_row: Export, number: int) -> str:
    return reverse("offboarding:export_part", args=[export_row.pk, number])


def fetch(client: Client, url: str, dest: Path, **extra: Any) -> Any:
    """GET a part and write its streamed body to ``dest``; the response (with its headers)."""
    response: Any = client.get(url, **extra)
    assert response.status_code == 200, response.content[:500]
    with dest.open("wb") as out:
        for piece in response.streaming_content:
            out.write(piece)
    return response


@dataclass
class Member:
    size: int
    sha256: str
    data: bytes | None


def _read_member(stream: IO[bytes]) -> Member:
    digest, size, kept = hashlib.sha256(), 0, bytearray()
    while piece := stream.read(MIB):
        digest.update(piece)
        size += len(piece)
        if size <= KEEP:
            kept += piece
    return Member(size, digest.hexdigest(), bytes(kept) if size <= KEEP else None)


def read_archive(path: Path, fmt: str) -> dict[str, Member]:
    """Every member of a zip (each CRC-32 checked as it is read) or a tar, by name; no duplicate names."""
    members: dict[str, Member] = {}
    names: list[str] = []
    if fmt == "zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                names.append(info.filename)
                with archive.open(info) as stream:
                    members[info.filename] = _read_member(stream)
    else:
        with tarfile.open(path) as archive:
            for tar_info in archive:
                assert tar_info.isfile(), tar_info.name
                names.append(tar_info.name)
                extracted = archive.extractfile(tar_info)
                assert extracted is not None
                members[tar_info.name] = _read_member(extracted)
    assert len(names) == len(set(names)), names
    return members


def manifest(members: dict[str, Member]) -> list[dict[str, Any]]:
    data = members["manifest.jsonl"].data
    assert data is not None and data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def records(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["record"] == kind]


def abandon(response: Any) -> None:
    """What a WSGI server does when the client goes away mid-body: close the response, which closes its
    iterator, then fires request_finished, which closes the database connection as at the end of any request
    (so tests that call this use committed data: ``transaction=True``)."""
    response.close()


def utc_text(moment: datetime | None) -> str:
    """How the manifest writes a time: UTC, microseconds, "Z"."""
    assert moment is not None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def exported_events(tenant: Tenant) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, type=EventType.TENANT_EXPORTED).order_by("seq"))


def fresh_part(export_row: Export, number: int = 1) -> ExportPart:
    return ExportPart.objects.get(export=export_row, number=number)


def check_files(members: dict[str, Member], sent: list[Sent]) -> list[dict[str, Any]]:
    """Every sent file is in the archive byte for byte, once, and its manifest line tells the truth; the
    manifest's file lines, in order."""
    lines = records(manifest(members), "file")
    assert [line["blob_id"] for line in lines] == [str(s.blob.pk) for s in sent]
    for line, s in zip(lines, sent, strict=True):
        got = members[line["path"]]
        assert (got.size, got.sha256) == (s.size, s.sha256), line
        if s.data is not None:
            assert got.data == s.data
        assert line["path"].startswith("files/") and line["name"] == s.blob.name
        assert line["size"] == s.size and line["sha256"] == s.sha256
        assert line["uploaded_at"] == utc_text(s.blob.completed_at)
        assert line["uploaded_by"] == s.blob.created_by_email
        assert line["content_type"] == s.blob.content_type
    file_members = sorted(name for name in members if name.startswith("files/"))
    assert file_members == sorted(line["path"] for line in lines)
    return lines


# --- round trip -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_a_part_holds_every_file_byte_for_byte_with_its_manifest_and_evidence(
    fmt: str, store: Store, tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(name="Acme & Sons <EU>")  # a name HTML would escape
    tenant.refresh_from_db()
    sent = [upload(owner, tenant, f"file-{size}.bin", size) for size in SIZES]
    # The first upload took an hour: begun at created_at, finished at completed_at.
    Blob.objects.filter(pk=sent[0].blob.pk).update(created_at=sent[0].blob.created_at - timedelta(hours=1))
    client = client_for(owner)
    export_row = make_export(client, fmt)
    assert (export_row.files, export_row.bytes) == (len(SIZES), sum(SIZES))
    started = time.monotonic()
    response = fetch(client, part_url(export_row, 1), tmp_path / f"part1.{fmt}")
    elapsed = time.monotonic() - started
    members = read_archive(tmp_path / f"part1.{fmt}", fmt)
    print(f"{fmt} on {type(store).__name__}: {sum(SIZES) / MIB:.1f} MiB exported in {elapsed:.2f} s")

    assert response["Content-Type"] == ("application/zip" if fmt == "zip" else "application/x-tar")
    check_files(members, sent)
    lines = manifest(members)
    header = lines[0]
    assert header == {
        "record": "header",
        "format": "kodori-export-manifest",
        "version": 1,
        "tenant": {"id": tenant.pk, "slug": "acme", "name": "Acme & Sons <EU>"},
        "export_id": str(export_row.pk),
        "archive_format": fmt,
        "snapshot_at": utc_text(export_row.snapshot_at),
        "part": 1,
        "parts": 1,
        "files_in_part": len(SIZES),
        "files_in_export": len(SIZES),
        "bytes_in_export": sum(SIZES),
    }
    assert lines[-1] == {
        "record": "end",
        "files": len(SIZES),
        "bytes": sum(SIZES),
        "skipped": 0,
        "deleted_since_export": 0,
    }
    assert len(lines) == len(SIZES) + 2
    assert set(members) == {f"files/file-{size}.bin" for size in SIZES} | {
        "manifest.jsonl",
        "README.txt",
        "audit-evidence.zip",
    }
    # Each file's modification time is when its upload finished, the manifest's uploaded_at.
    completed = sent[0].blob.completed_at
    assert completed is not None
    if fmt == "tar":
        with tarfile.open(tmp_path / "part1.tar") as archive:
            assert archive.getmember("files/file-0.bin").mtime == int(completed.timestamp())
    else:
        with zipfile.ZipFile(tmp_path / "part1.zip") as archive:
            stamp = completed.astimezone(UTC)
            assert archive.getinfo("files/file-0.bin").date_time == (
                *stamp.timetuple()[:5],
                stamp.second // 2 * 2,
            )
    readme = members["README.txt"].data
    assert readme is not None
    assert "Kodori export of Acme & Sons <EU> (acme)" in readme.decode()
    assert "This is part 1 of 1 (6 files)." in readme.decode() and "audit-evidence.zip" in readme.decode()

    # The evidence: the chain up to its head when part 1 was built, which is after this download began, so
    # it holds this very download's tenant.exported; it verifies offline, signatures required.
    evidence = members["audit-evidence.zip"].data
    assert evidence is not None
    bundle_path = tmp_path / "audit-evidence.zip"
    bundle_path.write_bytes(evidence)
    key = signing.public_key_b64()
    assert verify_bundle.main([str(bundle_path)]) == 0
    assert verify_bundle.main([str(bundle_path), "--public-key", key, "--require-signatures"]) == 0
    bundle = verify_bundle.read_bundle(bundle_path)
    in_bundle = [e for e in bundle.events if e["type"] == EventType.TENANT_EXPORTED]
    (recorded,) = exported_events(tenant)
    assert [e["seq"] for e in in_bundle] == [recorded.seq]
    assert in_bundle[0]["payload"] == {
        "exportId": str(export_row.pk),
        "format": fmt,
        "part": 1,
        "parts": 1,
        "files": len(SIZES),
        "bytes": sum(SIZES),
    }
    assert bundle.events[-1]["seq"] == AuditEvent.objects.filter(tenant=tenant).count()

    # A damaged copy of the evidence fails the same verifier.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(io.BytesIO(evidence)) as original, zipfile.ZipFile(tampered, "w") as copy:
        for info in original.infolist():
            data = original.read(info)
            if info.filename == "bundle.jsonl":
                data = data.replace(b'"part":1', b'"part":2', 1)
            copy.writestr(info, data)
    assert verify_bundle.main([str(tampered), "--public-key", key]) != 0


@pytest.mark.slow
def test_a_100_mib_file_streams_through_a_zip_export_on_s3(
    s3: S3Store, tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    sent = [upload(owner, tenant, "small.bin", 1000), upload(owner, tenant, "big.bin", 100 * MIB)]
    uploaded = time.monotonic()
    assert len(s3.read(sent[1].blob)) == envelope.ciphertext_size(100 * MIB)  # really stored on S3
    client = client_for(owner)
    export_row = make_export(client, "zip")
    fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    downloaded = time.monotonic()
    members = read_archive(tmp_path / "part1.zip", "zip")
    check_files(members, sent)
    part = fresh_part(export_row)
    assert (part.status, part.files_sent, part.bytes_sent) == (PartStatus.COMPLETE, 2, 100 * MIB + 1000)
    print(
        f"100 MiB on S3 (moto): upload {uploaded - started:.1f} s, zip export download "
        f"{downloaded - uploaded:.1f} s ({100 / (downloaded - uploaded):.0f} MiB/s), "
        f"check {time.monotonic() - downloaded:.1f} s"
    )


def test_the_readme_instructions_check_an_extracted_part(tenant: Tenant, owner: Any, tmp_path: Path) -> None:
    sent = [upload(owner, tenant, "report.pdf", 3000), upload(owner, tenant, "report.pdf", 4000)]
    client = client_for(owner)
    export_row = make_export(client, "tar")
    fetch(client, part_url(export_row, 1), tmp_path / "part1.tar")
    out = tmp_path / "part1"
    with tarfile.open(tmp_path / "part1.tar") as archive:
        archive.extractall(out, filter="data")
    readme = (out / "README.txt").read_text()
    assert "2 files" in readme

    # The evidence, verified offline exactly as README.txt says (KEY: the key shown on /audit).
    commands = [line.strip() for line in readme.splitlines() if "audit-evidence.zip" in line and "  " in line]
    unzip, verify = (line for line in commands if line.startswith(("unzip", "python3")))
    assert unzip.split()[0] == "unzip" and verify.split()[0] == "python3"
    subprocess.run(unzip.split(), cwd=out, check=True, capture_output=True, timeout=60)
    key = signing.public_key_b64()
    run = [sys.executable, *verify.replace("KEY", key).split()[1:]]
    checked = subprocess.run(run, cwd=out, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (out / "README.txt").read_text() == readme  # the bundle's own README went to evidence/

    # The files, checked against the manifest by README.txt's Python, which fails on a changed byte.
    snippet = textwrap.dedent(readme.split("e.g. with Python:\n", 1)[1])
    assert subprocess.run([sys.executable, "-c", snippet], cwd=out, timeout=60).returncode == 0
    damaged = out / "files" / "report (2).pdf"
    assert damaged.read_bytes() == sent[1].data
    damaged.write_bytes(b"X" + damaged.read_bytes()[1:])
    failed = subprocess.run([sys.executable, "-c", snippet], cwd=out, capture_output=True, timeout=60)
    assert failed.returncode != 0 and b"report (2).pdf" in failed.stderr


# --- parts ------------------------------------------------------------------------------------------------


def test_parts_are_cut_by_files_and_bytes_and_a_larger_file_gets_a_part_of_its_own(
    settings: Any, tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    settings.EXPORT_PART_FILES = 3
    settings.EXPORT_PART_BYTES = 100_000
    sizes = [10_000, 10_000, 10_000, 10_000, 250_000, 10_000, 60_000, 50_000]
    sent = [upload(owner, tenant, f"f{n}.bin", size) for n, size in enumerate(sizes)]
    client = client_for(owner)
    export_row = make_export(client, "tar")
    # 3 files (the file limit); 1 file (the next is over the byte limit); the large file alone; 70,000 B
    # (the next would make 120,000); the rest.
    expected = [[0, 1, 2], [3], [4], [5, 6], [7]]
    parts = list(export_row.parts.order_by("number"))
    assert [(p.files, p.bytes) for p in parts] == [
        (len(group), sum(sizes[i] for i in group)) for group in expected
    ]
    seen: list[str] = []
    for part, group in zip(parts, expected, strict=True):
        fetch(client, part_url(export_row, part.number), tmp_path / f"part{part.number}.tar")
        members = read_archive(tmp_path / f"part{part.number}.tar", "tar")
        lines = check_files(members, [sent[i] for i in group])
        seen += [line["blob_id"] for line in lines]
        header = manifest(members)[0]
        assert (header["part"], header["parts"], header["files_in_part"]) == (part.number, 5, len(group))
        assert ("audit-evidence.zip" in members) == (part.number == 1)
        assert "README.txt" in members
    assert sorted(seen) == sorted(str(s.blob.pk) for s in sent)  # every file in exactly one part

    # A part downloaded again is the same archive, byte for byte (part 2 carries no evidence, which grows).
    first = (tmp_path / "part2.tar").read_bytes()
    fetch(client, part_url(export_row, 2), tmp_path / "again.tar")
    assert (tmp_path / "again.tar").read_bytes() == first
    # Part 1 again: the same files (its evidence now holds more events).
    fetch(client, part_url(export_row, 1), tmp_path / "again1.tar")
    again = read_archive(tmp_path / "again1.tar", "tar")
    before = read_archive(tmp_path / "part1.tar", "tar")
    assert {k: v for k, v in again.items() if k.startswith("files/")} == {
        k: v for k, v in before.items() if k.startswith("files/")
    }
    assert fresh_part(export_row, 2).downloads == 2


def test_an_export_holds_the_files_of_its_moment_and_counts_those_deleted_since(
    tenant: Tenant, owner: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    kept, deleted = upload(owner, tenant, "kept.txt", 100), upload(owner, tenant, "deleted.txt", 200)
    client = client_for(owner)
    export_row = make_export(client, "zip")
    later = upload(owner, tenant, "later.txt", 300)
    with django_capture_on_commit_callbacks(execute=True):
        delete_blob(deleted.blob, actor=owner)
    response = fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    members = read_archive(tmp_path / "part1.zip", "zip")
    check_files(members, [kept])
    lines = manifest(members)
    assert str(later.blob.pk) not in json.dumps(lines) and "deleted.txt" not in json.dumps(lines)
    # The header says what the part was made with; the last line says what it holds and why not more.
    assert (lines[0]["files_in_part"], lines[0]["files_in_export"]) == (2, 2)
    assert lines[-1] == {"record": "end", "files": 1, "bytes": 100, "skipped": 0, "deleted_since_export": 1}
    assert response["X-Export-Files"] == "2"
    part = fresh_part(export_row)
    assert (part.status, part.files_sent, part.bytes_sent) == (PartStatus.COMPLETE, 1, 100)
    # A new export has the file uploaded since, not the deleted one.
    newer = make_export(client, "zip")
    fetch(client, part_url(newer, 1), tmp_path / "newer.zip")
    check_files(read_archive(tmp_path / "newer.zip", "zip"), [kept, later])


def test_an_empty_tenant_exports_one_part_with_its_manifest_and_evidence(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    client = client_for(owner)
    export_row = make_export(client, "tar")
    assert (export_row.files, export_row.bytes, export_row.parts.count()) == (0, 0, 1)
    fetch(client, part_url(export_row, 1), tmp_path / "part1.tar")
    members = read_archive(tmp_path / "part1.tar", "tar")
    assert set(members) == {"manifest.jsonl", "README.txt", "audit-evidence.zip"}
    assert [line["record"] for line in manifest(members)] == ["header", "end"]
    assert fresh_part(export_row).status == PartStatus.COMPLETE


# --- names ------------------------------------------------------------------------------------------------

HOSTILE = [
    "report.pdf",
    "report.pdf",
    "REPORT.pdf",
    "../../etc/passwd",
    "line\nbreak.txt",
    "/absolute/path.txt",
    "..",
    "C:\\Windows\\win.ini",
    ".hidden",
    "con.txt",
    "invoice\u202efdp.exe",
]


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_duplicate_and_hostile_names_get_safe_unique_paths_and_the_manifest_keeps_the_name(
    fmt: str, tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, f"upload-{n}.bin", 10 + n) for n in range(len(HOSTILE))]
    # The upload path already cleans names ("../../etc/passwd" is stored as "passwd"); rows written another
    # way (older versions, the admin, the database) may hold anything, so the export must not trust them.
    for s, name in zip(sent, HOSTILE, strict=True):
        Blob.objects.filter(pk=s.blob.pk).update(name=name)
        s.blob.name = name
    client = client_for(owner)
    export_row = make_export(client, fmt)
    fetch(client, part_url(export_row, 1), tmp_path / f"part1.{fmt}")
    lines = check_files(read_archive(tmp_path / f"part1.{fmt}", fmt), sent)
    assert [line["name"] for line in lines] == HOSTILE
    assert [line["path"] for line in lines] == [
        "files/report.pdf",
        "files/report (2).pdf",
        "files/REPORT (3).pdf",
        "files/passwd",
        "files/linebreak.txt",
        "files/path.txt",
        "files/unnamed",
        "files/win.ini",
        "files/hidden",
        "files/_con.txt",
        "files/invoicefdp.exe",
    ]
    # Extracted by the standard library's strictest extractor, everything lands under files/, as a file.
    out = tmp_path / "out"
    if fmt == "zip":
        with zipfile.ZipFile(tmp_path / "part1.zip") as archive:
            archive.extractall(out)  # noqa: S202 -- what is under test
    else:
        with tarfile.open(tmp_path / "part1.tar") as archive:
            archive.extractall(out, filter="data")  # refuses any path that escapes
    extracted = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert extracted == {line["path"] for line in lines} | {
        "manifest.jsonl",
        "README.txt",
        "audit-evidence.zip",
    }
    for line, s in zip(lines, sent, strict=True):
        assert (out / line["path"]).read_bytes() == s.data


# --- progress and audit ----------------------------------------------------------------------------------


def test_a_download_is_audited_once_and_its_progress_goes_ready_streaming_complete(
    tenant: Tenant, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "PROGRESS_EVERY_BYTES", 1)  # write progress at every piece
    monkeypatch.setattr(exports, "PROGRESS_EVERY_SECONDS", 0)
    sent = [upload(owner, tenant, f"f{n}.bin", 3 * MIB) for n in range(3)]
    client = client_for(owner)
    export_row = make_export(client, "zip")
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.bytes, part.files) == (PartStatus.READY, 0, 9 * MIB, 3)
    detail = client.get(reverse("offboarding:export_detail", args=[export_row.pk]))
    assert (
        "not downloaded yet" in detail.content.decode()
        and 'hx-trigger="every 2s"' not in detail.content.decode()
    )

    response: Any = client.get(part_url(export_row, 1))
    assert len(exported_events(tenant)) == 1  # recorded before the first byte
    body = iter(response.streaming_content)
    next(body)
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.finished_at, part.error) == (PartStatus.STREAMING, 1, None, "")
    assert part.started_at is not None
    while fresh_part(export_row).files_sent < 1:
        next(body)
    part = fresh_part(export_row)
    assert part.status == PartStatus.STREAMING and 3 * MIB < part.bytes_sent < 9 * MIB
    # The page shows the part downloading and polls; the htmx partial is the table alone.
    page = client.get(reverse("offboarding:export_detail", args=[export_row.pk])).content.decode()
    assert "1 of 3 files sent" in page and 'hx-trigger="every 2s"' in page
    partial = client.get(reverse("offboarding:export_detail", args=[export_row.pk]), HTTP_HX_REQUEST="true")
    fragment = partial.content.decode()
    assert fragment.lstrip().startswith('<div id="export-parts"') and "<html" not in fragment
    assert "1 of 3 files sent" in fragment and f"{part.progress_percent} %" in fragment
    for _ in body:
        pass

    part = fresh_part(export_row)
    assert (part.status, part.files_sent, part.bytes_sent) == (PartStatus.COMPLETE, 3, 9 * MIB)
    assert part.finished_at is not None and part.error == ""
    (event,) = exported_events(tenant)
    assert event.payload == {
        "exportId": str(export_row.pk),
        "format": "zip",
        "part": 1,
        "parts": 1,
        "files": 3,
        "bytes": sum(s.size for s in sent),
    }
    assert event.actor_email == owner.email
    done = client.get(reverse("offboarding:export_detail", args=[export_row.pk]), HTTP_HX_REQUEST="true")
    assert "downloaded " in done.content.decode() and "hx-trigger" not in done.content.decode()
    status = client.get(reverse("offboarding:export")).content.decode()
    assert reverse("offboarding:export_detail", args=[export_row.pk]) in status


@pytest.mark.django_db(transaction=True)
def test_an_abandoned_download_is_interrupted_and_completes_when_downloaded_again(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, f"f{n}.bin", 2 * MIB) for n in range(3)]
    client = client_for(owner)
    export_row = make_export(client, "tar")
    response: Any = client.get(part_url(export_row, 1))
    assert next(iter(response.streaming_content))
    abandon(response)
    part = fresh_part(export_row)
    assert part.status == PartStatus.INTERRUPTED and part.finished_at is not None
    assert "the connection closed" in part.error and part.files_sent < 3
    page = client.get(reverse("offboarding:export_detail", args=[export_row.pk])).content.decode()
    assert f"interrupted after {part.files_sent} of 3 files" in page and "the connection closed" in page
    api = Client().get(
        reverse("offboarding:api_export", args=[export_row.pk]), **bearer(make_token(owner, tenant))
    )
    assert (
        api.json()["parts"][0]["status"] == "interrupted"
        and "connection closed" in api.json()["parts"][0]["error"]
    )

    fetch(client, part_url(export_row, 1), tmp_path / "part1.tar")
    check_files(read_archive(tmp_path / "part1.tar", "tar"), sent)
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.error, part.files_sent) == (PartStatus.COMPLETE, 2, "", 3)
    assert [e.payload["part"] for e in exported_events(tenant)] == [1, 1]  # one event per download
    page = client.get(reverse("offboarding:export_detail", args=[export_row.pk])).content.decode()
    assert "(2 times)" in page and "interrupted" not in page


def test_a_download_whose_process_died_shows_as_interrupted_not_forever_downloading(
    tenant: Tenant, owner: Any
) -> None:
    """A worker killed mid-download leaves the row "streaming": after STALLED_AFTER without progress the page
    and the API say interrupted, and the page stops polling."""
    upload(owner, tenant, "f.bin", 2 * MIB)
    client = client_for(owner)
    export_row = make_export(client, "zip")
    response: Any = client.get(part_url(export_row, 1))
    assert next(iter(response.streaming_content))  # streaming now; the "process" dies without a word
    detail = reverse("offboarding:export_detail", args=[export_row.pk])
    assert "hx-trigger" in client.get(detail).content.decode()  # live: the page polls
    ExportPart.objects.filter(pk=fresh_part(export_row).pk).update(
        progress_at=timezone.now() - STALLED_AFTER - timedelta(seconds=1)
    )
    page = client.get(detail).content.decode()
    assert "interrupted after" in page and "stopped making progress" in page and "hx-trigger" not in page
    api = Client().get(
        reverse("offboarding:api_export", args=[export_row.pk]), **bearer(make_token(owner, tenant))
    )
    assert api.json()["parts"][0]["status"] == "interrupted"
    assert fresh_part(export_row).status == PartStatus.STREAMING  # the row is not rewritten by reading it
    abandon(response)  # close the open stream (and its database cursor) before the test ends


@pytest.mark.django_db(transaction=True)
def test_only_the_latest_download_of_a_part_writes_its_state(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, f"f{n}.bin", 2 * MIB) for n in range(3)]
    client = client_for(owner)
    export_row = make_export(client, "zip")
    stalled: Any = client.get(part_url(export_row, 1))
    assert next(iter(stalled.streaming_content))
    # The owner gives up waiting and downloads the part again; the stalled connection fails only later.
    fetch(client, part_url(export_row, 1), tmp_path / "again.zip")
    check_files(read_archive(tmp_path / "again.zip", "zip"), sent)
    abandon(stalled)
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.files_sent, part.error) == (PartStatus.COMPLETE, 2, 3, "")

    # An older download that finishes while a newer one streams does not mark the part complete either.
    older: Any = client.get(part_url(export_row, 1))
    older_body = iter(older.streaming_content)
    next(older_body)
    newer: Any = client.get(part_url(export_row, 1))
    assert next(iter(newer.streaming_content))
    for _ in older_body:
        pass
    part = fresh_part(export_row)
    assert (part.status, part.downloads) == (PartStatus.STREAMING, 4)
    abandon(newer)
    part = fresh_part(export_row)
    assert part.status == PartStatus.INTERRUPTED and "connection closed" in part.error
    assert len(exported_events(tenant)) == 4


# --- refusals before any byte ----------------------------------------------------------------------------

SEAL_CAUSE = "Your AWS KMS key denied Decrypt to Kodori's role."


def _unchanged(export_row: Export, tenant: Tenant) -> None:
    """Nothing was sent, recorded or changed by a refused download."""
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.started_at) == (PartStatus.READY, 0, None)
    assert exported_events(tenant) == []


def test_a_sealed_tenant_is_refused_with_the_seal_reason_before_any_byte(tenant: Tenant, owner: Any) -> None:
    upload(owner, tenant, "a.txt", 10)
    client = client_for(owner)
    export_row = make_export(client)
    seal_tenant(tenant, SEAL_CAUSE, trigger=Trigger.USE)

    page = client.get(part_url(export_row, 1))
    assert page.status_code == 503 and not page.streaming
    assert SEAL_CAUSE.replace("'", "&#x27;") in page.content.decode() and page["Retry-After"] == "60"
    api, auth = Client(), bearer(make_token(owner, tenant))
    answer = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 1]), **auth)
    assert answer.status_code == 503 and not answer.streaming
    assert (
        answer.json()["error"]["code"] == "tenant_sealed" and SEAL_CAUSE in answer.json()["error"]["message"]
    )
    _unchanged(export_row, tenant)
    # A new export is refused the same way (it could not be read anyway).
    created = api.post(reverse("offboarding:api_exports"), **auth)
    assert created.status_code == 503 and created.json()["error"]["code"] == "tenant_sealed"
    # The export page says so, and still lists the export.
    index = client.get(reverse("offboarding:export"))
    assert "is sealed:" in index.content.decode() and Export.objects.filter(tenant=tenant).count() == 1


@pytest.mark.usefixtures("kodori_app")
def test_a_disabled_or_revoked_key_that_a_part_needs_is_named_before_any_byte(
    settings: Any, tenant: Tenant, owner: Any, vault: AzureKeyVaultEmulator, tmp_path: Path
) -> None:
    settings.EXPORT_PART_FILES = 2
    enable_cloud_kms(tenant)
    azure = active_azure_key(tenant, vault, "export-old", owner)
    old = [upload(owner, tenant, "a.txt", 100), upload(owner, tenant, "b.txt", 200)]
    rotate_kek(tenant)  # the Azure key retires; its data keys stay under it (no re-wrap has run)
    new = upload(owner, tenant, "c.txt", 300)
    assert DataKey.objects.get(blob_id=old[0].blob.pk).tkv.kek_id == azure.pk
    key_services.disable_key(azure, actor=owner)
    tenant.refresh_from_db()
    assert not tenant.is_sealed  # the active key works: only part 1 needs the disabled one
    client, api, auth = client_for(owner), Client(), bearer(make_token(owner, tenant))
    export_row = make_export(client)
    assert export_row.parts.count() == 2
    label = TenantKey.objects.get(pk=azure.pk).label
    assert "…" in label  # "Azure Key Vault …<suffix>": this key and no other

    page = client.get(part_url(export_row, 1))
    assert page.status_code == 503 and not page.streaming
    assert label in page.content.decode() and "disabled" in page.content.decode()
    answer = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 1]), **auth)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "key_unavailable"
    assert label in answer.json()["error"]["message"] and answer["Retry-After"] == "60"
    _unchanged(export_row, tenant)
    # Part 2 needs only the active key.
    fetch(client, part_url(export_row, 2), tmp_path / "part2.zip")
    check_files(read_archive(tmp_path / "part2.zip", "zip"), [new])

    # Re-enabled in Kodori, but revoked in the customer's vault: refused, naming the key, still before a byte.
    key_services.re_enable_key(TenantKey.objects.get(pk=azure.pk), actor=owner)
    vault.disable_key("export-old")
    keyring.cache.clear()
    answer = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 1]), **auth)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "key_unavailable"
    assert label in answer.json()["error"]["message"]
    assert fresh_part(export_row).downloads == 0
    # Restored in the vault: part 1 downloads whole.
    vault.enable_key("export-old")
    fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    check_files(read_archive(tmp_path / "part1.zip", "zip"), old)
    assert fresh_part(export_row).status == PartStatus.COMPLETE


def test_exports_work_while_deletion_is_scheduled_and_stop_once_the_erasure_begins(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, "a.txt", 1000)]
    client, api, auth = client_for(owner), Client(), bearer(make_token(owner, tenant))
    before = make_export(client, "zip")
    deletion = schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=7)
    # The read-only window is the time to export: making and downloading an export both work.
    during = make_export(client, "tar")
    fetch(client, part_url(during, 1), tmp_path / "during.tar")
    check_files(read_archive(tmp_path / "during.tar", "tar"), sent)
    events = len(exported_events(tenant))

    DeletionRequest.objects.filter(pk=deletion.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    assert erasure.destroy_keys(DeletionRequest.objects.get(pk=deletion.pk))
    tenant.refresh_from_db()
    assert tenant.state == TenantState.ERASING

    page = client.get(part_url(before, 1))
    assert page.status_code == 410 and not page.streaming and "being erased" in page.content.decode()
    answer = api.get(reverse("offboarding:api_export_part", args=[before.pk, 1]), **auth)
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "tenant_erased"
    created = api.post(reverse("offboarding:api_exports") + "?format=zip", **auth)
    assert created.status_code == 410 and created.json()["error"]["code"] == "tenant_erased"
    made = client.post(reverse("offboarding:export"), {"format": "zip"})
    assert made.status_code == 410
    assert Export.objects.filter(tenant=tenant).count() == 2
    assert len(exported_events(tenant)) == events
    assert fresh_part(before).downloads == 0


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


# --- the API and who may use it ----------------------------------------------------------------------------


def test_the_api_makes_reports_and_streams_an_export(tenant: Tenant, owner: Any, tmp_path: Path) -> None:
    sent = [upload(owner, tenant, "a.txt", 1234), upload(owner, tenant, "empty.txt", 0)]
    api, auth = Client(), bearer(make_token(owner, tenant))
    created = api.post(reverse("offboarding:api_exports") + "?format=tar", **auth)
    assert created.status_code == 201
    body = created.json()
    export_row = Export.objects.get(pk=body["id"])
    part_path = reverse("offboarding:api_export_part", args=[body["id"], 1])
    assert body["url"] == reverse("offboarding:api_export", args=[body["id"]])
    assert (body["format"], body["files"], body["bytes"], body["complete"]) == ("tar", 2, 1234, False)
    assert body["parts"] == [
        {
            "number": 1,
            "files": 2,
            "bytes": 1234,
            "status": "ready",
            "files_sent": 0,
            "bytes_sent": 0,
            "downloads": 0,
            "error": None,
            "url": part_path,
        }
    ]
    assert api.get(body["url"], **auth).json() == body

    response: Any = api.get(part_path, **auth)
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    stamp = export_row.snapshot_at.strftime("%Y%m%d-%H%M%S")
    assert response["Content-Disposition"] == f'attachment; filename="kodori-export-acme-{stamp}-part1.tar"'
    assert (response["X-Export-Files"], response["X-Export-Bytes"]) == ("2", "1234")
    (tmp_path / "part1.tar").write_bytes(b"".join(response.streaming_content))
    check_files(read_archive(tmp_path / "part1.tar", "tar"), sent)

    after = api.get(body["url"], **auth).json()
    assert after["complete"] is True
    assert {k: after["parts"][0][k] for k in ("status", "files_sent", "bytes_sent", "downloads")} == {
        "status": "complete",
        "files_sent": 2,
        "bytes_sent": 1234,
        "downloads": 1,
    }
    listed = api.get(reverse("offboarding:api_exports"), **auth).json()["exports"]
    assert [e["id"] for e in listed] == [body["id"]]

    rar = api.post(reverse("offboarding:api_exports") + "?format=rar", **auth)
    assert rar.status_code == 400 and rar["Content-Type"] == "application/json"
    assert rar.json()["error"] == {"code": "bad_request", "message": "format must be zip or tar."}
    zipped = api.post(reverse("offboarding:api_exports"), **auth)  # zip unless told otherwise
    assert zipped.status_code == 201 and zipped.json()["format"] == "zip"
    assert Export.objects.filter(tenant=tenant).count() == 2


def test_only_the_tenants_owners_reach_its_exports(
    tenant: Tenant, owner: Any, member: Any, outsider: Any, other_tenant: Tenant
) -> None:
    upload(owner, tenant, "a.txt", 10)
    export_row = make_export(client_for(owner))
    api = Client()
    status_url = reverse("offboarding:api_export", args=[export_row.pk])
    part_api = reverse("offboarding:api_export_part", args=[export_row.pk, 1])
    for url, method in [(reverse("offboarding:api_exports"), "post"), (status_url, "get"), (part_api, "get")]:
        answer = getattr(api, method)(url, **bearer(make_token(member, tenant)))
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", url
        assert getattr(api, method)(url).status_code == 401
    outsider_auth = bearer(make_token(outsider, other_tenant))
    for url in [status_url, part_api, reverse("offboarding:api_export", args=["not-a-uuid"])]:
        answer = api.get(url, **outsider_auth)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", url
    owner_auth = bearer(make_token(owner, tenant))
    missing_part = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 2]), **owner_auth)
    assert missing_part.status_code == 404

    pages = [
        reverse("offboarding:export"),
        reverse("offboarding:export_detail", args=[export_row.pk]),
        part_url(export_row, 1),
    ]
    for url in pages:
        assert client_for(member).get(url).status_code == 403, url
    for url in pages[1:]:
        assert client_for(outsider).get(url).status_code == 404, url
    assert client_for(owner).get(part_url(export_row, 2)).status_code == 404
    _unchanged(export_row, tenant)
