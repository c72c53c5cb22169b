"""C2SP chunked encryption instantiated as Cobblestone-256 (c2sp.org/chunked-encryption), raw.

This module is the published scheme and nothing else: no Kodori header, no Django. Kodori's blob
framing lives in :mod:`encryption.format.envelope`; this layer is what Wycheproof's official vectors
(``c2sp_chunked_encryption_aes_256_gcm_test.json``) exercise byte for byte.

Key derivation, once per message::

    key (32) ‖ base_nonce (12) ‖ commitment (32) = HKDF-Expand-SHA-512(
        prk  = input key (32 bytes),
        info = b"c2sp.org/chunked-encryption@v1+" ‖ b"AEAD_AES_256_GCM" ‖ 0x00 ‖ salt ‖ context,
        L    = 76)

Ciphertext layout (offsets from the start of the raw message)::

    0        salt          24 bytes, random per message
    24       commitment    32 bytes, checked (constant time) before any chunk is opened
    56       chunk 0       AES-256-GCM(key, base_nonce XOR 0, chunk plaintext, aad = b"")
    56+16400 chunk 1       ...
    56+k*16400  chunk k    ciphertext ‖ 16-byte tag

Every chunk but the last holds exactly 16,384 plaintext bytes (16,400 sealed). The last chunk holds
0 to 16,383 bytes, so it is always shorter: an empty message is one empty chunk, a 16,384-byte
message is one full chunk and one empty chunk. The nonce of chunk ``k`` is ``base_nonce`` XOR ``k``
written big-endian over all 12 bytes. Plaintext byte ``i`` lives in chunk ``i // 16384``.

Because full chunks are never last, the length of the ciphertext alone fixes where every chunk
starts and which one is final; authenticating the final chunk (at the index its position implies)
therefore authenticates the message length. A trailing piece of exactly 16,400 bytes means the
real final chunk was cut off; a trailing piece shorter than a tag is malformed; more than 2^38
chunks are refused. All of these, like every failed tag or commitment, raise
:class:`~encryption.format.errors.NotAuthentic`.

Decryption lives in :mod:`encryption.format.cobblestone_read`.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from encryption.format.errors import NotAuthentic
from encryption.format.streamio import Readable, Writable, buffer, fill, write_all

__all__ = [
    "CHUNK_SIZE",
    "COMMITMENT_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_CHUNKS",
    "MAX_PLAINTEXT_SIZE",
    "NONCE_SIZE",
    "SALT_SIZE",
    "SEALED_CHUNK_SIZE",
    "TAG_SIZE",
    "ChunkCipher",
    "Encryptor",
    "check_key",
    "ciphertext_size",
    "derive_message_keys",
    "encrypt_stream",
    "plaintext_size",
]

KEY_SIZE = 32
SALT_SIZE = 24
COMMITMENT_SIZE = 32
HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE
NONCE_SIZE = 12
TAG_SIZE = 16
CHUNK_SIZE = 16 * 1024
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
MAX_CHUNKS = 1 << 38
MAX_PLAINTEXT_SIZE = MAX_CHUNKS * CHUNK_SIZE - 1

_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+" + b"AEAD_AES_256_GCM" + b"\x00"
_DERIVED_SIZE = KEY_SIZE + NONCE_SIZE + COMMITMENT_SIZE

# Chunks handled per read/write in the stream paths: 1 MiB of plaintext. Large enough that the
# per-call Python overhead disappears next to AES-GCM, small enough for constant, modest memory.
BATCH_CHUNKS = 64
# Streams start with a small batch so that small blobs do not pay for megabyte buffers.
FIRST_BATCH_CHUNKS = 4


def check_key(key: bytes) -> bytes:
    """Return ``key`` as bytes, or raise ValueError unless it is exactly 32 bytes."""
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {len(key)}")
    return key


def derive_message_keys(key: bytes, salt: bytes, context: bytes) -> tuple[bytes, bytes, bytes]:
    """Derive (AES key, base nonce, commitment) for one message, as the specification says."""
    key = check_key(key)
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    info = _INFO_PREFIX + bytes(salt) + bytes(context)
    okm = HKDFExpand(hashes.SHA512(), _DERIVED_SIZE, info).derive(key)
    return okm[:KEY_SIZE], okm[KEY_SIZE : KEY_SIZE + NONCE_SIZE], okm[KEY_SIZE + NONCE_SIZE :]


def ciphertext_size(plaintext_size: int) -> int:
    """Size of the raw ciphertext (salt, commitment, chunks) for a plaintext of this size."""
    if not 0 <= plaintext_size <= MAX_PLAINTEXT_SIZE:
        raise ValueError(f"plaintext size {plaintext_size} is outside 0..{MAX_PLAINTEXT_SIZE}")
    full, last = divmod(plaintext_size, CHUNK_SIZE)
    return HEADER_SIZE + full * SEALED_CHUNK_SIZE + last + TAG_SIZE


def plaintext_size(ciphertext_size: int) -> int:
    """Plaintext size implied by a raw ciphertext size; NotAuthentic if no message has that size.

    The size is only a claim until the final chunk has been authenticated.
    """
    if ciphertext_size < 0:
        raise ValueError("ciphertext size cannot be negative")
    full, last = divmod(ciphertext_size - HEADER_SIZE, SEALED_CHUNK_SIZE)
    # last < TAG_SIZE covers three cases at once: shorter than the header, a final piece too
    # short to hold a tag, and last == 0 (the final chunk would be a full one: truncation).
    if ciphertext_size < HEADER_SIZE + TAG_SIZE or last < TAG_SIZE or full + 1 > MAX_CHUNKS:
        raise NotAuthentic()
    return full * CHUNK_SIZE + last - TAG_SIZE


class ChunkCipher:
    """AES-256-GCM over the chunks of one message: chunk ``k`` uses nonce ``base_nonce XOR k``.

    It writes into caller-owned buffers (``encrypt_into``/``decrypt_into``) so the hot loops
    allocate nothing but the 12-byte nonce per chunk. ``open_full`` keeps the per-chunk views of
    the buffers it was recently given: readers pass the same buffers batch after batch, and
    slicing two memoryviews per chunk was a sixth of the cost of opening it.
    """

    __slots__ = ("_aead", "_base", "_views")

    def __init__(self, aead_key: bytes, base_nonce: bytes) -> None:
        if len(aead_key) != KEY_SIZE:
            raise ValueError(f"AEAD key must be {KEY_SIZE} bytes, got {len(aead_key)}")
        if len(base_nonce) != NONCE_SIZE:
            raise ValueError(f"base nonce must be {NONCE_SIZE} bytes, got {len(base_nonce)}")
        self._aead = AESGCM(bytes(aead_key))
        self._base = int.from_bytes(base_nonce, "big")
        # (id(buffer), view size) -> (buffer, its views): the buffers recently opened from or into.
        self._views: dict[tuple[int, int], tuple[memoryview, list[memoryview]]] = {}

    def nonce(self, index: int) -> bytes:
        """The nonce of chunk ``index``."""
        if not 0 <= index < MAX_CHUNKS:
            raise ValueError("chunk index out of range")
        return (self._base ^ index).to_bytes(NONCE_SIZE, "big")

    def seal_full(self, first_index: int, src: memoryview, count: int, dst: memoryview) -> None:
        """Seal ``count`` full chunks from ``src`` into ``dst`` (``count * 16400`` bytes)."""
        if first_index + count >= MAX_CHUNKS:
            # Full chunks must leave room for the final chunk under the 2^38 limit.
            raise ValueError("message too long: more than 2^38 chunks")
        seal = self._aead.encrypt_into
        base = self._base
        s = d = 0
        for index in range(first_index, first_index + count):
            nonce = (base ^ index).to_bytes(NONCE_SIZE, "big")
            seal(nonce, src[s : s + CHUNK_SIZE], b"", dst[d : d + SEALED_CHUNK_SIZE])
            s += CHUNK_SIZE
            d += SEALED_CHUNK_SIZE

    def seal_one(self, index: int, src: memoryview, dst: memoryview) -> None:
        """Seal one chunk of ``len(src)`` bytes into ``dst`` (``len(src) + 16`` bytes)."""
        self._aead.encrypt_into(self.nonce(index), src, b"", dst)

    def open_full(self, first_index: int, src: memoryview, count: int, dst: memoryview) -> int:
        """Open up to ``count`` full chunks; return how many authenticated, in order.

        On the first failure the plaintext that chunk's ``decrypt_into`` already wrote is wiped,
        so unauthenticated bytes never sit in a buffer a caller could see.
        """
        if first_index + count > MAX_CHUNKS:
            count = max(0, MAX_CHUNKS - first_index)
        sources, targets = self._chunk_views(src, dst)
        if count > min(len(sources), len(targets)):
            raise ValueError(f"{count} chunks do not fit the buffers given")
        open_ = self._aead.decrypt_into
        base = self._base
        index = first_index
        for source, target in zip(sources[:count], targets, strict=False):
            try:
                open_((base ^ index).to_bytes(NONCE_SIZE, "big"), source, b"", target)
            except InvalidTag:
                target[:] = bytes(CHUNK_SIZE)
                return index - first_index
            index += 1
        return count

    def _chunk_views(self, src: memoryview, dst: memoryview) -> tuple[list[memoryview], list[memoryview]]:
        """The sealed-chunk views of ``src`` and the chunk views of ``dst``, built once per buffer."""
        return self._views_of(src, SEALED_CHUNK_SIZE), self._views_of(dst, CHUNK_SIZE)

    def _views_of(self, buf: memoryview, size: int) -> list[memoryview]:
        entry = self._views.get((id(buf), size))
        if entry is None or entry[0] is not buf:  # the entry holds its buffer, so its id is not reused
            if len(self._views) >= 32:
                self._views.clear()
            entry = self._views[id(buf), size] = (
                buf,
                [buf[i : i + size] for i in range(0, len(buf) - size + 1, size)],
            )
        return entry[1]

    def open_one(self, index: int, src: memoryview, dst: memoryview) -> bool:
        """Open one chunk (``len(src) >= 16``) into ``dst``; False, with ``dst`` wiped, if forged."""
        if not 0 <= index < MAX_CHUNKS or len(src) < TAG_SIZE:
            return False
        try:
            self._aead.decrypt_into(self.nonce(index), src, b"", dst)
        except InvalidTag:
            dst[:] = bytes(len(dst))
            return False
        return True


class Encryptor:
    """Push-style encryptor: feed plaintext pieces of any size, collect ciphertext as it forms.

    ``update`` returns the sealed form of every chunk that became complete (a full 16 KiB chunk
    is never the final one, so nothing has to be held back beyond a partial chunk of < 16 KiB);
    ``finalize`` seals the remainder as the always-shorter final chunk. The header (any
    ``prefix``, salt, commitment) comes from ``header()`` or, if that was not called, in front of
    the first output. The salt is random; injecting one is for test vectors only.
    """

    def __init__(self, key: bytes, context: bytes, *, salt: bytes | None = None, prefix: bytes = b"") -> None:
        key = check_key(key)
        if salt is None:
            # os.urandom reads the kernel CSPRNG on every call: no user-space state that a
            # fork could duplicate, so forked workers never share a salt.
            salt = os.urandom(SALT_SIZE)
        aead_key, base_nonce, commitment = derive_message_keys(key, salt, context)
        self._cipher = ChunkCipher(aead_key, base_nonce)
        self._header: bytes | None = bytes(prefix) + bytes(salt) + commitment
        self._pending = bytearray()
        self._scratch: memoryview | None = None
        self._index = 0
        self._finished = False
        self._plaintext_size = 0
        self._ciphertext_size = 0

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes accepted so far."""
        return self._plaintext_size

    @property
    def ciphertext_size(self) -> int:
        """Ciphertext bytes handed out so far (header included)."""
        return self._ciphertext_size

    def header(self) -> bytes:
        """Return the header (prefix, salt, commitment); it is then not repeated by ``update``."""
        header = self._take_header()
        if header is None:
            raise RuntimeError("the header was already emitted")
        self._ciphertext_size += len(header)
        return header

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Accept more plaintext; return the ciphertext of every chunk it completed."""
        self._check_open()
        view = memoryview(data).cast("B")
        accepted = len(view)
        if self._index + (len(self._pending) + accepted) // CHUNK_SIZE >= MAX_CHUNKS:
            raise ValueError("message too long: more than 2^38 chunks")
        header = self._take_header() or b""
        # Chunks are sealed into one long-lived scratch buffer and copied out once: a fresh
        # megabyte-sized bytearray per call is given back to the OS on free and page-faults
        # in again on the next call, which cost two thirds of the throughput.
        needed = len(header) + (len(self._pending) + accepted) // CHUNK_SIZE * SEALED_CHUNK_SIZE
        scratch = self._scratch_view(needed)
        scratch[: len(header)] = header
        used = len(header)
        if self._pending and len(self._pending) + accepted >= CHUNK_SIZE:
            take = CHUNK_SIZE - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            with memoryview(self._pending) as pending:
                self._cipher.seal_full(self._index, pending, 1, scratch[used:])
            self._pending.clear()
            self._index += 1
            used += SEALED_CHUNK_SIZE
        count = len(view) // CHUNK_SIZE
        self._cipher.seal_full(self._index, view, count, scratch[used:])
        self._index += count
        used += count * SEALED_CHUNK_SIZE
        self._pending += view[count * CHUNK_SIZE :]
        out = bytes(scratch[:used])
        self._plaintext_size += accepted
        self._ciphertext_size += len(out)
        return out

    def finalize(self) -> bytes:
        """Seal the final (short, possibly empty) chunk; return it with any unsent header."""
        self._check_open()
        self._finished = True
        header = self._take_header() or b""
        out = bytearray(len(header) + len(self._pending) + TAG_SIZE)
        out[: len(header)] = header
        self._cipher.seal_one(self._index, memoryview(self._pending), memoryview(out)[len(header) :])
        self._pending.clear()
        self._ciphertext_size += len(out)
        return bytes(out)

    def encrypt_stream(self, source: Readable, sink: Writable) -> int:
        """Encrypt all of ``source`` into ``sink`` in constant memory; return the plaintext size.

        The fast path behind :func:`encrypt_stream`: one pair of reused buffers, no per-chunk
        allocation beyond the nonce. Only valid on a fresh encryptor.
        """
        if self._index or self._pending or self._finished:
            raise RuntimeError("encrypt_stream needs a fresh encryptor")
        header = self._take_header()
        if header is not None:
            write_all(sink, memoryview(header))
            self._ciphertext_size += len(header)
        # Small first: most blobs are small; the first full buffer switches to the large batch.
        src, dst = buffer(FIRST_BATCH_CHUNKS * CHUNK_SIZE), buffer(FIRST_BATCH_CHUNKS * SEALED_CHUNK_SIZE)
        cipher = self._cipher
        while True:
            got = fill(source, src)
            full, last = divmod(got, CHUNK_SIZE)
            cipher.seal_full(self._index, src, full, dst)
            self._index += full
            out = full * SEALED_CHUNK_SIZE
            if got == len(src):
                # A full buffer says nothing about the end: the final chunk comes next round,
                # possibly empty.
                write_all(sink, dst[:out])
                self._plaintext_size += got
                self._ciphertext_size += out
                if len(src) < BATCH_CHUNKS * CHUNK_SIZE:
                    src, dst = buffer(BATCH_CHUNKS * CHUNK_SIZE), buffer(BATCH_CHUNKS * SEALED_CHUNK_SIZE)
                continue
            cipher.seal_one(self._index, src[got - last : got], dst[out : out + last + TAG_SIZE])
            out += last + TAG_SIZE
            write_all(sink, dst[:out])
            self._plaintext_size += got
            self._ciphertext_size += out
            self._finished = True
            return self._plaintext_size

    def _scratch_view(self, size: int) -> memoryview:
        """A reused buffer of at least ``size`` bytes: it grows to the largest piece seen."""
        if self._scratch is None or len(self._scratch) < size:
            self._scratch = buffer(max(size, FIRST_BATCH_CHUNKS * SEALED_CHUNK_SIZE + 256))
        return self._scratch

    def _take_header(self) -> bytes | None:
        # The caller that emits the header counts it in ciphertext_size.
        header, self._header = self._header, None
        return header

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("the encryptor was already finalized")


def encrypt_stream(
    key: bytes,
    context: bytes,
    source: Readable,
    sink: Writable,
    *,
    salt: bytes | None = None,
    prefix: bytes = b"",
) -> int:
    """Encrypt ``source`` to ``sink`` as one raw message; return the plaintext size."""
    return Encryptor(key, context, salt=salt, prefix=prefix).encrypt_stream(source, sink)
