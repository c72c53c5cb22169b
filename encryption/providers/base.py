"""The one interface every key provider implements, and the errors it may raise.

A provider holds (or reaches) a key-encryption key and offers these operations::

    wrap(plaintext, context) -> bytes
    unwrap(ciphertext, context) -> bytes
    probe(tenant_id) -> None
    check_registration() -> None

``context`` names what the wrapped value belongs to; every provider binds it (AWS EncryptionContext, GCP
additional authenticated data, an envelope checked on unwrap for Azure, AES-GCM associated data locally), so a
wrapped key moved to another tenant or version fails to unwrap.
"""

from __future__ import annotations

import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from django.conf import settings

T = TypeVar("T")


@dataclass(frozen=True)
class KeyContext:
    """What a wrapped key belongs to: the tenant and the tenant key version, for a purpose."""

    tenant_id: int
    key_version: int
    purpose: str = "tkv"

    def as_dict(self) -> dict[str, str]:
        """String map for providers with a key/value context (AWS EncryptionContext)."""
        return {
            "kodori:tenant": str(self.tenant_id),
            "kodori:key-version": str(self.key_version),
            "kodori:purpose": self.purpose,
        }

    def as_bytes(self) -> bytes:
        """Unambiguous byte encoding for providers with associated data (AES-GCM, GCP)."""
        purpose = self.purpose.encode()
        return (
            b"kodori/key-context/v1\x00"
            + self.tenant_id.to_bytes(8, "big")
            + self.key_version.to_bytes(8, "big")
            + len(purpose).to_bytes(1, "big")
            + purpose
        )


class FailureKind(StrEnum):
    """How a provider failure is handled (ARCHITECTURE, "Providers" and "Sealing")."""

    TRANSIENT = "transient"  # throttling, timeouts, 5xx: retried with backoff under a deadline
    DENIED = "denied"  # access removed: seals the tenant, never retried in a loop
    DISABLED = "disabled"  # key disabled or pending deletion: seals
    NOT_FOUND = "not_found"  # key or version gone: seals
    INTEGRITY = "integrity"  # ciphertext or context does not match: the data is not authentic
    CONFIGURATION = "configuration"  # our own settings are wrong (operator's problem)

    @property
    def seals(self) -> bool:
        return self in (FailureKind.DENIED, FailureKind.DISABLED, FailureKind.NOT_FOUND)


class ProviderError(Exception):
    """A provider could not do what was asked. ``str()`` is a message a customer can act on."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def seals(self) -> bool:
        return self.kind.seals


class KeyProvider(ABC):
    """A key-encryption key behind ``wrap`` / ``unwrap`` / ``probe``. Never holds plaintext it was given."""

    @abstractmethod
    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes: ...

    @abstractmethod
    def unwrap(self, ciphertext: bytes, context: KeyContext) -> bytes: ...

    def probe(self, tenant_id: int) -> None:
        """Prove the key works end to end: wrap and unwrap a random value with the tenant's real context.

        The context names the tenant (``purpose="probe"``, version 0), so a customer policy that allows only
        its own tenant's encryption context admits the probe too. Unwrap is what proves access (some SDKs wrap
        locally with a public key), so the probe always unwraps.
        """
        sample = os.urandom(32)
        context = KeyContext(tenant_id=tenant_id, key_version=0, purpose="probe")
        if self.unwrap(self.wrap(sample, context), context) != sample:
            raise ProviderError(
                FailureKind.INTEGRITY, "The key returned a different value than it was given."
            )

    def check_registration(self) -> None:
        """Prove what a successful probe cannot: that the key's registration is safe to accept.

        Run after a successful ``probe``. The default has nothing to check; the AWS provider proves that the
        tenant's role refuses an ExternalId other than the tenant's. Raises ``ProviderError`` like ``probe``.
        """
        return None  # nothing to check by default; not abstract, so every provider answers it

    def __repr__(self) -> str:
        # Subclasses hold key material or clients; never let a repr print either.
        return f"<{type(self).__name__}>"


def call_with_retries(
    operation: Callable[[], T],
    classify: Callable[[Exception], ProviderError],
    *,
    deadline: float | None = None,
    max_attempts: int | None = None,
) -> T:
    """Run ``operation``; retry transient failures with jittered exponential backoff under a deadline.

    ``classify`` turns an SDK exception into a ``ProviderError``. Only ``TRANSIENT`` failures are retried;
    access denied, disabled, not found and integrity failures are raised at once, because retrying them in a
    loop only hammers the customer's KMS (and its audit log) without changing the answer.
    """
    deadline = settings.KODORI_KMS_DEADLINE_SECONDS if deadline is None else deadline
    max_attempts = settings.KODORI_KMS_MAX_ATTEMPTS if max_attempts is None else max_attempts
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return operation()
        except ProviderError:
            raise
        except Exception as exc:
            error = classify(exc)
            attempt += 1
            if error.kind != FailureKind.TRANSIENT:
                raise error from exc
            backoff = min(
                settings.KODORI_KMS_BACKOFF_MAX, settings.KODORI_KMS_BACKOFF_BASE * 2 ** (attempt - 1)
            )
            delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
            if attempt >= max_attempts or time.monotonic() - started + delay > deadline:
                raise error from exc
            time.sleep(delay)
