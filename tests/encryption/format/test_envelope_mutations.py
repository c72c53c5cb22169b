"""Tampering with v1 blobs: every mutation is rejected and no forged chunk leaks plaintext.

Over 1,200 random blobs (sizes from 0 to 4 MiB, a third of them exact multiples of 16 KiB), each
mutation below is applied to a fresh copy and decrypted through the stream iterator and through
the random-access reader. Every mutated blob must be rejected, and whatever plaintext came out
before the rejection must be a prefix of the original made only of whole chunks that are still
byte-for-byte in place, so nothing from a forged, moved or foreign chunk is ever released.

The seed is fixed for reproducibility; set ``KODORI_MUTATION_SEED`` to explore others.
"""

from __future__ import annotations

import io
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from encryption.format import cobblestone, envelope
from encryption.format.errors import EnvelopeError, NotAuthentic

CHUNK = cobblestone.CHUNK_SIZE
SEALED = cobblestone.SEALED_CHUNK_SIZE
HEADER = envelope.HEADER_SIZE
BLOBS = 1200
SEED = int(os.environ.get("KODORI_MUTATION_SEED", "20240611"))


def _chunks(blob: bytes) -> list[bytes]:
    body = blob[HEADER:]
    return [body[i : i + SEALED] for i in range(0, len(body), SEALED)]


def _join(blob: bytes, chunks: list[bytes]) -> bytes:
    return blob[:HEADER] + b"".join(chunks)


Mutation = Callable[[random.Random, bytes, bytes], bytes | None]


def flip_bit(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    out = bytearray(blob)
    bit = rng.randrange(len(out) * 8)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def flip_header_bit(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    out = bytearray(blob)
    bit = rng.randrange(HEADER * 8)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def truncate_anywhere(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    return blob[: rng.randrange(len(blob))]


def drop_final_chunk(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    # Cutting at a chunk boundary leaves a full-sized chunk last: the classic truncation.
    return _join(blob, _chunks(blob)[:-1])


def append_bytes(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    extra = rng.choice([1, 15, 16, 17, SEALED - 1, SEALED, rng.randrange(1, 64)])
    return blob + rng.randbytes(extra)


def drop_chunk(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    chunks = _chunks(blob)
    del chunks[rng.randrange(len(chunks))]
    return _join(blob, chunks)


def duplicate_chunk(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    chunks = _chunks(blob)
    k = rng.randrange(len(chunks))
    chunks.insert(k, chunks[k])
    return _join(blob, chunks)


def swap_chunks(rng: random.Random, blob: bytes, other: bytes) -> bytes | None:
    chunks = _chunks(blob)
    if len(chunks) < 2:
        return None
    i, j = rng.sample(range(len(chunks)), 2)
    chunks[i], chunks[j] = chunks[j], chunks[i]
    return _join(blob, chunks)


def append_foreign_chunk(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    return blob + rng.choice(_chunks(other))


def replace_with_foreign_chunk(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    # Same DEK, another blob: the chunk at the same index is a perfect forgery but for the context.
    chunks, foreign = _chunks(blob), _chunks(other)
    k = rng.randrange(len(chunks))
    chunks[k] = foreign[min(k, len(foreign) - 1)]
    return _join(blob, chunks)


MUTATIONS: list[Mutation] = [
    flip_bit,
    flip_header_bit,
    truncate_anywhere,
    drop_final_chunk,
    append_bytes,
    drop_chunk,
    duplicate_chunk,
    swap_chunks,
    append_foreign_chunk,
    replace_with_foreign_chunk,
]


def _intact_full_chunks(original: bytes, mutated: bytes) -> int:
    """How many leading non-final chunks of the original sit unchanged at their own offsets."""
    if mutated[:HEADER] != original[:HEADER]:
        return 0
    n = 0
    while True:
        a, b = HEADER + n * SEALED, HEADER + (n + 1) * SEALED
        if b >= len(original) or b > len(mutated) or original[a:b] != mutated[a:b]:
            return n
        n += 1


def _size(rng: random.Random, i: int) -> int:
    if i % 150 == 0:
        return rng.randrange(1, 4 * 2**20)  # a few large ones
    if i % 3 == 0:
        return CHUNK * rng.randrange(0, 9)  # exact multiples of 16 KiB, zero included
    if i % 10 == 1:
        return rng.randrange(0, 600_000)
    return rng.randrange(0, 70_000)


def _stream_release(dek: bytes, context: bytes, blob: bytes) -> tuple[bytes, bool]:
    """Plaintext released by the stream iterator, and whether the blob was rejected."""
    released = bytearray()
    try:
        stream = envelope.iter_decrypt(dek, context, io.BytesIO(blob))
    except EnvelopeError:
        return b"", True
    try:
        for piece in stream:
            released += piece
    except NotAuthentic:
        with pytest.raises(NotAuthentic):  # a failed stream keeps failing
            next(stream)
        return bytes(released), True
    return bytes(released), False


def _reader_release(dek: bytes, context: bytes, blob: bytes) -> tuple[bytes, bool]:
    """Plaintext released by a whole-blob random-access read, and whether it was rejected."""
    released = bytearray()
    try:
        reader = envelope.RandomAccessReader(dek, context, io.BytesIO(blob))
        for piece in reader.iter_range(0, reader.plaintext_size):
            released += piece
    except EnvelopeError:
        return bytes(released), True
    return bytes(released), False


def test_every_mutation_of_1200_random_blobs_is_rejected_without_leaking() -> None:
    rng = random.Random(SEED)
    dek = rng.randbytes(32)
    applied: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    released_chunks = 0
    sizes: list[int] = []
    previous = envelope.encrypt(dek, envelope.blob_context(1, uuid.UUID(int=0)), b"x" * 40000)
    for i in range(BLOBS):
        size = _size(rng, i)
        sizes.append(size)
        plaintext = rng.randbytes(size)
        context = envelope.blob_context(rng.randrange(1, 10), uuid.UUID(int=rng.getrandbits(128)))
        blob = envelope.encrypt(dek, context, plaintext)
        for mutate in MUTATIONS:
            mutated = mutate(rng, blob, previous)
            if mutated is None:
                continue
            assert mutated != blob
            applied[mutate.__name__] += 1
            intact = _intact_full_chunks(blob, mutated)
            outcomes = [_stream_release(dek, context, mutated), _reader_release(dek, context, mutated)]
            for released, was_rejected in outcomes:
                where = f"seed {SEED}, blob {i} ({size} B), {mutate.__name__}"
                assert was_rejected, f"accepted a mutated blob: {where}"
                assert len(released) % CHUNK == 0, where
                assert len(released) <= intact * CHUNK, f"released a chunk that is not intact: {where}"
                assert released == plaintext[: len(released)], where
                released_chunks += len(released) // CHUNK
            rejected[mutate.__name__] += 1
        previous = blob
    assert sum(applied.values()) == sum(rejected.values())
    assert applied == rejected
    assert set(applied) == {m.__name__ for m in MUTATIONS}
    assert min(applied.values()) >= 900  # swap needs two chunks; every other kind ran on every blob
    assert sum(applied.values()) >= 11_000
    assert sum(1 for s in sizes if s % CHUNK == 0) >= 390
    assert sum(1 for s in sizes if s >= 2**20) >= 5
    # Intact prefixes of truncated or extended blobs were released, so the check above had teeth.
    assert released_chunks > 0


def _cut_points(blob_size: int) -> list[int]:
    """Every byte of the header and within 48 bytes of each chunk boundary, every 97th elsewhere."""
    boundaries = [HEADER + k * SEALED for k in range((blob_size - HEADER) // SEALED + 1)] + [blob_size]
    near = {c for b in boundaries for c in range(b - 48, b + 49)}
    cuts = set(range(HEADER + 1)) | near | set(range(0, blob_size, 97))
    return sorted(c for c in cuts if 0 <= c < blob_size)


@pytest.mark.parametrize("size", [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7])
def test_it_rejects_truncation_at_every_critical_byte(size: int) -> None:
    dek, context = os.urandom(32), envelope.blob_context(3, uuid.uuid4())
    plaintext = os.urandom(size)
    blob = envelope.encrypt(dek, context, plaintext)
    cuts = _cut_points(len(blob))
    for cut in cuts:
        for released, was_rejected in (
            _stream_release(dek, context, blob[:cut]),
            _reader_release(dek, context, blob[:cut]),
        ):
            assert was_rejected, cut
            assert released == plaintext[: len(released)]
            assert len(released) <= _intact_full_chunks(blob, blob[:cut]) * CHUNK
    assert len(cuts) >= min(len(blob), 150)


def test_it_rejects_a_chunk_swapped_in_from_another_blob_under_the_same_key() -> None:
    dek = os.urandom(32)
    plaintext = os.urandom(3 * CHUNK + 10)
    ctx_a, ctx_b = envelope.blob_context(1, uuid.uuid4()), envelope.blob_context(1, uuid.uuid4())
    a, b = envelope.encrypt(dek, ctx_a, plaintext), envelope.encrypt(dek, ctx_b, plaintext)
    for k in range(4):
        chunks = _chunks(a)
        chunks[k] = _chunks(b)[k]
        with pytest.raises(NotAuthentic):
            envelope.decrypt(dek, ctx_a, _join(a, chunks))
