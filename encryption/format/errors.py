"""Errors raised by Kodori's cryptographic formats (blob envelope and key wrapping).

The hierarchy is deliberately small. Everything that means "these bytes were not produced by
someone holding this key for this context" is one type, :class:`NotAuthentic`, with one fixed
message: a wrong key, a wrong tenant or blob id, a flipped bit, a dropped, duplicated, reordered
or swapped chunk, a truncated or extended blob all look the same to the caller, so an attacker
learns nothing from which error came back (no padding-oracle style side channel).

Only problems with the public, unauthenticated framing get their own types, because they are
not secrets and an operator needs to tell them apart: :class:`MalformedHeader` (these bytes are
not a Kodori blob at all) and :class:`UnknownFormatVersion` (a blob from a newer Kodori).

Programming errors (a key of the wrong size, a nonce of the wrong size, an out-of-range read)
are ``ValueError``, never an ``EnvelopeError``, so they cannot be mistaken for bad data.
"""

from __future__ import annotations

__all__ = ["EnvelopeError", "MalformedHeader", "NotAuthentic", "UnknownFormatVersion"]


class EnvelopeError(Exception):
    """Base class for every failure to read a Kodori ciphertext."""


class NotAuthentic(EnvelopeError):
    """The ciphertext does not authenticate under this key and context.

    Always raised with the same message, whatever the cause, so that the error itself is not an
    oracle. Streams and readers that raised it keep raising it.
    """

    MESSAGE = "ciphertext is not authentic for this key and context"

    def __init__(self, message: str | None = None) -> None:
        # The argument exists only so that pickling (multiprocessing, Celery) round-trips;
        # the message is always the fixed one.
        super().__init__(self.MESSAGE)


class MalformedHeader(EnvelopeError):
    """The bytes do not start with a Kodori header (wrong magic, or too short to hold one)."""


class UnknownFormatVersion(EnvelopeError):
    """The header names a blob format version this code does not know."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unknown blob format version {version}")
        self.version = version

    def __reduce__(self) -> tuple[type[UnknownFormatVersion], tuple[int]]:
        return (type(self), (self.version,))
