"""The witness: every signed checkpoint is also written, once, outside the database.

Someone who can write to the database can cut the end off a tenant's chain and delete the checkpoints that
covered it: what is left is a shorter chain that verifies. The witness is what they cannot reach that way: a
write-once object per checkpoint in blob storage (``settings.AUDIT_WITNESS_STORAGE``, a ``STORAGES`` alias,
the blob storage by default; in production an S3 bucket with Object Lock, docs/audit.md). A verification
compares the database with it: a witnessed head beyond the chain's end, or a witnessed hash that the chain's
event no longer has, is a break.

Object names carry what a comparison needs, so a full comparison is one listing and no reads::

    audit-witness/<tenant id>/<10^19 - seq, 19 digits>-<seq>-<hash>.json

The first part makes names sort newest first, so the latest head is the first name of a listing (S3 lists in
key order: one request however many heads there are). The content is the checkpoint as the evidence bundle
writes it (the offline verifier's ``--extends`` accepts it as a saved head). Objects are read only when the
database does not corroborate them, and then count only with a valid signature by a trusted key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import transaction

from .encoding import canonical_json, format_time

if TYPE_CHECKING:
    from .models import Checkpoint
    from .signing import SignatureChecker

logger = logging.getLogger(__name__)

PREFIX = "audit-witness"
_INVERT = 10**19  # above any sequence number (PositiveBigIntegerField < 2**63)
_NAME = re.compile(r"^(\d{19})-([1-9]\d{0,18})-([0-9a-f]{64})\.json$")
_MAX_OBJECT = 16 * 1024


class WitnessUnavailable(Exception):
    """The witness storage could not be listed or read."""


@dataclass(frozen=True)
class Entry:
    """A witnessed head, as its object's name says."""

    seq: int
    hash: str
    name: str


def storage() -> Storage:
    return storages[getattr(settings, "AUDIT_WITNESS_STORAGE", "blobs")]


def _folder(tenant_id: int) -> str:
    return f"{PREFIX}/{tenant_id}"


def object_name(tenant_id: int, seq: int, hash_: str) -> str:
    return f"{_folder(tenant_id)}/{_INVERT - seq:019d}-{seq}-{hash_}.json"


def _entry(tenant_id: int, filename: str) -> Entry | None:
    match = _NAME.match(filename)
    if match is None or int(match[1]) != _INVERT - int(match[2]):
        return None  # not a witness object: someone else's file, proves nothing
    return Entry(int(match[2]), match[3], f"{_folder(tenant_id)}/{filename}")


def checkpoint_record(cp: Checkpoint) -> dict[str, Any]:
    """A checkpoint as a JSON record: a line of an evidence bundle, and a witness object's content."""
    return {
        "record": "checkpoint",
        "tenant": cp.tenant_id,
        "seq": cp.seq,
        "hash": cp.hash,
        "signed_at": format_time(cp.signed_at),
        "key_id": cp.key_id,
        "public_key": cp.public_key,
        "signature": cp.signature,
        "reason": cp.reason,
    }


def write(cp: Checkpoint) -> str:
    """Write ``cp``'s witness object unless it exists (write-once); returns its name."""
    store, name = storage(), object_name(cp.tenant_id, cp.seq, cp.hash)
    if not store.exists(name):
        saved = store.save(name, ContentFile(canonical_json(checkpoint_record(cp)) + b"\n"))
        if saved != name:  # written meanwhile by another signer; the storage kept both
            logger.warning("audit: witness object %s already existed; stored as %s", name, saved)
    return name


def _write_logged(cp: Checkpoint) -> None:
    try:
        write(cp)
    except Exception:  # never fail the signer after its commit: the next full verification writes it
        logger.exception(
            "audit: cannot write the witness of checkpoint #%s of tenant %s", cp.seq, cp.tenant_id
        )


def write_after_commit(cp: Checkpoint) -> None:
    """Witness ``cp`` once its row is committed (a rolled-back checkpoint is never witnessed)."""
    transaction.on_commit(partial(_write_logged, cp))


def backfill(checkpoints: Iterable[Checkpoint]) -> None:
    """Witness valid checkpoints the witness lacks (a write that failed, or checkpoints older than it)."""
    for cp in checkpoints:
        _write_logged(cp)


def entries(tenant_id: int) -> list[Entry]:
    """Every witnessed head of a tenant, highest first."""
    try:
        _, files = storage().listdir(_folder(tenant_id))
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise WitnessUnavailable(f"cannot list {_folder(tenant_id)}: {exc!r}") from exc
    found = [entry for name in files if (entry := _entry(tenant_id, name)) is not None]
    return sorted(found, key=lambda e: (-e.seq, e.hash))


def latest(tenant_id: int) -> Entry | None:
    """The highest witnessed head: one listing request on S3, a directory listing elsewhere."""
    store = storage()
    meta = getattr(getattr(store, "connection", None), "meta", None)  # django-storages' S3Storage
    if meta is not None and hasattr(store, "bucket_name") and hasattr(store, "_normalize_name"):
        prefix = store._normalize_name(_folder(tenant_id)) + "/"
        try:
            # Names sort newest first, so the first page's valid names lead: a few keys suffice.
            listed = meta.client.list_objects_v2(Bucket=store.bucket_name, Prefix=prefix, MaxKeys=20)
        except Exception as exc:
            raise WitnessUnavailable(f"cannot list {prefix}: {exc!r}") from exc
        keys = [item["Key"][len(prefix) :] for item in listed.get("Contents", [])]
        found = [entry for name in keys if (entry := _entry(tenant_id, name)) is not None]
        if found or not listed.get("IsTruncated"):
            return min(found, key=lambda e: (-e.seq, e.hash), default=None)
    listing = entries(tenant_id)
    return listing[0] if listing else None


def valid_record(entry: Entry, tenant_id: int, checker: SignatureChecker) -> dict[str, Any] | None:
    """The object's checkpoint record if it names exactly this head and is signed by a trusted key."""
    try:
        with storage().open(entry.name, "rb") as handle:
            record = json.loads(handle.read(_MAX_OBJECT))
    except (FileNotFoundError, ValueError):
        return None
    except Exception as exc:
        raise WitnessUnavailable(f"cannot read {entry.name}: {exc!r}") from exc
    if not isinstance(record, dict):
        return None
    fields = (record.get("tenant"), record.get("seq"), record.get("hash"))
    if fields != (tenant_id, entry.seq, entry.hash):
        return None
    signed = checker.valid(
        tenant_id, entry.seq, entry.hash, str(record.get("signed_at")), str(record.get("key_id")),
        str(record.get("signature")),
    )  # fmt: skip
    return record if signed else None
