"""Helpers of the tenant export tests (``test_export_*.py``): uploading files through the real upload
service, making an export and downloading its parts as an owner does, and reading the archives back with
the standard library's readers."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent, EventType
from blobs.models import Blob
from blobs.uploads import Upload
from offboarding.models import Export, ExportPart, PartStatus
from tenants.models import Tenant
from tests.blobs.support import random_stream

KIB = 1024
MIB = 1024 * KIB
KEEP = 8 * MIB  # files up to this size are kept in memory to compare bytes; larger ones by SHA-256 only


@pytest.fixture(autouse=True)
def private_blob_root(blob_root: Path) -> None:
    """Every test's objects in its own directory (``store`` moves them to S3 for the S3 cases): autouse in
    each test module that binds it (``_private_blob_root = export_support.private_blob_root``)."""


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


def _unchanged(export_row: Export, tenant: Tenant) -> None:
    """Nothing was sent, recorded or changed by a refused download."""
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.started_at) == (PartStatus.READY, 0, None)
    assert exported_events(tenant) == []
