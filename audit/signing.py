"""Ed25519 signatures with the deployment's audit key: over chain checkpoints, and over signed documents
(erasure certificates, audit purge records) that an auditor verifies offline with ``verify_audit_bundle.py``.

``settings.AUDIT_SIGNING_KEY`` is the base64 of a raw 32-byte Ed25519 private key (``manage.py
generate_audit_signing_key`` prints one). Production must set it; elsewhere an empty value means a development
key derived from ``SECRET_KEY`` (stable per checkout, never secret). Public keys of retired signing keys go in
``AUDIT_PREVIOUS_PUBLIC_KEYS`` so checkpoints they signed still verify after a rotation (docs/audit.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .encoding import format_time
from .verify_bundle import (
    DOCUMENT_FORMAT,
    DOCUMENT_VERSION,
    SIGNATURE_ALGORITHM,
    SIGNED_DOCUMENT_KINDS,
    BundleError,
    DocumentRejected,
    canonical_json,
    checkpoint_message,
    document_message,
    json_value_problem,
    key_id,
    parse_document,
)

if TYPE_CHECKING:
    from .models import Checkpoint

_DEV_DERIVATION_LABEL = b"kodori development audit signing key v1\x00"


def private_key_bytes() -> bytes:
    """The raw private key from settings, or the development key derived from ``SECRET_KEY``."""
    text = getattr(settings, "AUDIT_SIGNING_KEY", "")
    if not text:
        if getattr(settings, "PRODUCTION", False):
            raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be set when DJANGO_ENV=production")
        return hashlib.sha256(_DEV_DERIVATION_LABEL + settings.SECRET_KEY.encode()).digest()
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ImproperlyConfigured(
            "AUDIT_SIGNING_KEY must be the base64 of a raw 32-byte Ed25519 private key"
        )
    return raw


@lru_cache(maxsize=4)
def _keypair(raw: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(raw)
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key() -> bytes:
    return _keypair(private_key_bytes())[1]


def public_key_b64() -> str:
    return base64.b64encode(public_key()).decode()


def current_key_id() -> str:
    return key_id(public_key())


def trusted_public_keys() -> dict[str, bytes]:
    """Key id → raw public key, for the current key and every retired one named in settings."""
    keys = {current_key_id(): public_key()}
    for text in getattr(settings, "AUDIT_PREVIOUS_PUBLIC_KEYS", []):
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImproperlyConfigured(
                f"AUDIT_PREVIOUS_PUBLIC_KEYS holds a value that is not base64: {text!r}"
            ) from exc
        if len(raw) != 32:
            raise ImproperlyConfigured(
                f"AUDIT_PREVIOUS_PUBLIC_KEYS holds a value that is not a public key: {text!r}"
            )
        keys[key_id(raw)] = raw
    return keys


def sign(tenant_id: int, seq: int, hash_: str, signed_at: str) -> tuple[str, str, str]:
    """Sign a checkpoint; returns (key id, base64 public key, base64 signature)."""
    private, public = _keypair(private_key_bytes())
    signature = private.sign(checkpoint_message(tenant_id, seq, hash_, signed_at))
    return key_id(public), base64.b64encode(public).decode(), base64.b64encode(signature).decode()


class SignatureChecker:
    """Checks checkpoint signatures against the keys Kodori trusts, each key parsed once for a whole batch."""

    def __init__(self) -> None:
        trusted = trusted_public_keys().items()
        self._keys = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in trusted}

    def valid(
        self, tenant_id: int, seq: int, hash_: str, signed_at: str, key_id: str, signature: str
    ) -> bool:
        """True when ``signature`` (base64) is by the trusted key ``key_id``, not by whatever key it names."""
        public = self._keys.get(key_id)
        if public is None:
            return False
        try:
            public.verify(base64.b64decode(signature), checkpoint_message(tenant_id, seq, hash_, signed_at))
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True

    def checkpoint(self, cp: Checkpoint) -> bool:
        return self.valid(cp.tenant_id, cp.seq, cp.hash, format_time(cp.signed_at), cp.key_id, cp.signature)


def verify_checkpoint(checkpoint: Checkpoint) -> bool:
    """True when ``checkpoint`` carries a valid signature by a key Kodori trusts (not the one it names)."""
    return SignatureChecker().checkpoint(checkpoint)


def sign_document(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` signed as a ``kind`` with the current deployment key: the whole signed object.

    The format (``audit.verify_bundle``'s docstring defines it) is ``{"format": "kodori-signed-document",
    "v": 1, "kind", "document", "signature": {"algorithm": "Ed25519", "key_id", "public_key", "value"}}``.
    Raises ValueError for an unknown kind, and for content without one canonical encoding: a float anywhere,
    a key that is not a string, a value JSON has no type for. The ``document`` returned is a copy of exactly
    what was signed, so changing the caller's dict afterwards cannot change it.
    """
    if kind not in SIGNED_DOCUMENT_KINDS:
        raise ValueError(f"unknown signed document kind {kind!r} (known: {', '.join(SIGNED_DOCUMENT_KINDS)})")
    if not isinstance(document, dict):
        raise ValueError(f"a signed document's content is a dict, not {type(document).__name__}")
    problem = json_value_problem(document)
    if problem is not None:
        raise ValueError(f"cannot sign this {kind}: {problem}")
    content = json.loads(canonical_json(document))
    private, public = _keypair(private_key_bytes())
    signature = private.sign(document_message(kind, content))
    return {
        "format": DOCUMENT_FORMAT,
        "v": DOCUMENT_VERSION,
        "kind": kind,
        "document": content,
        "signature": {
            "algorithm": SIGNATURE_ALGORITHM,
            "key_id": key_id(public),
            "public_key": base64.b64encode(public).decode(),
            "value": base64.b64encode(signature).decode(),
        },
    }


def document_signature_valid(signed: Mapping[str, Any]) -> bool:
    """True when ``signed`` is a well-formed signed document whose signature is by a key Kodori trusts
    (``trusted_public_keys()``), not merely by whatever key it names. The offline verifier's rules apply."""
    try:
        parsed = parse_document(signed)
    except (BundleError, DocumentRejected):
        return False
    public = trusted_public_keys().get(parsed.key_id)
    if public is None or public != parsed.public_key:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(parsed.signature, parsed.message)
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_private_key() -> tuple[str, str]:
    """A fresh (base64 private key, base64 public key) pair for AUDIT_SIGNING_KEY."""
    private = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(public).decode()
