"""The wrap primitive: AES-256-GCM with a random 96-bit nonce, for DEKs and TKVs.

Layout of a sealed value::

    nonce (12 bytes, random) ‖ ciphertext (len(plaintext) bytes) ‖ tag (16 bytes)

The associated data is not stored: the caller passes it to both ``seal`` and ``open`` and it must
bind what the wrapped key belongs to (tenant, blob, key version), so a wrapped DEK copied onto
another row does not open. Random 96-bit nonces are safe far beyond Kodori's volumes under one
wrapping key (NIST SP 800-38D's 2^32 invocation bound); they come from ``os.urandom``, which has
no user-space state a ``fork`` could duplicate.

Every authentication failure, whatever its cause (wrong key, wrong associated data, a flipped bit,
a truncated value), raises :class:`~encryption.format.errors.NotAuthentic` with one fixed message. A key
that is not 32 bytes, or an explicit nonce that is not 12 bytes, is a ``ValueError``: pyca's
AESGCM accepts other nonce lengths, which Kodori never wants.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from encryption.format.errors import NotAuthentic

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "Rewrapper",
    "open",
    "open_with_nonce",
    "seal",
    "seal_with_nonce",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


def _aead(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {len(key)}")
    return AESGCM(bytes(key))


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")


def seal_with_nonce(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a caller-chosen 12-byte nonce; returns ciphertext ‖ tag.

    For test vectors and for formats that derive their nonces; everything else uses ``seal``.
    """
    aead = _aead(key)
    _check_nonce(nonce)
    return aead.encrypt(nonce, plaintext, aad)


def open_with_nonce(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`seal_with_nonce`; NotAuthentic unless the tag verifies."""
    aead = _aead(key)
    _check_nonce(nonce)
    if len(ciphertext) < TAG_SIZE:
        raise NotAuthentic()
    try:
        return aead.decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise NotAuthentic() from None


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt under a fresh random nonce; returns nonce ‖ ciphertext ‖ tag."""
    aead = _aead(key)
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Open a value made by :func:`seal`; NotAuthentic for any forgery or truncation."""
    aead = _aead(key)
    if len(sealed) < OVERHEAD:
        raise NotAuthentic()
    try:
        return aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
    except InvalidTag:
        raise NotAuthentic() from None


class Rewrapper:
    """Opens values sealed under one key and seals them again under another: the re-wrap walk's inner loop.

    One cipher object per key for a whole batch (building one costs about as much as a 60-byte seal). The
    plaintext only ever lives in a local of :meth:`rewrap`.
    """

    def __init__(self, old_key: bytes, new_key: bytes) -> None:
        self._old = _aead(old_key)
        self._new = _aead(new_key)

    def __repr__(self) -> str:
        return "<Rewrapper>"

    def rewrap(self, sealed: bytes, old_aad: bytes, new_aad: bytes) -> bytes:
        """``sealed`` (made by :func:`seal` under the old key and ``old_aad``) sealed under the new key."""
        if len(sealed) < OVERHEAD:
            raise NotAuthentic()
        try:
            plaintext = self._old.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], old_aad)
        except InvalidTag:
            raise NotAuthentic() from None
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._new.encrypt(nonce, plaintext, new_aad)

    def rewrap_many(self, items: list[tuple[bytes, bytes, bytes]]) -> list[bytes | None]:
        """:meth:`rewrap` of each ``(sealed, old_aad, new_aad)``; None where one does not authenticate. The
        walk's loop: one call to the random source for all the nonces, no per-item method call."""
        nonces = os.urandom(NONCE_SIZE * len(items))
        decrypt, encrypt = self._old.decrypt, self._new.encrypt
        out: list[bytes | None] = []
        append = out.append
        for i, (sealed, old_aad, new_aad) in enumerate(items):
            try:
                if len(sealed) < OVERHEAD:
                    raise InvalidTag()
                plaintext = decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], old_aad)
            except InvalidTag:
                append(None)
                continue
            nonce = nonces[i * NONCE_SIZE : (i + 1) * NONCE_SIZE]
            append(nonce + encrypt(nonce, plaintext, new_aad))
        return out
