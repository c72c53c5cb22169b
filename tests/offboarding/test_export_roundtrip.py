"""The tenant export (``offboarding.exports``) in process, through the real pages, on the filesystem and
on S3 (moto's server over real HTTP): what goes in comes back out.

Files of 0 B, 1 B, 16383, 16384, 16385 B and 5 MiB (and, once, 100 MiB uploaded as a stream) come back byte
for byte from zip and tar parts; the manifest names each one with the SHA-256 of its real bytes; README.txt
is there; part 1 carries the audit evidence, which verifies offline and holds the ``tenant.exported`` event
of the very download that carries it; README.txt's own instructions check an extracted part (and fail on a
changed byte).

Over a real gunicorn (100 MiB, an abandoned socket, constant memory at 1 GiB): ``test_export_live.py``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import signing, verify_bundle
from audit.models import AuditEvent, EventType
from blobs.models import Blob
from encryption.format import envelope
from offboarding.models import PartStatus
from tenants.models import Tenant
from tests.blobs.support import S3Store, Store
from tests.conftest import client_for
from tests.offboarding import export_support
from tests.offboarding.export_support import (
    KIB,
    MIB,
    check_files,
    exported_events,
    fetch,
    fresh_part,
    make_export,
    manifest,
    part_url,
    read_archive,
    upload,
    utc_text,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = export_support.private_blob_root


SIZES = [0, 1, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 5 * MIB]


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
