"""Batched opening of chunks: the cipher's reused per-chunk views and the random-access reader's pieces.

``ChunkCipher.open_full`` keeps the views of the buffers it was recently given, and
``RandomAccessReader.iter_range`` hands out pieces of ``RANGE_PIECE_CHUNKS`` chunks, each read and opened
``RANGE_READ_CHUNKS`` at a time into its slice of a buffer the reader keeps. What a wrong cache or a wrong
boundary would break: plaintext written into a buffer the caller no longer reads, a range clipped at the
wrong place, or bytes of a forged chunk (or of the chunks after it in the same piece) handed out.
"""

from __future__ import annotations

import io
import uuid

import pytest

from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE, ChunkCipher
from encryption.format.cobblestone_read import RANGE_PIECE_CHUNKS, RANGE_READ_CHUNKS
from encryption.format.errors import NotAuthentic
from encryption.format.streamio import buffer

DEK = bytes(range(32))
CONTEXT = envelope.blob_context(7, uuid.UUID(int=17))
B = RANGE_PIECE_CHUNKS
R = RANGE_READ_CHUNKS
SIZE = (3 * B + 2) * CHUNK_SIZE + 100  # three whole pieces, two more full chunks, a 100-byte final chunk
FINAL = SIZE // CHUNK_SIZE


def plaintext(size: int) -> bytes:
    return bytes((i * 7 + (i >> 14) * 13) & 0xFF for i in range(size))


PLAINTEXT = plaintext(SIZE)
STORED = envelope.encrypt(DEK, CONTEXT, PLAINTEXT)


def forged(index: int) -> bytes:
    """The stored blob with one bit of chunk ``index`` flipped."""
    at = envelope.HEADER_SIZE + index * SEALED_CHUNK_SIZE + 100
    return STORED[:at] + bytes([STORED[at] ^ 1]) + STORED[at + 1 :]


def reader(stored: bytes = STORED) -> envelope.RandomAccessReader:
    return envelope.RandomAccessReader(DEK, CONTEXT, io.BytesIO(stored), len(stored))


# --- ChunkCipher.open_full -------------------------------------------------------------------------------


def sealed_chunks(cipher: ChunkCipher, first: int, count: int, fill: int) -> tuple[bytes, memoryview]:
    """``count`` full chunks of bytes ``fill``, ``fill + 1``... sealed at indices ``first...``."""
    chunks = b"".join(bytes([(fill + k) & 0xFF]) * CHUNK_SIZE for k in range(count))
    sealed = memoryview(bytearray(count * SEALED_CHUNK_SIZE))
    cipher.seal_full(first, memoryview(chunks), count, sealed)
    return chunks, sealed


@pytest.fixture
def cipher() -> ChunkCipher:
    return ChunkCipher(bytes(32), bytes(12))


def test_open_full_decrypts_every_call_into_the_buffer_it_is_given(cipher: ChunkCipher) -> None:
    src, dst = buffer(4 * SEALED_CHUNK_SIZE), buffer(4 * CHUNK_SIZE)
    for first, fill in ((0, 1), (4, 9), (8, 30)):  # same buffers, new contents and indices each time
        chunks, sealed = sealed_chunks(cipher, first, 4, fill)
        src[:] = sealed
        assert cipher.open_full(first, src, 4, dst) == 4
        assert bytes(dst) == chunks
    # Fewer chunks than the buffers hold: only those are written.
    chunks, sealed = sealed_chunks(cipher, 12, 2, 50)
    src[: len(sealed)] = sealed
    assert cipher.open_full(12, src, 2, dst) == 2
    assert bytes(dst[: 2 * CHUNK_SIZE]) == chunks
    # Another output buffer: the plaintext goes there, and the previous buffer is left as it was.
    before, other = bytes(dst), buffer(4 * CHUNK_SIZE)
    assert cipher.open_full(12, src, 2, other) == 2
    assert bytes(other[: 2 * CHUNK_SIZE]) == chunks and bytes(dst) == before


def test_open_full_refuses_more_chunks_than_its_buffers_hold(cipher: ChunkCipher) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        cipher.open_full(0, buffer(2 * SEALED_CHUNK_SIZE), 3, buffer(4 * CHUNK_SIZE))
    with pytest.raises(ValueError, match="do not fit"):
        cipher.open_full(0, buffer(4 * SEALED_CHUNK_SIZE), 3, buffer(2 * CHUNK_SIZE))


@pytest.mark.parametrize("bad", [0, 2, 3])
def test_open_full_stops_at_a_forged_chunk_and_leaves_none_of_its_plaintext(
    cipher: ChunkCipher, bad: int
) -> None:
    chunks, sealed = sealed_chunks(cipher, 0, 4, 1)
    src, dst = buffer(4 * SEALED_CHUNK_SIZE), buffer(4 * CHUNK_SIZE)
    src[:] = sealed
    src[bad * SEALED_CHUNK_SIZE + 5] ^= 1
    dst[:] = b"\xee" * len(dst)
    assert cipher.open_full(0, src, 4, dst) == bad
    assert bytes(dst[: bad * CHUNK_SIZE]) == chunks[: bad * CHUNK_SIZE]
    assert bytes(dst[bad * CHUNK_SIZE : (bad + 1) * CHUNK_SIZE]) == bytes(CHUNK_SIZE)  # wiped
    assert bytes(dst[(bad + 1) * CHUNK_SIZE :]) == b"\xee" * ((3 - bad) * CHUNK_SIZE)  # never opened


# --- RandomAccessReader.iter_range --------------------------------------------------------------------------

EDGES = sorted(
    {0, 1, SIZE - 1, SIZE}
    | {k * CHUNK_SIZE + d for k in (1, R, R + 1, B - 1, B, B + R, 2 * B, 3 * B, FINAL) for d in (-1, 0, 1)}
)
RANGES = [(start, stop) for start in EDGES for stop in EDGES if 0 <= start <= stop <= SIZE]


def test_ranges_around_every_piece_and_step_boundary_are_exact_from_one_reader() -> None:
    """One reader serves them all, its buffers growing from one chunk to a piece and views rebuilt."""
    opened = reader()
    for start, stop in RANGES:
        pieces = list(opened.iter_range(start, stop))
        assert b"".join(pieces) == PLAINTEXT[start:stop], (start, stop)
        # One piece per RANGE_PIECE_CHUNKS chunks the range touches, none larger.
        assert all(0 < len(p) <= B * CHUNK_SIZE for p in pieces)
        last = FINAL if stop == SIZE else max(start, stop - 1) // CHUNK_SIZE
        expected = -(-(last - start // CHUNK_SIZE + 1) // B)
        assert len(pieces) == (expected if start < stop else 0)


FORGED = [R - 1, R, B - 1, B, B + 1, B + R, 2 * B - 1, 3 * B, FINAL - 1]
STARTS = [0, 5, B * CHUNK_SIZE - 3]


@pytest.mark.parametrize(
    ("bad", "start"), [(bad, start) for bad in FORGED for start in STARTS if start // CHUNK_SIZE <= bad]
)
def test_a_forged_chunk_anywhere_in_a_piece_ends_the_range_after_exactly_the_authentic_bytes(
    bad: int, start: int
) -> None:
    opened = reader(forged(bad))
    received = bytearray()
    pieces = opened.iter_range(start, SIZE - 10)
    with pytest.raises(NotAuthentic):
        for piece in pieces:
            received += piece
    assert bytes(received) == PLAINTEXT[start : bad * CHUNK_SIZE]
    assert opened.failed_chunk == bad
    # A reader that failed keeps failing, even for a range the forgery does not reach.
    with pytest.raises(NotAuthentic):
        next(iter(opened.iter_range(0, 1)))
    with pytest.raises(NotAuthentic):
        next(pieces)


def test_a_forged_final_chunk_releases_only_the_chunks_before_it() -> None:
    """The final chunk authenticates the length: a range reaching it gets the chunks before it, no more."""
    opened = reader(forged(FINAL))
    received = bytearray()
    with pytest.raises(NotAuthentic):
        for piece in opened.iter_range((FINAL - 1) * CHUNK_SIZE, SIZE):
            received += piece
    assert bytes(received) == PLAINTEXT[(FINAL - 1) * CHUNK_SIZE : FINAL * CHUNK_SIZE]
    assert opened.failed_chunk == FINAL


def test_verify_chunks_across_pieces_finds_the_forged_one_without_releasing_plaintext() -> None:
    opened = reader(forged(2 * B + R + 3))
    opened.verify_chunks(0, 2 * B + R + 2)  # every chunk before it authenticates
    with pytest.raises(NotAuthentic):
        opened.verify_chunks(B, FINAL)
    assert opened.failed_chunk == 2 * B + R + 3
