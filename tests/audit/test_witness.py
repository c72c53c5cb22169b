"""The witness: each signed checkpoint also written, once, outside the database, and compared with it.

Locally on disk through Django's storage API, and on S3 (moto's server over real HTTP) in a bucket with Object
Lock, the production option: there even the bucket's owner cannot delete a witnessed head before its retention
ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from audit import chain, services, witness
from audit.models import ChainBreak, Checkpoint
from tenants.models import Tenant
from tests import s3

from .conftest import cut_tail, fill, raw, witnessed

pytestmark = pytest.mark.django_db


def test_every_signed_checkpoint_is_witnessed_once(tenant: Tenant, sign: Any, witness_root: Path) -> None:
    fill(tenant, 3)
    cp = sign(tenant)
    assert cp is not None
    fill(tenant, 2)
    sign(tenant)
    assert witnessed(witness_root, tenant) == [5, 3]
    [path] = (witness_root / "audit-witness" / str(tenant.pk)).glob(f"*-3-{cp.hash}.json")
    record = json.loads(path.read_text())
    assert record == {
        "record": "checkpoint", "tenant": tenant.pk, "seq": 3, "hash": cp.hash,
        "signed_at": chain.format_time(cp.signed_at), "key_id": cp.key_id, "public_key": cp.public_key,
        "signature": cp.signature, "reason": "scheduled",
    }  # fmt: skip
    # Write-once: writing it again leaves the object as it was.
    before = path.stat().st_mtime_ns
    assert witness.write(cp) == f"audit-witness/{tenant.pk}/{path.name}"
    assert path.stat().st_mtime_ns == before and len(witnessed(witness_root, tenant)) == 2


def test_names_sort_newest_first(tenant: Tenant) -> None:
    names = [witness.object_name(tenant.pk, seq, "a" * 64) for seq in (1, 9, 10, 123456)]
    assert sorted(names) == names[::-1]
    assert witness.latest(tenant.pk) is None and witness.entries(tenant.pk) == []


def test_a_rolled_back_checkpoint_is_not_witnessed(tenant: Tenant, witness_root: Path) -> None:
    fill(tenant, 2)
    services.sign_checkpoint(tenant)  # the test's transaction never commits: nothing is written
    assert witnessed(witness_root, tenant) == []


def test_the_default_witness_is_the_blob_storage(
    tenant: Tenant, sign: Any, settings: Any, tmp_path: Path
) -> None:
    settings.AUDIT_WITNESS_STORAGE = "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "blobs.storage.BlobFileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "b")},
        },
    }
    fill(tenant, 2)
    sign(tenant)
    assert witnessed(tmp_path / "b", tenant) == [2]


def test_truncation_with_checkpoints_and_cache_deleted_is_caught_by_the_witness(
    tenant: Tenant, sign: Any
) -> None:
    fill(tenant, 8)
    sign(tenant)
    cut_tail(tenant, 5, checkpoints=True)
    # What the database alone says: a shorter chain that verifies. The witness says otherwise.
    status = chain.verify(tenant, full=True, witness_mode=chain.WITNESS_NONE)
    assert status.ok
    status = chain.verify(tenant, full=True)
    assert status.broken is not None and (status.broken.seq, status.broken.kind) == (6, "truncated")
    assert "events #6..#8 are missing: the witness holds a checkpoint of #8 signed" in status.broken.reason


def test_a_page_view_without_a_cache_checks_the_latest_witnessed_head(
    tenant: Tenant, owner: Any, as_user: Any, sign: Any
) -> None:
    fill(tenant, 8)
    sign(tenant)
    cut_tail(tenant, 5, checkpoints=True)
    assert b"chain broken at #6</span>" in as_user(owner).get("/audit").content


def test_the_signer_refuses_a_chain_the_witness_contradicts(
    tenant: Tenant, sign: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tenant, 8)
    sign(tenant)
    cut_tail(tenant, 5, checkpoints=True)
    fill(tenant, 1)  # the chain moves on from #5: a new #6
    result = services.sign_head(tenant)
    assert result.checkpoint is None and "the witness holds a checkpoint of #8" in result.refused
    assert "not signing tenant acme at #6" in caplog.text
    assert not Checkpoint.objects.for_tenant(tenant).exists()


def test_a_rewritten_chain_with_checkpoints_deleted_is_caught_at_the_witnessed_head(
    tenant: Tenant, sign: Any
) -> None:
    fill(tenant, 4)
    sign(tenant)
    raw("DELETE FROM audit_checkpoint WHERE tenant_id = %s", [tenant.pk])
    raw(
        "UPDATE audit_auditevent SET hash = md5('a') || md5('b') WHERE tenant_id = %s AND seq = 4",
        [tenant.pk],
    )
    status = chain.verify(tenant, full=True)
    kinds = {(b.first_bad_seq, b.kind) for b in status.breaks}
    assert (4, "edited") in kinds and (4, "checkpoint-missing") in kinds


def test_a_forged_witness_object_is_itself_a_break(tenant: Tenant, sign: Any, witness_root: Path) -> None:
    fill(tenant, 3)
    sign(tenant)
    folder = witness_root / "audit-witness" / str(tenant.pk)
    forged = folder / Path(witness.object_name(tenant.pk, 9, "c" * 64)).name
    forged.write_text(json.dumps({"tenant": tenant.pk, "seq": 9, "hash": "c" * 64, "signature": "AAAA"}))
    (folder / "notes.txt").write_text("not a witness object: ignored")
    status = chain.verify(tenant, full=True)
    assert status.broken is not None and (status.broken.seq, status.broken.kind) == (9, "witness-invalid")


def test_deleted_checkpoints_are_reported_even_when_the_events_are_whole(tenant: Tenant, sign: Any) -> None:
    fill(tenant, 3)
    sign(tenant)
    fill(tenant, 3)
    sign(tenant)
    raw("DELETE FROM audit_checkpoint WHERE tenant_id = %s", [tenant.pk])
    status = chain.verify(tenant, full=True)
    assert status.broken is not None and (status.broken.seq, status.broken.kind) == (3, "checkpoint-missing")
    assert status.breaks[0].last_bad_seq == 6


def test_a_full_verification_witnesses_checkpoints_the_witness_lacks(
    tenant: Tenant, witness_root: Path
) -> None:
    fill(tenant, 2)
    services.sign_checkpoint(tenant)  # never committed in this test: not witnessed
    assert witnessed(witness_root, tenant) == []
    assert chain.verify(tenant, full=True).ok
    assert witnessed(witness_root, tenant) == [2]


def test_an_unreadable_witness_is_said_and_refuses_signing(
    tenant: Tenant, sign: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(tenant, 2)
    sign(tenant)
    fill(tenant, 1)

    def down(*args: Any) -> Any:
        raise ConnectionError("storage down")

    monkeypatch.setattr(witness.storage().__class__, "listdir", down)
    status = chain.verify(tenant, full=True)
    assert status.ok and "storage down" in status.witness_error
    result = services.sign_head(tenant)
    assert result.checkpoint is None and "the witness cannot be read" in result.refused
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("verify_audit_chain", stdout=out)
    assert exited.value.code == 3 and "the witness cannot be read" in out.getvalue()


# --- S3 with Object Lock (the production option), on moto's server ------------------------------------------

BUCKET = "kodori-test-witness"


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 for this module alone: the locked bucket goes away with it (compliance mode has no undo)."""
    with s3.moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture
def locked_bucket(moto_server: str, settings: Any) -> Any:
    client = s3.s3_client(moto_server)
    client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    options = {**s3.storage_options(moto_server, BUCKET, location="kodori"), "file_overwrite": False}
    settings.STORAGES = {
        **settings.STORAGES,
        "audit-witness-s3": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
    }
    settings.AUDIT_WITNESS_STORAGE = "audit-witness-s3"
    return client


def test_the_witness_on_s3_with_object_lock(locked_bucket: Any, tenant: Tenant, sign: Any) -> None:
    fill(tenant, 3)
    sign(tenant)
    fill(tenant, 4)
    sign(tenant)
    keys = [o["Key"] for o in locked_bucket.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 2 and all(k.startswith(f"kodori/audit-witness/{tenant.pk}/") for k in keys)
    latest = witness.latest(tenant.pk)
    assert latest is not None and latest.seq == 7
    # Object Lock: the version cannot be deleted before its retention ends, not even by the bucket's owner.
    versions = locked_bucket.list_object_versions(Bucket=BUCKET)["Versions"]
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        locked_bucket.delete_object(Bucket=BUCKET, Key=versions[0]["Key"], VersionId=versions[0]["VersionId"])
    head = locked_bucket.head_object(Bucket=BUCKET, Key=keys[0])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(hours=23)
    # A truncation with every checkpoint deleted is caught from S3.
    cut_tail(tenant, 5, checkpoints=True)
    status = chain.verify(tenant, full=True)
    found = {(b.first_bad_seq, b.kind, b.last_bad_seq) for b in status.breaks}
    assert found == {(3, "checkpoint-missing", 7), (6, "truncated", 7)}
    assert ChainBreak.objects.for_tenant(tenant).filter(kind="truncated").exists()
    # (moto's server, and the locked bucket with it, goes away with this module: compliance mode has no undo.)


@pytest.mark.django_db(transaction=True)
def test_the_periodic_signer_witnesses_after_its_commit(tenant: Tenant, witness_root: Path) -> None:
    """Really committed (no test transaction around it): the witness is written once the checkpoint is."""
    from audit import tasks

    fill(tenant, 4)
    assert tasks.sign_checkpoints() == 1
    assert witnessed(witness_root, tenant) == [4]
    cut_tail(tenant, 2, checkpoints=True)
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("verify_audit_chain", stdout=out)
    assert exited.value.code == 1 and "acme: chain broken at #3: events #3..#4 are missing" in out.getvalue()
