"""Wycheproof's C2SP chunked-encryption vectors (Cobblestone-256) against the blob format.

All 35 vectors are applied as Wycheproof's ``doc/c2sp_chunked_encryption.md`` describes (summary in
``tests/vectors/README.md``), through the raw scheme (:mod:`encryption.format.cobblestone`) and through
Kodori's framing (the same ciphertext behind a v1 header), streaming and random access alike.
The vectors are read from ``tests/vectors`` (vendored; or ``$KODORI_VECTORS_DIR``); when absent the
tests fail: they ship with the repository.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from encryption.format import cobblestone, cobblestone_read, envelope
from encryption.format.errors import NotAuthentic
from tests.vectors import vectors_dir

VECTOR_FILE = "wycheproof/c2sp_chunked_encryption_aes_256_gcm_test.json"
CHUNK = cobblestone.CHUNK_SIZE
SEALED = cobblestone.SEALED_CHUNK_SIZE


def _vectors_dir() -> Path:
    return vectors_dir()


@pytest.fixture(scope="module")
def vectors() -> list[dict[str, Any]]:
    """Every test of the file, with ``ct`` decompressed and hex fields decoded."""
    path = _vectors_dir() / VECTOR_FILE
    if not path.is_file():
        # Vendored in the repository: a missing file is a broken checkout, never a reason to skip.
        pytest.fail(f"Wycheproof vectors not found at {path} (tests/vectors, or KODORI_VECTORS_DIR)")
    data = json.loads(path.read_text())
    assert data["algorithm"] == "Cobblestone-256"
    tests = []
    for group in data["testGroups"]:
        assert group["type"] == "ChunkedEncryption"
        assert group["aead"] == "AEAD_AES_256_GCM"
        assert group["sha"] == "SHA-512"
        for test in group["tests"]:
            test = dict(test)
            test["ct"] = zlib.decompress(bytes.fromhex(test["ct"]))
            test["key"] = bytes.fromhex(test["key"])
            test["ctx"] = bytes.fromhex(test["ctx"])
            test["flags"] = set(test["flags"])
            tests.append(test)
    assert len(tests) == data["numberOfTests"] == 35
    return tests


def _expected_prefix(test: dict[str, Any]) -> bytes:
    """The message (valid) or valid prefix (PartialPlaintext), decrypted independently of Kodori.

    Uses the vector's own ``aeadKey``/``baseNonce`` and plain pyca AESGCM, then checks the
    vector's length and SHA-512, so Kodori's output is compared with something it did not make.
    """
    aead = AESGCM(bytes.fromhex(test["aeadKey"]))
    base = int.from_bytes(bytes.fromhex(test["baseNonce"]), "big")
    body = test["ct"][cobblestone.HEADER_SIZE :]
    length = test["msgLength"]
    chunks = length // CHUNK + (1 if test["result"] == "valid" else 0)
    out = []
    for k in range(chunks):
        piece = body[k * SEALED : (k + 1) * SEALED]
        out.append(aead.decrypt((base ^ k).to_bytes(12, "big"), piece, b""))
    message = b"".join(out)
    assert len(message) == length
    assert hashlib.sha512(message).hexdigest() == test["msgSha512"]
    return message


def _kodori_blob(test: dict[str, Any]) -> bytes:
    return envelope.PREFIX + test["ct"]


def _check_stream(test: dict[str, Any], make_stream: Any) -> None:
    """Apply one vector to one streaming interface: result, released prefix, stickiness."""
    tc = test["tcId"]
    if "InvalidKeySize" in test["flags"]:
        with pytest.raises(ValueError):
            make_stream()
        return
    released = bytearray()
    stream = None
    try:
        stream = make_stream()
        for piece in stream:
            released += piece
    except NotAuthentic:
        assert test["result"] == "invalid", f"tc {tc}: valid vector rejected"
        if "PartialPlaintext" in test["flags"]:
            valid_prefix = _expected_prefix(test)
            assert len(released) <= len(valid_prefix), f"tc {tc}: released beyond the valid prefix"
            assert released == valid_prefix[: len(released)], f"tc {tc}: released bytes differ"
        else:
            assert not released, f"tc {tc}: released plaintext from an invalid vector"
        if stream is not None:
            for _ in range(3):  # a failed stream keeps failing instead of looking finished
                with pytest.raises(NotAuthentic):
                    next(stream)
        return
    assert test["result"] == "valid", f"tc {tc}: invalid vector accepted"
    assert len(released) == test["msgLength"], f"tc {tc}"
    assert hashlib.sha512(released).hexdigest() == test["msgSha512"], f"tc {tc}"


def test_the_vector_file_has_35_vectors_10_of_them_valid(vectors: list[dict[str, Any]]) -> None:
    results = Counter(test["result"] for test in vectors)
    assert results == {"valid": 10, "invalid": 25}
    flags = Counter(flag for test in vectors for flag in test["flags"])
    assert flags["PartialPlaintext"] == 9
    assert flags["ValidFinalChunk"] == 4
    assert flags["HeaderFailure"] == 10
    assert flags["InvalidKeySize"] == 2


def test_streaming_decryption_of_raw_messages_matches_every_vector(vectors: list[dict[str, Any]]) -> None:
    for test in vectors:
        _check_stream(
            test, lambda t=test: cobblestone_read.iter_decrypt(t["key"], t["ctx"], io.BytesIO(t["ct"]))
        )
    assert len(vectors) == 35


def test_streaming_decryption_of_kodori_blobs_matches_every_vector(vectors: list[dict[str, Any]]) -> None:
    for test in vectors:
        _check_stream(
            test, lambda t=test: envelope.iter_decrypt(t["key"], t["ctx"], io.BytesIO(_kodori_blob(t)))
        )
    assert len(vectors) == 35


def test_decrypt_stream_accepts_exactly_the_valid_vectors(vectors: list[dict[str, Any]]) -> None:
    accepted = rejected = 0
    for test in vectors:
        if "InvalidKeySize" in test["flags"]:
            blob = io.BytesIO(_kodori_blob(test))
            with pytest.raises(ValueError):
                envelope.decrypt_stream(test["key"], test["ctx"], blob, io.BytesIO())
            rejected += 1
            continue
        sink = io.BytesIO()
        try:
            size = envelope.decrypt_stream(test["key"], test["ctx"], io.BytesIO(_kodori_blob(test)), sink)
        except NotAuthentic:
            assert test["result"] == "invalid", f"tc {test['tcId']}"
            rejected += 1
            continue
        assert test["result"] == "valid", f"tc {test['tcId']}"
        assert size == test["msgLength"] == len(sink.getvalue())
        assert hashlib.sha512(sink.getvalue()).hexdigest() == test["msgSha512"]
        accepted += 1
    assert (accepted, rejected) == (10, 25)


def _check_random_access(test: dict[str, Any], make_reader: Any) -> str:
    """Apply one vector to a random-access reader; return how it ended, for the counts."""
    tc = test["tcId"]
    if "InvalidKeySize" in test["flags"]:
        with pytest.raises(ValueError):
            make_reader()
        return "refused key"
    try:
        reader = make_reader()
    except NotAuthentic:
        # Header failures and impossible lengths are refused before any chunk is read.
        assert test["result"] == "invalid", f"tc {tc}"
        return "refused header or length"
    # Whole-message read.
    try:
        message = b"".join(reader.iter_range(0, reader.plaintext_size))
    except NotAuthentic:
        assert test["result"] == "invalid", f"tc {tc}: valid vector rejected"
        with pytest.raises(NotAuthentic):  # and the reader stays failed
            reader.authenticate_length()
        whole = "rejected"
    else:
        assert test["result"] == "valid", f"tc {tc}: invalid vector read in full"
        assert len(message) == test["msgLength"]
        assert hashlib.sha512(message).hexdigest() == test["msgSha512"]
        whole = "read"
    # Length authentication on a fresh reader.
    reader = make_reader()
    if test["result"] == "valid" or "ValidFinalChunk" in test["flags"]:
        reader.authenticate_length()
    else:
        with pytest.raises(NotAuthentic):
            reader.authenticate_length()
    return whole


def test_random_access_to_raw_messages_matches_every_vector(vectors: list[dict[str, Any]]) -> None:
    outcomes = Counter(
        _check_random_access(
            test, lambda t=test: cobblestone_read.RandomAccessReader(t["key"], t["ctx"], io.BytesIO(t["ct"]))
        )
        for test in vectors
    )
    assert outcomes["read"] == 10
    assert sum(outcomes.values()) == 35
    assert outcomes["refused key"] == 2


def test_random_access_to_kodori_blobs_matches_every_vector(vectors: list[dict[str, Any]]) -> None:
    outcomes = Counter(
        _check_random_access(
            test,
            lambda t=test: envelope.RandomAccessReader(
                t["key"], t["ctx"], io.BytesIO(_kodori_blob(t)), len(_kodori_blob(t))
            ),
        )
        for test in vectors
    )
    assert outcomes["read"] == 10
    assert sum(outcomes.values()) == 35


def test_raw_mode_with_the_vector_aead_key_and_base_nonce(vectors: list[dict[str, Any]]) -> None:
    applied = 0
    for test in vectors:
        if "HeaderFailure" in test["flags"]:
            continue
        aead_key, base_nonce = bytes.fromhex(test["aeadKey"]), bytes.fromhex(test["baseNonce"])
        # The key schedule reproduces the vector's derived values and its commitment.
        derived = cobblestone.derive_message_keys(test["key"], test["ct"][:24], test["ctx"])
        assert derived == (aead_key, base_nonce, test["ct"][24:56]), f"tc {test['tcId']}"
        cipher = cobblestone.ChunkCipher(aead_key, base_nonce)
        _check_stream(
            test,
            lambda t=test, c=cipher: cobblestone_read.StreamDecryptor(c, io.BytesIO(t["ct"][56:])),
        )
        applied += 1
    assert applied == 25


def test_it_refuses_invalid_key_sizes_everywhere(vectors: list[dict[str, Any]]) -> None:
    bad = [test for test in vectors if "InvalidKeySize" in test["flags"]]
    assert sorted(len(test["key"]) for test in bad) == [31, 33]
    for test in bad:
        key, ctx, ct = test["key"], test["ctx"], test["ct"]
        with pytest.raises(ValueError):
            cobblestone.Encryptor(key, ctx)
        with pytest.raises(ValueError):
            envelope.Encryptor(key, ctx)
        with pytest.raises(ValueError):
            cobblestone_read.iter_decrypt(key, ctx, io.BytesIO(ct))
        with pytest.raises(ValueError):
            cobblestone_read.RandomAccessReader(key, ctx, io.BytesIO(ct))
        with pytest.raises(ValueError):
            envelope.decrypt(key, ctx, envelope.PREFIX + ct)


def test_reencrypting_with_the_vector_salt_reproduces_the_ciphertext(vectors: list[dict[str, Any]]) -> None:
    applied = 0
    for test in vectors:
        if test["result"] != "valid":
            continue
        message = _expected_prefix(test)
        key, ctx, ct, salt = test["key"], test["ctx"], test["ct"], test["ct"][:24]
        encryptor = cobblestone.Encryptor(key, ctx, salt=salt)
        assert encryptor.update(message) + encryptor.finalize() == ct, f"tc {test['tcId']}"
        sink = io.BytesIO()
        assert cobblestone.encrypt_stream(key, ctx, io.BytesIO(message), sink, salt=salt) == len(message)
        assert sink.getvalue() == ct
        # Kodori's framing is the same bytes behind its 5-byte header.
        assert envelope.encrypt(key, ctx, message, salt=salt) == envelope.PREFIX + ct
        applied += 1
    assert applied == 10
