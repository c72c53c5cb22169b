"""Blob format v1: round trips, layout, context binding, key commitment, errors, limits.

Streaming memory, forked salts, read counting and property tests are in
``test_envelope_streaming.py``; tampering in ``test_envelope_mutations.py``.
"""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pytest

from encryption.format import cobblestone, cobblestone_read, envelope
from encryption.format.errors import EnvelopeError, MalformedHeader, NotAuthentic, UnknownFormatVersion

DEK = bytes(range(32))
TENANT = 7
BLOB = uuid.UUID("00000000-0000-4000-8000-00000000002a")
CONTEXT = envelope.blob_context(TENANT, BLOB)
CHUNK = cobblestone.CHUNK_SIZE
SEALED = cobblestone.SEALED_CHUNK_SIZE
SIZES = [0, 1, 15, 16, 16383, 16384, 16385, 32767, 32768, 32769, 100_000]


def _all_ways(blob: bytes, dek: bytes = DEK, context: bytes = CONTEXT) -> list[bytes]:
    """Decrypt ``blob`` through every public decryption interface."""
    sink = io.BytesIO()
    envelope.decrypt_stream(dek, context, io.BytesIO(blob), sink)
    reader = envelope.RandomAccessReader(dek, context, io.BytesIO(blob))
    return [
        envelope.decrypt(dek, context, blob),
        b"".join(envelope.iter_decrypt(dek, context, io.BytesIO(blob))),
        sink.getvalue(),
        b"".join(reader.iter_range(0, reader.plaintext_size)),
    ]


@pytest.mark.parametrize("size", SIZES)
def test_it_round_trips_through_every_interface(size: int) -> None:
    plaintext = os.urandom(size)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    assert len(blob) == envelope.ciphertext_size(size)
    assert envelope.plaintext_size(len(blob)) == size
    assert _all_ways(blob) == [plaintext] * 4
    # encrypt_stream and a piecewise Encryptor produce the same bytes for the same salt.
    salt = blob[5:29]
    sink = io.BytesIO()
    assert envelope.encrypt_stream(DEK, CONTEXT, io.BytesIO(plaintext), sink, salt=salt) == size
    encryptor = envelope.Encryptor(DEK, CONTEXT, salt=salt)
    pieces = [encryptor.header()]
    for start in range(0, size, 7001):
        pieces.append(encryptor.update(plaintext[start : start + 7001]))
    pieces.append(encryptor.finalize())
    assert sink.getvalue() == b"".join(pieces) == blob
    assert (encryptor.plaintext_size, encryptor.ciphertext_size) == (size, len(blob))


@pytest.mark.parametrize("size", [0, 16383, 16384, 32768, 40000])
def test_it_lays_out_bytes_as_documented(size: int) -> None:
    plaintext = os.urandom(size)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    assert blob[:4] == b"KDRB"
    assert blob[4] == 1
    salt, commitment = blob[5:29], blob[29:61]
    aead_key, base_nonce, expected = cobblestone.derive_message_keys(DEK, salt, CONTEXT)
    assert commitment == expected
    cipher = cobblestone.ChunkCipher(aead_key, base_nonce)
    full = size // CHUNK
    for k in range(full + 1):
        piece = blob[61 + k * SEALED : 61 + (k + 1) * SEALED]
        out = bytearray(len(piece) - 16)
        assert cipher.open_one(k, memoryview(piece), memoryview(out))
        assert bytes(out) == plaintext[k * CHUNK : (k + 1) * CHUNK]
    # The final chunk is always shorter than a full one, even when it is empty.
    assert len(blob) - (61 + full * SEALED) < SEALED


def test_a_forged_chunk_leaves_no_plaintext_behind_in_the_output_buffer() -> None:
    # AES-GCM's decrypt_into writes plaintext before it checks the tag; the chunk cipher must
    # wipe it, or a caller reusing the buffer could see unauthenticated bytes.
    plaintext = os.urandom(3 * CHUNK)
    blob = bytearray(envelope.encrypt(DEK, CONTEXT, plaintext))
    blob[61 + SEALED + 5] ^= 1  # chunk 1
    aead_key, base_nonce, _ = cobblestone.derive_message_keys(DEK, blob[5:29], CONTEXT)
    cipher = cobblestone.ChunkCipher(aead_key, base_nonce)
    out = bytearray(os.urandom(3 * CHUNK))
    assert cipher.open_full(0, memoryview(blob)[61:], 3, memoryview(out)) == 1
    assert out[:CHUNK] == plaintext[:CHUNK]
    assert out[CHUNK : 2 * CHUNK] == bytes(CHUNK)
    one = bytearray(b"\xff" * CHUNK)
    assert not cipher.open_one(1, memoryview(blob)[61 + SEALED : 61 + 2 * SEALED], memoryview(one))
    assert one == bytes(CHUNK)


def test_the_context_encodes_label_tenant_and_blob_at_fixed_width() -> None:
    expected = b"kodori/blob/v1\x00" + (7).to_bytes(8, "big") + BLOB.bytes
    assert expected == CONTEXT
    assert len(envelope.blob_context(0, BLOB)) == len(envelope.blob_context(2**64 - 1, BLOB)) == 39
    seen = {envelope.blob_context(t, uuid.UUID(int=b)) for t in range(40) for b in range(40)}
    assert len(seen) == 1600
    for bad in (-1, 2**64, True):
        with pytest.raises(ValueError):
            envelope.blob_context(bad, BLOB)
    with pytest.raises(TypeError):
        envelope.blob_context(1, str(BLOB))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "context",
    [
        envelope.blob_context(TENANT + 1, BLOB),
        envelope.blob_context(TENANT, uuid.UUID(int=BLOB.int + 1)),
        envelope.blob_context(TENANT, uuid.uuid4()),
        b"",
        CONTEXT + b"\x00",
        CONTEXT.replace(b"/v1", b"/v2"),
    ],
)
def test_it_refuses_another_tenant_blob_or_version_context(context: bytes) -> None:
    blob = envelope.encrypt(DEK, CONTEXT, os.urandom(40000))
    with pytest.raises(NotAuthentic):
        _all_ways(blob, context=context)


def test_a_ciphertext_never_decrypts_under_a_second_key() -> None:
    plaintext = os.urandom(20000)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    for _ in range(200):
        other = os.urandom(32)
        with pytest.raises(NotAuthentic):
            envelope.iter_decrypt(other, CONTEXT, io.BytesIO(blob))
        with pytest.raises(NotAuthentic):
            envelope.RandomAccessReader(other, CONTEXT, io.BytesIO(blob))


class _SpyAESGCM:
    """Stands in for pyca's AESGCM inside the chunk cipher and records every use."""

    constructed = 0
    opened = 0

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        type(self).constructed += 1
        self._real = AESGCM(key)

    def decrypt_into(self, *args: Any) -> int:
        type(self).opened += 1
        return int(self._real.decrypt_into(*args))


def test_the_commitment_is_checked_before_any_chunk_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = envelope.encrypt(DEK, CONTEXT, os.urandom(50000))
    monkeypatch.setattr(cobblestone, "AESGCM", _SpyAESGCM)
    monkeypatch.setattr(_SpyAESGCM, "constructed", 0)
    monkeypatch.setattr(_SpyAESGCM, "opened", 0)
    for wrong_key, context in ((os.urandom(32), CONTEXT), (DEK, envelope.blob_context(8, BLOB))):
        with pytest.raises(NotAuthentic):
            envelope.decrypt(wrong_key, context, blob)
        with pytest.raises(NotAuthentic):
            envelope.RandomAccessReader(wrong_key, context, io.BytesIO(blob))
    assert (_SpyAESGCM.constructed, _SpyAESGCM.opened) == (0, 0)
    # The spy really is in the path: the right key goes through it.
    envelope.decrypt(DEK, CONTEXT, blob)
    assert _SpyAESGCM.constructed == 1
    assert _SpyAESGCM.opened == 4


def test_chunks_valid_under_a_second_key_are_still_refused_by_the_commitment() -> None:
    plaintext = os.urandom(40000)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    other = os.urandom(32)
    # Re-seal every chunk under the second key's derived key and nonce, keep the first commitment.
    forged = envelope.encrypt(other, CONTEXT, plaintext, salt=blob[5:29])
    spliced = blob[:61] + forged[61:]
    with pytest.raises(NotAuthentic):
        envelope.decrypt(other, CONTEXT, spliced)
    with pytest.raises(NotAuthentic):
        envelope.decrypt(DEK, CONTEXT, spliced)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4])
def test_a_blob_shorter_than_the_kodori_header_is_malformed(length: int) -> None:
    data = b"KDRB\x01"[:length]
    for call in _decryptions(data):
        with pytest.raises(MalformedHeader):
            call()
    with pytest.raises(MalformedHeader):
        envelope.plaintext_size(length)


@pytest.mark.parametrize("magic", [b"KDRA", b"kdrb", b"\x00\x00\x00\x00", b"PK\x03\x04"])
def test_a_wrong_magic_is_malformed(magic: bytes) -> None:
    blob = magic + envelope.encrypt(DEK, CONTEXT, b"hello")[4:]
    for call in _decryptions(blob):
        with pytest.raises(MalformedHeader):
            call()


@pytest.mark.parametrize("version", [0, 2, 3, 255])
def test_an_unknown_format_version_has_its_own_error(version: int) -> None:
    blob = bytearray(envelope.encrypt(DEK, CONTEXT, b"hello"))
    blob[4] = version
    for call in _decryptions(bytes(blob)):
        with pytest.raises(UnknownFormatVersion) as caught:
            call()
        assert caught.value.version == version
        assert not isinstance(caught.value, NotAuthentic | MalformedHeader)
    assert issubclass(UnknownFormatVersion, EnvelopeError)
    assert issubclass(MalformedHeader, EnvelopeError)


def _decryptions(blob: bytes) -> list[Any]:
    return [
        lambda: envelope.decrypt(DEK, CONTEXT, blob),
        lambda: envelope.iter_decrypt(DEK, CONTEXT, io.BytesIO(blob)),
        lambda: envelope.decrypt_stream(DEK, CONTEXT, io.BytesIO(blob), io.BytesIO()),
        lambda: envelope.RandomAccessReader(DEK, CONTEXT, io.BytesIO(blob)),
        lambda: envelope.RandomAccessReader(DEK, CONTEXT, io.BytesIO(blob), len(blob)),
        lambda: envelope.parse_prefix(blob[:5]),
    ]


def test_every_authenticity_failure_has_one_type_and_one_message() -> None:
    blob = envelope.encrypt(DEK, CONTEXT, os.urandom(20000))
    flipped = bytearray(blob)
    flipped[100] ^= 1
    cases = [
        (os.urandom(32), CONTEXT, blob),
        (DEK, b"other", blob),
        (DEK, CONTEXT, bytes(flipped)),
        (DEK, CONTEXT, blob[:-1]),
        (DEK, CONTEXT, blob + b"\x00"),
        (DEK, CONTEXT, blob[:40]),
    ]
    seen = set()
    for dek, context, data in cases:
        with pytest.raises(NotAuthentic) as caught:
            envelope.decrypt(dek, context, data)
        seen.add((type(caught.value), str(caught.value)))
    assert len(seen) == 1


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_it_refuses_keys_that_are_not_32_bytes(size: int) -> None:
    blob = envelope.encrypt(DEK, CONTEXT, b"x")
    key = bytes(size)
    for call in (
        lambda: envelope.Encryptor(key, CONTEXT),
        lambda: envelope.encrypt_stream(key, CONTEXT, io.BytesIO(b"x"), io.BytesIO()),
        lambda: envelope.decrypt(key, CONTEXT, blob),
        lambda: envelope.decrypt_stream(key, CONTEXT, io.BytesIO(blob), io.BytesIO()),
        lambda: envelope.RandomAccessReader(key, CONTEXT, io.BytesIO(blob)),
        # Even when the header is garbage: a bad key is a programming error, reported first.
        lambda: envelope.decrypt(key, CONTEXT, b""),
    ):
        with pytest.raises(ValueError, match="key"):
            call()


def test_the_encryptor_refuses_misuse() -> None:
    with pytest.raises(ValueError, match="salt"):
        envelope.Encryptor(DEK, CONTEXT, salt=bytes(23))
    encryptor = envelope.Encryptor(DEK, CONTEXT)
    encryptor.update(b"abc")
    with pytest.raises(RuntimeError):
        encryptor.header()  # already sent in front of the first update
    encryptor.finalize()
    with pytest.raises(RuntimeError):
        encryptor.update(b"more")
    with pytest.raises(RuntimeError):
        encryptor.finalize()
    # Without header() or update(), finalize() alone is a complete empty blob.
    empty = envelope.Encryptor(DEK, CONTEXT).finalize()
    assert len(empty) == 61 + 16
    assert envelope.decrypt(DEK, CONTEXT, empty) == b""


def test_each_blob_takes_a_fresh_salt() -> None:
    salts = {envelope.Encryptor(DEK, CONTEXT).header()[5:29] for _ in range(2000)}
    assert len(salts) == 2000


def test_size_helpers_agree_with_the_format_and_refuse_impossible_sizes() -> None:
    for size in [*SIZES, 2**20, 10**9, envelope.MAX_PLAINTEXT_SIZE]:
        assert envelope.plaintext_size(envelope.ciphertext_size(size)) == size
    assert envelope.ciphertext_size(0) == 77
    assert envelope.ciphertext_size(16384) == 61 + 16400 + 16
    for impossible in (5, 60, 61, 76, 61 + 16400, 61 + 2 * 16400, 61 + 16400 + 15):
        with pytest.raises(NotAuthentic):
            envelope.plaintext_size(impossible)
    with pytest.raises(ValueError):
        envelope.ciphertext_size(-1)
    with pytest.raises(ValueError):
        envelope.ciphertext_size(envelope.MAX_PLAINTEXT_SIZE + 1)
    too_many_chunks = 5 + cobblestone.HEADER_SIZE + cobblestone.MAX_CHUNKS * SEALED + 16
    with pytest.raises(NotAuthentic):
        envelope.plaintext_size(too_many_chunks)


def test_it_aborts_beyond_the_chunk_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2^38 chunks cannot be exercised for real; the same code paths run with a limit of 3.
    blob = envelope.encrypt(DEK, CONTEXT, os.urandom(3 * CHUNK + 5))  # 4 chunks
    monkeypatch.setattr(cobblestone, "MAX_CHUNKS", 3)
    monkeypatch.setattr(cobblestone_read, "MAX_CHUNKS", 3)
    with pytest.raises(NotAuthentic):
        envelope.decrypt(DEK, CONTEXT, blob)
    with pytest.raises(NotAuthentic):
        envelope.RandomAccessReader(DEK, CONTEXT, io.BytesIO(blob))
    encryptor = envelope.Encryptor(DEK, CONTEXT)
    encryptor.update(os.urandom(2 * CHUNK))
    with pytest.raises(ValueError, match="2\\^38"):
        encryptor.update(os.urandom(CHUNK))
    with pytest.raises(ValueError, match="2\\^38"):
        envelope.encrypt_stream(DEK, CONTEXT, io.BytesIO(os.urandom(3 * CHUNK)), io.BytesIO())
    # Three chunks (two full and a final one) are still fine.
    small = envelope.encrypt(DEK, CONTEXT, bytes(2 * CHUNK + 1))
    assert envelope.decrypt(DEK, CONTEXT, small) == bytes(2 * CHUNK + 1)
