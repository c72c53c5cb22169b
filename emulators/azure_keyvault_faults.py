"""Fault injection for the Key Vault emulator: throttling, server errors and added latency, set at runtime.

Tests of Kodori's retry policy and of its sealing rules need a vault that misbehaves on demand. Throttling
answers 429 ``Throttled`` with ``Retry-After``: whole seconds as Azure sends them, or a decimal such as
``0.05`` when a test asks for less than a second (azure-core parses it as a float and prefers it to
``retry-after-ms``), so retry tests stay fast. Faults apply to authenticated vault operations only: the bearer
challenge and the ``/_emulator`` control API are never disturbed, so call counts in tests stay predictable.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from http import HTTPStatus

from .azure_keyvault_store import VaultError


@dataclass
class Faults:
    """``*_next`` counts down per faulted request; ``*_ratio`` is a probability per request."""

    throttle_next: int = 0
    throttle_ratio: float = 0.0
    retry_after: float = 1.0
    error_next: int = 0
    error_ratio: float = 0.0
    error_status: int = 503
    latency_ms: int = 0


class FaultInjector:
    """Thread-safe holder of :class:`Faults`; ``take()`` decides the fate of one request."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        # Not for cryptography; a seed makes a ratio-based test reproducible.
        self._random = random.Random(seed)  # noqa: S311

    def set(self, **changes: float) -> Faults:
        known = {f.name: f.type for f in fields(Faults)}
        with self._lock:
            for name, value in changes.items():
                if name not in known:
                    raise ValueError(f"unknown fault setting {name!r}; known: {sorted(known)}")
                current = getattr(self._faults, name)
                setattr(self._faults, name, type(current)(value))
            return self.snapshot_locked()

    def clear(self) -> None:
        with self._lock:
            self._faults = Faults()

    def snapshot(self) -> Faults:
        with self._lock:
            return self.snapshot_locked()

    def snapshot_locked(self) -> Faults:
        return Faults(**asdict(self._faults))

    @property
    def latency_ms(self) -> int:
        return self._faults.latency_ms

    def take(self) -> VaultError | None:
        """The injected failure for this request, if any; consumes one of the ``*_next`` budgets."""
        with self._lock:
            f = self._faults
            if f.throttle_next > 0 or (f.throttle_ratio and self._random.random() < f.throttle_ratio):
                f.throttle_next = max(0, f.throttle_next - 1)
                seconds = max(0.0, f.retry_after)
                retry_after = str(int(seconds)) if seconds.is_integer() else f"{seconds:g}"
                headers = {"Retry-After": retry_after}
                return VaultError(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                    headers=headers,
                )
            if f.error_next > 0 or (f.error_ratio and self._random.random() < f.error_ratio):
                f.error_next = max(0, f.error_next - 1)
                code = HTTPStatus(f.error_status).phrase.replace(" ", "")  # e.g. ServiceUnavailable
                return VaultError(f.error_status, code, "The service is temporarily unavailable.")
        return None
