"""Blob format v1 as a stream: memory, random-access cost, forked workers, property tests."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encryption import aead
from encryption.format import cobblestone, envelope
from encryption.format.errors import NotAuthentic

DEK = bytes(range(32))
CONTEXT = envelope.blob_context(7, uuid.UUID(int=42))
CHUNK = cobblestone.CHUNK_SIZE
SEALED = cobblestone.SEALED_CHUNK_SIZE
HEADER = envelope.HEADER_SIZE
REPO = Path(__file__).resolve().parents[3]


class CountingFile(io.RawIOBase):
    """An in-memory seekable file that records the (offset, length) of every read it serves."""

    def __init__(self, data: bytes, max_read: int | None = None) -> None:
        self._data = data
        self._pos = 0
        self._max_read = max_read
        self.reads: list[tuple[int, int]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: len(self._data) + offset}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data) - self._pos, self._max_read or len(buffer))
        buffer[:n] = self._data[self._pos : self._pos + n]
        if n:
            self.reads.append((self._pos, n))
        self._pos += n
        return n

    def bytes_read(self) -> set[int]:
        return {offset for start, n in self.reads for offset in range(start, start + n)}


class HealingSource(io.RawIOBase):
    """Ends early once (a dropped connection), then serves the rest, replaying the last chunk."""

    def __init__(self, blob: bytes, cut: int, replay_from: int) -> None:
        self._parts = [blob[:cut], b"", blob[replay_from:]]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._parts and not self._parts[0]:
            self._parts.pop(0)
            return 0  # the early end, reported once
        if not self._parts:
            return 0
        n = min(len(buffer), len(self._parts[0]))
        buffer[:n] = self._parts[0][:n]
        self._parts[0] = self._parts[0][n:]
        return n


def test_a_failed_stream_stays_failed_even_if_the_source_recovers() -> None:
    plaintext = os.urandom(2 * CHUNK + 10)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    # The source stops after chunk 1 (so chunk 1 looks like a full-sized final chunk: truncation),
    # then delivers chunk 1 again and the real final chunk, which together would decrypt.
    source = HealingSource(blob, HEADER + 2 * SEALED, HEADER + SEALED)
    stream = envelope.iter_decrypt(DEK, CONTEXT, source)
    assert next(stream) == plaintext[:CHUNK]
    for _ in range(3):
        with pytest.raises(NotAuthentic):
            next(stream)
    assert stream.plaintext_size == CHUNK


def _chunk_span(blob_size: int, k: int) -> set[int]:
    return set(range(HEADER + k * SEALED, min(HEADER + (k + 1) * SEALED, blob_size)))


def test_random_access_reads_only_the_chunks_a_range_covers() -> None:
    plaintext = os.urandom(9 * CHUNK + 100)  # chunks 0..8 full, chunk 9 final
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    source = CountingFile(blob)
    reader = envelope.RandomAccessReader(DEK, CONTEXT, source, len(blob))
    assert source.bytes_read() == set(range(HEADER))  # the header, nothing else
    cases = [
        ((20000, 40000), [1, 2]),
        ((0, 1), [0]),
        ((CHUNK - 1, CHUNK + 1), [0, 1]),
        ((5 * CHUNK, 6 * CHUNK), [5]),
        ((len(plaintext) - 10, len(plaintext)), [9]),  # reaching the end opens the final chunk
        ((9 * CHUNK, len(plaintext)), [9]),
        ((123, 123), []),
    ]
    for (start, stop), chunks in cases:
        source.reads.clear()
        assert reader.read_range(start, stop) == plaintext[start:stop]
        expected = set().union(*(_chunk_span(len(blob), k) for k in chunks)) if chunks else set()
        assert source.bytes_read() == expected, (start, stop)
    # Authenticating the length reads the final chunk alone, once.
    reader = envelope.RandomAccessReader(DEK, CONTEXT, source, len(blob))
    source.reads.clear()
    reader.authenticate_length()
    reader.authenticate_length()
    assert source.bytes_read() == _chunk_span(len(blob), 9)
    assert len(source.reads) == 1


def test_chunks_outside_a_range_are_never_opened() -> None:
    plaintext = os.urandom(9 * CHUNK + 100)
    blob = bytearray(envelope.encrypt(DEK, CONTEXT, plaintext))
    blob[HEADER + 5 * SEALED + 7] ^= 0x80  # forge chunk 5 only
    reader = envelope.RandomAccessReader(DEK, CONTEXT, io.BytesIO(bytes(blob)))
    assert reader.read_range(0, 5 * CHUNK) == plaintext[: 5 * CHUNK]
    assert reader.read_range(6 * CHUNK, 7 * CHUNK) == plaintext[6 * CHUNK : 7 * CHUNK]
    reader.authenticate_length()
    with pytest.raises(NotAuthentic):
        reader.read_range(5 * CHUNK + 100, 5 * CHUNK + 200)
    with pytest.raises(NotAuthentic):  # and the reader stays failed
        reader.read_range(0, 10)


def test_ranges_over_many_chunks_come_in_bounded_batches() -> None:
    plaintext = os.urandom(150 * CHUNK + 3)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    source = CountingFile(blob)
    reader = envelope.RandomAccessReader(DEK, CONTEXT, source)
    source.reads.clear()
    pieces = list(reader.iter_range(100, len(plaintext) - 100))
    assert b"".join(pieces) == plaintext[100:-100]
    assert max(len(p) for p in pieces) <= cobblestone.BATCH_CHUNKS * CHUNK
    assert max(n for _, n in source.reads) <= cobblestone.BATCH_CHUNKS * SEALED
    with pytest.raises(ValueError):
        reader.read_range(0, len(plaintext) + 1)
    with pytest.raises(ValueError):
        reader.read_range(10, 9)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import hashlib, io, os, sys, tempfile, uuid
    from encryption.format import envelope

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024

    TOTAL = int(sys.argv[1])

    class Pattern(io.RawIOBase):
        "TOTAL generated bytes, never held: one random MiB stamped with a counter."
        def __init__(self):
            self.left, self.n, self.block = TOTAL, 0, bytearray(os.urandom(1 << 20))
            self.digest = hashlib.sha256()
        def readable(self):
            return True
        def readinto(self, b):
            n = min(len(b), self.left, len(self.block))
            self.block[:8] = self.n.to_bytes(8, "big")
            self.n += 1
            b[:n] = self.block[:n]
            self.digest.update(memoryview(self.block)[:n])
            self.left -= n
            return n

    class Hashing:
        def __init__(self):
            self.digest, self.size = hashlib.sha256(), 0
        def write(self, b):
            self.digest.update(b)
            self.size += len(b)
            return len(b)

    class Encrypting(io.RawIOBase):
        "The ciphertext of a Pattern, made piece by piece with Encryptor.update."
        def __init__(self, encryptor, source):
            self.encryptor, self.source, self.buf, self.pos, self.done = encryptor, source, b"", 0, False
        def readable(self):
            return True
        def readinto(self, b):
            while self.pos == len(self.buf):
                if self.done:
                    return 0
                piece = self.source.read(300_000)
                self.done = not piece
                self.buf = self.encryptor.update(piece) if piece else self.encryptor.finalize()
                self.pos = 0
            n = min(len(b), len(self.buf) - self.pos)
            b[:n] = self.buf[self.pos : self.pos + n]
            self.pos += n
            return n

    dek, ctx = os.urandom(32), envelope.blob_context(1, uuid.uuid4())
    envelope.decrypt(dek, ctx, envelope.encrypt(dek, ctx, os.urandom(100_000)))  # warm up
    base = status("VmRSS:")
    with tempfile.TemporaryFile(dir=sys.argv[2]) as stored:
        source = Pattern()
        assert envelope.encrypt_stream(dek, ctx, source, stored) == TOTAL
        assert stored.tell() == envelope.ciphertext_size(TOTAL)
        stored.seek(0)
        sink = Hashing()
        assert envelope.decrypt_stream(dek, ctx, stored, sink) == TOTAL
        assert sink.digest.digest() == source.digest.digest()
        reader = envelope.RandomAccessReader(dek, ctx, stored)
        sink = Hashing()
        for piece in reader.iter_range(0, reader.plaintext_size):
            sink.write(piece)
        assert sink.digest.digest() == source.digest.digest()
    source, sink = Pattern(), Hashing()
    for piece in envelope.iter_decrypt(dek, ctx, Encrypting(envelope.Encryptor(dek, ctx), source)):
        sink.write(piece)
    assert sink.size == TOTAL and sink.digest.digest() == source.digest.digest()
    print(base, status("VmHWM:"))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
def test_a_256_mib_stream_encrypts_and_decrypts_in_constant_memory(tmp_path: Path) -> None:
    # A fresh interpreter, because VmHWM (unlike ru_maxrss) starts afresh there and nothing the
    # test session allocated before can hide or inflate the figure.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(256 * 1024 * 1024), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    base, peak = map(int, done.stdout.split())
    growth_mib = (peak - base) / 2**20
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.1f} MiB over a 256 MiB stream"


def _salts_and_nonces(_: int) -> tuple[list[bytes], list[bytes]]:
    salts = [envelope.Encryptor(DEK, CONTEXT).header()[5:29] for _ in range(1000)]
    nonces = [aead.seal(DEK, b"k", b"")[:12] for _ in range(1000)]
    return salts, nonces


def test_forked_workers_never_repeat_a_salt_or_a_nonce() -> None:
    before = _salts_and_nonces(0)  # the parent's randomness is in use before it forks
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = [before, *pool.map(_salts_and_nonces, range(4)), _salts_and_nonces(0)]
    salts = [salt for salts, _ in results for salt in salts]
    nonces = [nonce for _, nonces in results for nonce in nonces]
    assert len(salts) == len(nonces) == 6000
    assert len(set(salts)) == 6000
    assert len(set(nonces)) == 6000


def _plaintext(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 4 * CHUNK + 40),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(0, 4 * CHUNK + 40), max_size=6),
    max_read=st.one_of(st.none(), st.integers(1, 3 * SEALED)),
)
def test_any_plaintext_cut_anyhow_round_trips(
    size: int, seed: int, cuts: list[int], max_read: int | None
) -> None:
    plaintext = _plaintext(seed, size)
    salt = random.Random(seed).randbytes(24)
    encryptor = envelope.Encryptor(DEK, CONTEXT, salt=salt)
    bounds = [0, *sorted(c for c in cuts if c <= size), size]
    blob = b"".join(encryptor.update(plaintext[a:b]) for a, b in itertools.pairwise(bounds))
    blob += encryptor.finalize()
    assert blob == envelope.encrypt(DEK, CONTEXT, plaintext, salt=salt)
    # A source that answers in short reads, as pipes and sockets do.
    assert b"".join(envelope.iter_decrypt(DEK, CONTEXT, CountingFile(blob, max_read))) == plaintext


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 5 * CHUNK + 40), seed=st.integers(0, 2**32), data=st.data())
def test_any_range_reads_exactly_its_bytes_and_only_its_chunks(
    size: int, seed: int, data: st.DataObject
) -> None:
    plaintext = _plaintext(seed, size)
    blob = envelope.encrypt(DEK, CONTEXT, plaintext)
    start = data.draw(st.integers(0, size), label="start")
    stop = data.draw(st.integers(start, size), label="stop")
    source = CountingFile(blob)
    reader = envelope.RandomAccessReader(DEK, CONTEXT, source)
    assert reader.plaintext_size == size
    source.reads.clear()
    assert reader.read_range(start, stop) == plaintext[start:stop]
    final = size // CHUNK
    covered = set(range(start // CHUNK, (stop - 1) // CHUNK + 1)) if stop > start else set()
    if stop == size:
        covered.add(final)
    expected = set().union(*(_chunk_span(len(blob), k) for k in covered)) if covered else set()
    assert source.bytes_read() == expected
