"""How an export is cut into parts, and what each part holds and calls its files.

* Parts: cut by ``EXPORT_PART_FILES`` and ``EXPORT_PART_BYTES`` (a larger file alone), each file in exactly
  one part, a part downloaded twice is the same archive, later uploads are not in it, files deleted since
  are left out and counted in the manifest's last line; an empty tenant exports one part.
* Names: duplicates and hostile names become safe, unique paths under ``files/``; the manifest keeps the name.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from blobs.models import Blob
from blobs.services import delete_blob
from offboarding.models import PartStatus
from tenants.models import Tenant
from tests.conftest import client_for
from tests.offboarding import export_support
from tests.offboarding.export_support import (
    check_files,
    fetch,
    fresh_part,
    make_export,
    manifest,
    part_url,
    read_archive,
    upload,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = export_support.private_blob_root


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
