"""Decryption side of Cobblestone-256 (c2sp.org/chunked-encryption): streaming and random access.

The byte layout is documented in :mod:`encryption.format.cobblestone`. Rules this module enforces:

* The commitment is compared (constant time) before any AES-GCM chunk is opened, so a wrong key or
  a wrong context is refused without touching a chunk.
* No plaintext is ever released from a chunk whose tag did not verify. ``decrypt_into`` writes
  plaintext before it checks the tag, so a failed chunk's output region is wiped at once.
* A streaming decryption releases chunks in order and only once it knows whether each is the
  final one (a full-sized chunk is final only if nothing follows it, which means truncation).
  The end of the input is the only place the final chunk can be, so trailing data, a missing
  final chunk and a truncated one all fail the final chunk's authentication or its size check.
* Every failure is :class:`~encryption.format.errors.NotAuthentic`, and a stream or reader that failed
  keeps failing on every later call: a consumer that retries cannot mistake a failure for an end.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Protocol

from encryption.format.cobblestone import (
    BATCH_CHUNKS,
    CHUNK_SIZE,
    COMMITMENT_SIZE,
    FIRST_BATCH_CHUNKS,
    HEADER_SIZE,
    MAX_CHUNKS,
    SALT_SIZE,
    SEALED_CHUNK_SIZE,
    TAG_SIZE,
    ChunkCipher,
    check_key,
    derive_message_keys,
    plaintext_size,
)
from encryption.format.errors import NotAuthentic
from encryption.format.streamio import Readable, Writable, buffer, fill, write_all

__all__ = ["RandomAccessReader", "StreamDecryptor", "decrypt_stream", "iter_decrypt", "open_header"]

# A RandomAccessReader hands out up to RANGE_PIECE_CHUNKS chunks of plaintext (1 MiB) per item, one
# socket write for a WSGI server, and reads and opens them RANGE_READ_CHUNKS (128 KiB) at a time. Small
# reads keep the ciphertext being opened in a core's cache next to the piece being filled: with 1 MiB reads a
# download cost about 10% more server CPU than the plain download plus AES-GCM. Small pieces cost more than
# they saved: every write wakes the receiving side, which on a quiet machine cost more than the cache misses
# (docs/benchmarks.md, "Blobs").
RANGE_PIECE_CHUNKS = 64
RANGE_READ_CHUNKS = 8


class Seekable(Readable, Protocol):
    """A source that can also seek (a file, a storage backend's file object)."""

    def seek(self, offset: int, whence: int = ..., /) -> int: ...


def open_header(key: bytes, context: bytes, header: bytes) -> ChunkCipher:
    """Check a raw 56-byte header (salt ‖ commitment) and return the message's chunk cipher."""
    key = check_key(key)
    if len(header) != HEADER_SIZE:
        raise NotAuthentic()
    aead_key, base_nonce, commitment = derive_message_keys(key, header[:SALT_SIZE], context)
    if not hmac.compare_digest(commitment, header[SALT_SIZE : SALT_SIZE + COMMITMENT_SIZE]):
        raise NotAuthentic()
    return ChunkCipher(aead_key, base_nonce)


class StreamDecryptor(Iterator[bytes]):
    """Pull-style decryption: iterate to get authenticated plaintext, about 1 MiB at a time.

    Each item holds whole chunks that have been authenticated (a failing batch first yields the
    chunks before the forged one, then raises). After a failure every ``next()`` raises
    :class:`NotAuthentic` again, never ``StopIteration``. ``plaintext_size`` counts what was
    released. Built by :func:`iter_decrypt` after the header checks out, or directly from a
    :class:`ChunkCipher` over a source positioned at chunk 0 (raw mode, for test vectors).
    """

    def __init__(self, cipher: ChunkCipher, source: Readable) -> None:
        self._cipher = cipher
        self._source = source
        # One spare byte: a full chunk is released only once a byte after it proves it is not
        # the final one. Small at first; the first full batch switches to the large size.
        self._in = buffer(FIRST_BATCH_CHUNKS * SEALED_CHUNK_SIZE + 1)
        self._out = buffer(FIRST_BATCH_CHUNKS * CHUNK_SIZE)
        self._have = 0
        self._index = 0
        self._failed = False
        self._done = False
        self.plaintext_size = 0

    def __next__(self) -> bytes:
        while True:
            view = self.next_view()
            if view is None:
                raise StopIteration
            if view:
                return bytes(view)

    def next_view(self) -> memoryview | None:
        """Next authenticated plaintext as a view into a reused buffer; None at the end.

        The view is valid until the next call. This is the zero-copy path behind
        :func:`decrypt_stream`.
        """
        if self._failed:
            raise NotAuthentic()
        if self._done:
            return None
        buf, have = self._in, self._have
        have += fill(self._source, buf[have:])
        at_end = have < len(buf)
        # Full chunks that are followed by at least one more byte are certainly not final.
        count = (have - 1) // SEALED_CHUNK_SIZE if have else 0
        # Whatever follows these chunks, a final one must still fit under the 2^38 limit.
        if self._index + count >= MAX_CHUNKS:
            return self._fail(0)
        opened = self._cipher.open_full(self._index, buf, count, self._out)
        if opened < count:
            return self._fail(opened * CHUNK_SIZE)
        self._index += count
        released = count * CHUNK_SIZE
        consumed = count * SEALED_CHUNK_SIZE
        out = self._out
        if at_end:
            last = have - consumed
            # last == 0: input ended without any final chunk; last == 16400: the final chunk
            # is full-sized, i.e. the real final chunk was cut off.
            if not TAG_SIZE <= last < SEALED_CHUNK_SIZE:
                return self._fail(released)
            if not self._cipher.open_one(
                self._index, buf[consumed:have], out[released : released + last - TAG_SIZE]
            ):
                return self._fail(released)
            released += last - TAG_SIZE
            self._done = True
            self._have = 0
        else:
            self._have = have - consumed
            if len(buf) < BATCH_CHUNKS * SEALED_CHUNK_SIZE:
                # A full first batch means a large stream: move up to the large buffers. The
                # view returned below keeps the small output buffer alive while it is used.
                self._in = buffer(BATCH_CHUNKS * SEALED_CHUNK_SIZE + 1)
                self._out = buffer(BATCH_CHUNKS * CHUNK_SIZE)
            self._in[: self._have] = buf[consumed:have]
        self.plaintext_size += released
        return out[:released]

    def _fail(self, released: int) -> memoryview:
        """Mark the stream failed; hand out what was authenticated before, or raise now."""
        self._failed = True
        if not released:
            raise NotAuthentic()
        self.plaintext_size += released
        return self._out[:released]


def _read_raw_header(source: Readable) -> bytes:
    header = bytearray(HEADER_SIZE)
    got = fill(source, memoryview(header))
    return bytes(header[:got])


def iter_decrypt(key: bytes, context: bytes, source: Readable) -> StreamDecryptor:
    """Check the header of a raw message read from ``source`` and return its plaintext iterator.

    Raises ValueError for a bad key size and NotAuthentic for a wrong key, context or header at
    once, before the caller has started sending anything anywhere.
    """
    key = check_key(key)
    return StreamDecryptor(open_header(key, context, _read_raw_header(source)), source)


def decrypt_stream(key: bytes, context: bytes, source: Readable, sink: Writable) -> int:
    """Decrypt a raw message from ``source`` into ``sink``; return the plaintext size.

    On NotAuthentic the sink may already hold an authenticated prefix; callers that need
    all-or-nothing write to a temporary place and discard it on error.
    """
    stream = iter_decrypt(key, context, source)
    while (view := stream.next_view()) is not None:
        write_all(sink, view)
    return stream.plaintext_size


class _Sticky(Iterator[bytes]):
    """Wrap a generator so that after NotAuthentic it raises again instead of stopping."""

    def __init__(self, inner: Iterator[bytes]) -> None:
        self._inner = inner
        self._failed = False

    def __next__(self) -> bytes:
        if self._failed:
            raise NotAuthentic()
        try:
            return next(self._inner)
        except NotAuthentic:
            self._failed = True
            raise


class RandomAccessReader:
    """Random access to a raw message in a seekable source: chunk ``k`` is at a fixed offset.

    ``plaintext_size`` follows from the ciphertext size (``size``, or the source's end) and is a
    claim until the final chunk is authenticated, by ``authenticate_length()`` or by any range
    that reaches the end. ``iter_range`` reads and opens only the chunks the range covers, into
    two buffers the reader keeps, and yields the authenticated plaintext in ``bytes`` pieces of up
    to ``RANGE_PIECE_CHUNKS`` chunks (one write for a WSGI server). The header is checked
    on construction. Not thread-safe; a failure makes every later call fail.
    """

    def __init__(
        self, key: bytes, context: bytes, source: Seekable, size: int | None = None, *, offset: int = 0
    ) -> None:
        key = check_key(key)
        if size is None:
            size = source.seek(0, 2) - offset
        self._source = source
        self._offset = offset
        self._size = size
        self.plaintext_size = plaintext_size(size)
        self._chunks = self.plaintext_size // CHUNK_SIZE + 1
        source.seek(offset)
        self._cipher = open_header(key, context, _read_raw_header(source))
        # Read and output buffers, and the output slice each read step of a piece fills: made on first use.
        self._in = self._out = memoryview(b"")
        self._parts: list[memoryview] = []
        self._failed = False
        self._length_ok = False
        # The index of the chunk that failed (short read, tag or final-chunk size), once one has.
        self.failed_chunk: int | None = None

    @property
    def chunks(self) -> int:
        """How many chunks the message has (for its claimed length), the final one included."""
        return self._chunks

    def authenticate_length(self) -> None:
        """Authenticate the final chunk, and with it ``plaintext_size``; NotAuthentic if forged."""
        if self._failed:
            raise NotAuthentic()
        if not self._length_ok:
            self.verify_chunks(self._chunks - 1, self._chunks - 1)

    def verify_chunks(self, first: int, last: int) -> None:
        """Authenticate chunks ``first..last`` without releasing any plaintext; NotAuthentic if one fails
        (``failed_chunk`` names it). The scrub and the pre-send checks of downloads use this."""
        if not 0 <= first <= last < self._chunks:
            raise ValueError(f"chunks {first}..{last} are outside 0..{self._chunks - 1}")
        if self._failed:
            raise NotAuthentic()
        for _ in self._iter_chunks(first, last, 0, 0):
            pass

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        """Yield plaintext bytes ``[start, stop)``; a range ending at the end authenticates it."""
        if not 0 <= start <= stop <= self.plaintext_size:
            raise ValueError(f"range [{start}, {stop}) is outside [0, {self.plaintext_size}]")
        if self._failed:
            raise NotAuthentic()
        if stop == self.plaintext_size:
            last = self._chunks - 1
        elif start == stop:
            return iter(())
        else:
            last = (stop - 1) // CHUNK_SIZE
        first = start // CHUNK_SIZE
        return _Sticky(self._iter_chunks(first, last, start - first * CHUNK_SIZE, stop - first * CHUNK_SIZE))

    def read_range(self, start: int, stop: int) -> bytes:
        """``b"".join(iter_range(start, stop))``, for small ranges."""
        return b"".join(self.iter_range(start, stop))

    def _iter_chunks(self, first: int, last: int, lo: int, hi: int) -> Iterator[bytes]:
        """Open chunks ``first..last``; yield plaintext ``[lo, hi)`` relative to ``first``, a piece at a time.

        A piece is read and opened in steps of ``RANGE_READ_CHUNKS`` into its slice of the output buffer; a
        chunk that fails ends the piece, whose authenticated part is yielded before NotAuthentic is raised.
        """
        count = last - first + 1
        if len(self._out) < min(count, RANGE_PIECE_CHUNKS) * CHUNK_SIZE:
            step, piece = min(count, RANGE_READ_CHUNKS), min(count, RANGE_PIECE_CHUNKS)
            self._in, self._out = buffer(step * SEALED_CHUNK_SIZE), buffer(piece * CHUNK_SIZE)
            self._parts = [
                self._out[at * CHUNK_SIZE : (at + step) * CHUNK_SIZE] for at in range(0, piece, step)
            ]
        dst, parts = self._out, self._parts
        step, piece = len(self._in) // SEALED_CHUNK_SIZE, len(dst) // CHUNK_SIZE
        for piece_first in range(first, last + 1, piece):
            piece_last = min(piece_first + piece - 1, last)
            self._source.seek(self._offset + HEADER_SIZE + piece_first * SEALED_CHUNK_SIZE)
            released, ok = 0, True
            for part, batch_first in zip(parts, range(piece_first, piece_last + 1, step), strict=False):
                released, ok = self._open_step(
                    batch_first, min(batch_first + step - 1, piece_last), part, released
                )
                if not ok:
                    break
            # Clip the authenticated plaintext of this piece to the requested range.
            offset = (piece_first - first) * CHUNK_SIZE
            a, b = max(lo - offset, 0), min(hi - offset, released)
            if a < b:
                yield bytes(dst[a:b])
            if not ok:
                raise NotAuthentic()

    def _open_step(self, first: int, last: int, part: memoryview, released: int) -> tuple[int, bool]:
        """Read chunks ``first..last`` (the source is positioned at ``first``) and open them into ``part``.

        Returns the piece's authenticated byte count so far and whether every chunk authenticated; a failure
        marks the reader failed and names the chunk.
        """
        src, cipher, final = self._in, self._cipher, self._chunks - 1
        begin = HEADER_SIZE + first * SEALED_CHUNK_SIZE
        end = min(HEADER_SIZE + (last + 1) * SEALED_CHUNK_SIZE, self._size)
        got = fill(self._source, src[: end - begin])
        if got != end - begin:
            self._failed = True
            self.failed_chunk = first + got // SEALED_CHUNK_SIZE
            return released, False
        full = last - first + (0 if last == final else 1)
        opened = cipher.open_full(first, src, full, part)
        released += opened * CHUNK_SIZE
        ok = opened == full
        if ok and last == final:
            tail = end - begin - full * SEALED_CHUNK_SIZE
            sealed = src[full * SEALED_CHUNK_SIZE : end - begin]
            at = opened * CHUNK_SIZE
            ok = cipher.open_one(final, sealed, part[at : at + tail - TAG_SIZE])
            if ok:
                released += tail - TAG_SIZE
                self._length_ok = True
        if not ok:
            self._failed = True
            self.failed_chunk = first + opened
        return released, ok
