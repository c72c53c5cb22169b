"""The kodori-managed KEK (wrap method ``global``): derived per tenant from the deployment's ``AUTH_SECRET``.

``KEK_t = HKDF-SHA256(ikm=AUTH_SECRET, salt="kodori/global-kek/v1", info=tenant id)``. A wrapped value is::

    "KG1" (3 bytes) ‖ fingerprint (8 bytes) ‖ nonce (12) ‖ ciphertext (32) ‖ tag (16)

where ``fingerprint`` = the first 8 bytes of HMAC-SHA256(KEK_t, "fingerprint") names which secret wrapped it,
so during an ``AUTH_SECRET`` rotation unwrap goes straight to the right one of ``AUTH_SECRET`` and
``AUTH_SECRET_FALLBACKS`` instead of trying each. The fingerprint reveals nothing about the key beyond
equality.
"""

from __future__ import annotations

import hmac
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from encryption import aead
from encryption.format.errors import NotAuthentic

from .base import FailureKind, KeyContext, KeyProvider, ProviderError

MAGIC = b"KG1"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MAGIC) + FINGERPRINT_SIZE


@sensitive_variables("secret", "kek")
def derive_kek(secret: str, tenant_id: int) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"kodori/global-kek/v1",
        info=b"tenant:" + tenant_id.to_bytes(8, "big"),
    ).derive(secret.encode())


@sensitive_variables("kek")
def fingerprint(kek: bytes) -> bytes:
    return hmac.new(kek, b"fingerprint", sha256).digest()[:FINGERPRINT_SIZE]


class GlobalKeyProvider(KeyProvider):
    """Wraps under the tenant's KEK derived from ``AUTH_SECRET``; unwraps under it or a fallback secret."""

    def __init__(self, tenant_id: int) -> None:
        self.tenant_id = tenant_id

    def _keks(self) -> list[bytes]:
        secrets = [settings.AUTH_SECRET, *settings.AUTH_SECRET_FALLBACKS]
        return [derive_kek(secret, self.tenant_id) for secret in secrets]

    def _check_context(self, context: KeyContext) -> None:
        if context.tenant_id != self.tenant_id:
            raise ProviderError(FailureKind.INTEGRITY, "The key context names another tenant.")

    @sensitive_variables("plaintext", "kek")
    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        self._check_context(context)
        kek = self._keks()[0]
        return MAGIC + fingerprint(kek) + aead.seal(kek, plaintext, context.as_bytes())

    @sensitive_variables("kek")
    def unwrap(self, ciphertext: bytes, context: KeyContext) -> bytes:
        self._check_context(context)
        if ciphertext[: len(MAGIC)] != MAGIC or len(ciphertext) < HEADER_SIZE + aead.OVERHEAD:
            raise ProviderError(FailureKind.INTEGRITY, "This is not a value wrapped by a kodori-managed key.")
        wanted = ciphertext[len(MAGIC) : HEADER_SIZE]
        for kek in self._keks():
            if hmac.compare_digest(fingerprint(kek), wanted):
                try:
                    return aead.open(kek, ciphertext[HEADER_SIZE:], context.as_bytes())
                except NotAuthentic:
                    raise ProviderError(
                        FailureKind.INTEGRITY, "The wrapped key does not match its tenant or key version."
                    ) from None
        raise ProviderError(
            FailureKind.NOT_FOUND,
            "This key was wrapped under an AUTH_SECRET that is no longer configured. Add the previous secret "
            "to AUTH_SECRET_FALLBACKS and run `manage.py rotate_auth_secret`.",
        )

    def wrapped_under_current_secret(self, ciphertext: bytes) -> bool:
        return ciphertext[len(MAGIC) : HEADER_SIZE] == fingerprint(self._keks()[0])
