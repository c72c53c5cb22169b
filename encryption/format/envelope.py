"""Kodori blob format v1: a 5-byte Kodori header in front of a Cobblestone-256 message.

Byte layout of a stored blob (offsets from the start of the object)::

    offset            size    field
    0                 4       magic b"KDRB"
    4                 1       format version, 0x01
    5                 24      salt (random per blob)
    29                32      key commitment
    61 + k*16400      16400   chunk k (k < n-1): 16384 ciphertext bytes ‖ 16-byte GCM tag
    61 + (n-1)*16400  16..16399  final chunk: 0..16383 ciphertext bytes ‖ 16-byte GCM tag

Bytes 5 onwards are exactly a C2SP chunked-encryption message (c2sp.org/chunked-encryption,
Cobblestone-256: HKDF-Expand-SHA-512 key derivation, AES-256-GCM chunks under nonce
``base_nonce XOR k``, empty associated data; see :mod:`encryption.format.cobblestone`). The input key is
the blob's DEK and the context is :func:`blob_context`::

    b"kodori/blob/v1\\x00" ‖ tenant_id (8 bytes, big-endian, unsigned) ‖ blob_id (16 bytes, UUID)

The context is fixed-width after a NUL-terminated label, so no two (version, tenant, blob)
triples share an encoding. It binds the ciphertext to its format version, tenant and blob: a blob
copied to another tenant or blob id, or relabelled as another version, fails the commitment.

A plaintext of ``p`` bytes becomes ``61 + p + 16 * (p // 16384 + 1)`` bytes. Plaintext byte ``i`` is
in chunk ``i // 16384``, at stored offset ``61 + (i // 16384) * 16400 + i % 16384``.

Errors (see :mod:`encryption.format.errors`): fewer than 5 bytes or a wrong magic is
``MalformedHeader``; another version byte is ``UnknownFormatVersion``; everything else that is
wrong (key, context, salt, commitment, any chunk, the length) is ``NotAuthentic``, one type with
one message. A key that is not 32 bytes is ``ValueError``. Failed streams and readers keep
failing, and no byte of a chunk that did not authenticate is ever released.
"""

from __future__ import annotations

import io
import uuid

from encryption.format import cobblestone, cobblestone_read
from encryption.format.cobblestone import check_key
from encryption.format.cobblestone_read import RandomAccessReader as _RawReader
from encryption.format.cobblestone_read import Seekable, StreamDecryptor
from encryption.format.errors import EnvelopeError, MalformedHeader, NotAuthentic, UnknownFormatVersion
from encryption.format.streamio import Readable, Writable, fill

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "PREFIX_SIZE",
    "Encryptor",
    "EnvelopeError",
    "MalformedHeader",
    "NotAuthentic",
    "RandomAccessReader",
    "StreamDecryptor",
    "UnknownFormatVersion",
    "blob_context",
    "ciphertext_size",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "iter_decrypt",
    "parse_prefix",
    "plaintext_size",
]

MAGIC = b"KDRB"
FORMAT_VERSION = 1
PREFIX = MAGIC + bytes([FORMAT_VERSION])
PREFIX_SIZE = len(PREFIX)
HEADER_SIZE = PREFIX_SIZE + cobblestone.HEADER_SIZE
MAX_PLAINTEXT_SIZE = cobblestone.MAX_PLAINTEXT_SIZE

_CONTEXT_LABEL = b"kodori/blob/v1\x00"
_MAX_TENANT_ID = (1 << 64) - 1


def blob_context(tenant_id: int, blob_id: uuid.UUID) -> bytes:
    """The Cobblestone context of a v1 blob: label ‖ tenant id (u64 BE) ‖ blob UUID (16 bytes)."""
    if isinstance(tenant_id, bool) or not 0 <= tenant_id <= _MAX_TENANT_ID:
        raise ValueError(f"tenant id must be an integer in 0..2^64-1, got {tenant_id!r}")
    if not isinstance(blob_id, uuid.UUID):
        raise TypeError(f"blob id must be a uuid.UUID, got {type(blob_id).__name__}")
    return _CONTEXT_LABEL + tenant_id.to_bytes(8, "big") + blob_id.bytes


def parse_prefix(data: bytes) -> int:
    """Check the first 5 bytes of a blob; return its format version (always 1 today)."""
    if len(data) < PREFIX_SIZE or data[: len(MAGIC)] != MAGIC:
        raise MalformedHeader("not a Kodori blob: missing or wrong magic")
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise UnknownFormatVersion(version)
    return version


def _read_prefix(source: Readable) -> None:
    prefix = bytearray(PREFIX_SIZE)
    got = fill(source, memoryview(prefix))
    parse_prefix(bytes(prefix[:got]))


def ciphertext_size(plaintext_size: int) -> int:
    """Stored size of a v1 blob holding ``plaintext_size`` bytes."""
    return PREFIX_SIZE + cobblestone.ciphertext_size(plaintext_size)


def plaintext_size(ciphertext_size: int) -> int:
    """Plaintext size of a stored v1 blob of ``ciphertext_size`` bytes.

    MalformedHeader if it cannot even hold the Kodori header; NotAuthentic if no v1 blob has
    this size (the same answer its decryption would give).
    """
    if ciphertext_size < PREFIX_SIZE:
        raise MalformedHeader("not a Kodori blob: shorter than its header")
    return cobblestone.plaintext_size(ciphertext_size - PREFIX_SIZE)


class Encryptor(cobblestone.Encryptor):
    """Push-style v1 blob encryptor for upload handlers that receive pieces of any size.

    ``header()`` returns magic, version, salt and commitment (61 bytes); if it is not called,
    the first ``update()``/``finalize()`` output starts with it. ``update(data)`` returns the
    ciphertext of every 16 KiB chunk completed so far; ``finalize()`` returns the final chunk.
    ``plaintext_size``/``ciphertext_size`` count bytes accepted and handed out. ``salt`` is for
    tests only: production blobs always take a fresh random salt.
    """

    def __init__(self, dek: bytes, context: bytes, *, salt: bytes | None = None) -> None:
        super().__init__(dek, context, salt=salt, prefix=PREFIX)


def encrypt_stream(
    dek: bytes, context: bytes, source: Readable, sink: Writable, *, salt: bytes | None = None
) -> int:
    """Encrypt everything ``source`` yields into ``sink`` as a v1 blob, in constant memory.

    Returns the plaintext size; the stored size is ``ciphertext_size()`` of it.
    """
    return Encryptor(dek, context, salt=salt).encrypt_stream(source, sink)


def iter_decrypt(dek: bytes, context: bytes, source: Readable) -> StreamDecryptor:
    """Check a v1 blob's header and return an iterator of its authenticated plaintext.

    The header, key and context are checked before this returns (MalformedHeader,
    UnknownFormatVersion, NotAuthentic), so a download can fail before it starts. The iterator
    yields about 1 MiB at a time, each piece made only of authenticated chunks; it raises
    NotAuthentic on the first forged, missing, reordered or extra chunk and on every later call.
    """
    check_key(dek)
    _read_prefix(source)
    return cobblestone_read.iter_decrypt(dek, context, source)


def decrypt_stream(dek: bytes, context: bytes, source: Readable, sink: Writable) -> int:
    """Decrypt a v1 blob from ``source`` into ``sink``; return the plaintext size.

    On failure the sink may hold an authenticated prefix; write to a temporary place and discard
    it on error where all-or-nothing matters.
    """
    check_key(dek)
    _read_prefix(source)
    return cobblestone_read.decrypt_stream(dek, context, source, sink)


class RandomAccessReader(_RawReader):
    """Random access to a stored v1 blob in a seekable source (HTTP Range downloads).

    ``ciphertext_size`` is the stored size if known (else found by seeking to the end).
    ``plaintext_size`` is derived from it and is authenticated by ``authenticate_length()`` or
    by any ``iter_range(start, stop)`` whose ``stop`` is the end. ``iter_range`` reads and opens
    only the chunks that cover ``[start, stop)``. Not thread-safe; after a failure every call
    raises NotAuthentic.
    """

    def __init__(
        self, dek: bytes, context: bytes, source: Seekable, ciphertext_size: int | None = None
    ) -> None:
        check_key(dek)
        if ciphertext_size is None:
            ciphertext_size = source.seek(0, 2)
        if ciphertext_size < PREFIX_SIZE:
            raise MalformedHeader("not a Kodori blob: shorter than its header")
        source.seek(0)
        _read_prefix(source)
        super().__init__(dek, context, source, ciphertext_size - PREFIX_SIZE, offset=PREFIX_SIZE)


def encrypt(dek: bytes, context: bytes, plaintext: bytes, *, salt: bytes | None = None) -> bytes:
    """Encrypt a small in-memory plaintext as a v1 blob (tests, fixtures, small objects)."""
    encryptor = Encryptor(dek, context, salt=salt)
    return encryptor.update(plaintext) + encryptor.finalize()


def decrypt(dek: bytes, context: bytes, blob: bytes) -> bytes:
    """Decrypt a small in-memory v1 blob; all-or-nothing."""
    return b"".join(iter_decrypt(dek, context, io.BytesIO(blob)))
