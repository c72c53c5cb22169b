"""Committed v1 blobs still decrypt: the format cannot drift under blobs already stored.

The files in ``golden/`` were written once by ``golden/make_golden.py``; this test only reads
them. It decrypts each through every interface and checks size and SHA-256 against the manifest,
and checks that today's encryptor, given the recorded salt, writes the very same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from encryption.format import envelope
from encryption.format.errors import NotAuthentic

GOLDEN = Path(__file__).resolve().parent / "golden"


def _manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((GOLDEN / "manifest.json").read_text())
    return entries


def _ids(entry: dict[str, Any]) -> str:
    return str(entry["file"])


def test_the_manifest_lists_the_five_golden_blobs() -> None:
    entries = _manifest()
    assert [e["plaintext_size"] for e in entries] == [0, 1, 16384, 16385, 102523]
    assert all((GOLDEN / e["file"]).is_file() for e in entries)


@pytest.mark.parametrize("entry", _manifest(), ids=_ids)
def test_a_golden_blob_decrypts_to_its_recorded_plaintext(entry: dict[str, Any]) -> None:
    blob = (GOLDEN / entry["file"]).read_bytes()
    assert len(blob) == entry["ciphertext_size"]
    assert hashlib.sha256(blob).hexdigest() == entry["ciphertext_sha256"]
    assert blob[:5] == b"KDRB" + bytes([entry["format_version"]])
    dek = bytes.fromhex(entry["dek"])
    context = envelope.blob_context(entry["tenant_id"], uuid.UUID(entry["blob_id"]))
    assert envelope.plaintext_size(len(blob)) == entry["plaintext_size"]

    streamed = b"".join(envelope.iter_decrypt(dek, context, io.BytesIO(blob)))
    sink = io.BytesIO()
    assert envelope.decrypt_stream(dek, context, io.BytesIO(blob), sink) == entry["plaintext_size"]
    reader = envelope.RandomAccessReader(dek, context, io.BytesIO(blob), len(blob))
    reader.authenticate_length()
    ranged = reader.read_range(0, reader.plaintext_size)
    for plaintext in (streamed, sink.getvalue(), ranged):
        assert len(plaintext) == entry["plaintext_size"]
        assert hashlib.sha256(plaintext).hexdigest() == entry["plaintext_sha256"]

    # Today's encoder, given the recorded salt, writes exactly the committed bytes.
    assert envelope.encrypt(dek, context, streamed, salt=bytes.fromhex(entry["salt"])) == blob


@pytest.mark.parametrize("entry", _manifest(), ids=_ids)
def test_a_golden_blob_refuses_another_tenant(entry: dict[str, Any]) -> None:
    blob = (GOLDEN / entry["file"]).read_bytes()
    other = envelope.blob_context(entry["tenant_id"] + 1, uuid.UUID(entry["blob_id"]))
    with pytest.raises(NotAuthentic):
        envelope.decrypt(bytes.fromhex(entry["dek"]), other, blob)
