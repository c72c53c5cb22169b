"""Exports: the filtered view as CSV, and the evidence bundle that an auditor verifies offline."""

from __future__ import annotations

import ast
import csv
import io
import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from audit import payloads, services, signing, verify_bundle
from audit.models import AuditEvent, EventType
from tenants.models import Tenant

from .conftest import fill, raw

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


def download(client: Any, name: str, query: str = "") -> bytes:
    response = client.get(reverse(name) + (f"?{query}" if query else ""))
    assert response.status_code == 200, response
    return b"".join(response.streaming_content)


def offline(bundle: Path, *args: str, without_cryptography: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the verifier shipped inside the bundle, isolated from Kodori (``-I``: no cwd, no PYTHONPATH)."""
    script = bundle.parent / "verify_audit_bundle.py"
    with zipfile.ZipFile(bundle) as archive:
        script.write_bytes(archive.read("verify_audit_bundle.py"))
    argv = [str(script), str(bundle), *args]
    if without_cryptography:
        code = (
            "import runpy, sys; sys.modules['cryptography'] = None; "
            f"sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        command = [sys.executable, "-I", "-c", code]
    else:
        command = [sys.executable, "-I", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=bundle.parent)


@pytest.fixture
def exported(tmp_path: Path, tenant: Tenant, owner: Any, as_user: Any) -> Path:
    fill(tenant, 30, actor=owner)
    services.sign_checkpoint(tenant)
    fill(tenant, 5, actor=owner)
    path = tmp_path / "bundle.zip"
    path.write_bytes(download(as_user(owner), "audit:export_bundle"))
    return path


def rewrite(bundle: Path, change: Any) -> Path:
    """A copy of ``bundle`` whose bundle.jsonl lines went through ``change(lines)``."""
    with zipfile.ZipFile(bundle) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    lines = files["bundle.jsonl"].decode().splitlines()
    files["bundle.jsonl"] = ("\n".join(change(lines)) + "\n").encode()
    tampered = bundle.with_name("tampered.zip")
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return tampered


def test_the_bundle_holds_events_checkpoints_key_readme_and_verifier(exported: Path) -> None:
    with zipfile.ZipFile(exported) as archive:
        assert sorted(archive.namelist()) == [
            "README.txt", "bundle.jsonl", "public-key.txt", "verify_audit_bundle.py",
        ]  # fmt: skip
        lines = [json.loads(line) for line in archive.read("bundle.jsonl").splitlines()]
        readme = archive.read("README.txt").decode()
        assert archive.read("public-key.txt").decode().strip() == signing.public_key_b64()
    header, *records = lines
    assert header["format"] == "kodori-audit-bundle" and (header["first_seq"], header["last_seq"]) == (1, 35)
    assert [r["seq"] for r in records if r["record"] == "event"] == list(range(1, 36))
    assert [(r["seq"], r["reason"]) for r in records if r["record"] == "checkpoint"] == [
        (30, "scheduled"), (35, "export"),
    ]  # fmt: skip
    assert "python3 verify_audit_bundle.py" in readme and signing.public_key_b64() not in readme


def test_the_offline_verifier_passes_an_exported_bundle(exported: Path) -> None:
    result = offline(exported, "--public-key", signing.public_key_b64(), "--require-signatures")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hash chain: OK, 35 events #1..#35 anchored at genesis" in result.stdout
    assert "2 checkpoint signature(s) valid (Ed25519)" in result.stdout
    assert result.stdout.rstrip().endswith("RESULT: PASS")


def test_the_offline_verifier_fails_a_tampered_bundle(exported: Path) -> None:
    def edit_event_12(lines: list[str]) -> list[str]:
        edited = [
            line.replace("owner@acme.test", "mallory@acme.test") if '"seq":12,' in line else line
            for line in lines
        ]
        assert edited != lines
        return edited

    result = offline(rewrite(exported, edit_event_12), "--public-key", signing.public_key_b64())
    assert result.returncode == 1
    assert "FAIL: chain broken at #12: hash of #12 does not match its content" in result.stdout
    assert result.stdout.rstrip().endswith("RESULT: FAIL")


def test_the_offline_verifier_fails_a_bundle_signed_by_another_key(exported: Path) -> None:
    _, other_public = signing.generate_private_key()
    result = offline(exported, "--public-key", other_public)
    assert result.returncode == 1 and "which is not trusted" in result.stdout


def test_without_cryptography_it_checks_the_chain_and_says_so(exported: Path) -> None:
    result = offline(exported, without_cryptography=True)
    assert result.returncode == 0, result.stderr
    assert "signatures NOT checked: the `cryptography` package is not installed" in result.stdout
    strict = offline(exported, "--require-signatures", without_cryptography=True)
    assert strict.returncode == 1


def test_an_unreadable_bundle_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_text("not a bundle")
    result = subprocess.run(
        [sys.executable, "-I", str(REPO / "audit" / "verify_bundle.py"), str(junk)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "ERROR" in result.stderr


def test_the_module_form_works(exported: Path) -> None:
    key = signing.public_key_b64()
    as_module = subprocess.run(
        [sys.executable, "-m", "audit.verify_bundle", str(exported), "--public-key", key],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert as_module.returncode == 0, as_module.stdout


def test_the_verifier_imports_only_the_standard_library() -> None:
    tree = ast.parse((REPO / "audit" / "verify_bundle.py").read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - sys.stdlib_module_names - {"__future__"} == {"cryptography"}  # optional, guarded


def test_a_filtered_bundle_is_the_contiguous_range_the_filters_span(
    tmp_path: Path, tenant: Tenant, owner: Any, as_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for year in (2024, 2025, 2026):
        monkeypatch.setattr("django.utils.timezone.now", lambda y=year: datetime(y, 5, 1, tzinfo=UTC))
        fill(tenant, 4, actor=owner)
    monkeypatch.undo()
    path = tmp_path / "2025.zip"
    path.write_bytes(download(as_user(owner), "audit:export_bundle", "year=2025"))
    with zipfile.ZipFile(path) as archive:
        header = json.loads(archive.read("bundle.jsonl").splitlines()[0])
    assert (header["first_seq"], header["last_seq"], header["filters"]) == (5, 8, "year=2025")
    result = offline(path, "--public-key", signing.public_key_b64())
    assert result.returncode == 0, result.stdout
    assert "starts at #5" in result.stdout


def test_a_bundle_of_a_broken_chain_fails_offline(
    tmp_path: Path, tenant: Tenant, owner: Any, as_user: Any
) -> None:
    fill(tenant, 6)
    raw("UPDATE audit_auditevent SET actor_name = 'x' WHERE tenant_id = %s AND seq = 3", [tenant.pk])
    path = tmp_path / "broken.zip"
    path.write_bytes(download(as_user(owner), "audit:export_bundle"))
    result = offline(path, "--public-key", signing.public_key_b64())
    assert result.returncode == 1 and "chain broken at #3" in result.stdout


def test_an_export_is_itself_audited(tenant: Tenant, owner: Any, as_user: Any) -> None:
    fill(tenant, 2)
    download(as_user(owner), "audit:export_bundle", "types=tenant-kms.*")
    download(as_user(owner), "audit:export_csv")
    exports = AuditEvent.objects.for_tenant(tenant).filter(type=EventType.AUDIT_EXPORTED).order_by("seq")
    assert [(e.payload["format"], e.payload["firstSeq"], e.payload["lastSeq"]) for e in exports] == [
        ("bundle", 1, 1), ("csv", 1, 3),
    ]  # fmt: skip
    assert exports[0].payload["filters"] == "types=tenant-kms.%2A"
    assert exports[0].actor_email == "owner@acme.test" and exports[0].ip == "127.0.0.1"


def test_exporting_nothing_says_so(tenant: Tenant, owner: Any, as_user: Any) -> None:
    r = as_user(owner).get(reverse("audit:export_bundle") + "?year=1999", follow=True)
    assert b"No events match these filters" in r.content


def test_the_csv_is_the_filtered_view(tenant: Tenant, owner: Any, as_user: Any) -> None:
    fill(tenant, 8, actor=owner)
    body = download(as_user(owner), "audit:export_csv", "types=tenant-kms.*").decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [(r["seq"], r["type"]) for r in rows] == [
        ("1", "tenant-kms.rotated"), ("4", "tenant-kms.disabled"), ("5", "tenant-kms.rotated"),
        ("8", "tenant-kms.disabled"),
    ]  # fmt: skip
    assert rows[0]["summary"] == "Rotated aws-kms …a1b2c3d4e5f6 → gcp-kms …9f8e7d6c5b4a"
    assert json.loads(rows[0]["payload"])["toKeyIdSuffix"] == "9f8e7d6c5b4a"
    assert rows[0]["actor_email"] == "owner@acme.test" and len(rows[0]["hash"]) == 64


def test_the_csv_defuses_spreadsheet_formulas(tenant: Tenant, owner: Any, as_user: Any) -> None:
    owner.first_name = '=HYPERLINK("http://evil.test")'
    owner.save()
    services.record(tenant, EventType.API_TOKEN_CREATED, actor=owner, payload=payloads.api_token_created(
        token_id=1, name="=1+1"))  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(download(as_user(owner), "audit:export_csv").decode())))
    assert rows[0]["actor_name"].startswith("'=") and rows[0]["summary"] == "Created API token “=1+1”"


def test_the_bundle_reader_accepts_the_bare_jsonl(exported: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(exported) as archive:
        (tmp_path / "bundle.jsonl").write_bytes(archive.read("bundle.jsonl"))
    bundle = verify_bundle.read_bundle(tmp_path / "bundle.jsonl")
    assert verify_bundle.verify(bundle, [signing.public_key_b64()]).failure is None
