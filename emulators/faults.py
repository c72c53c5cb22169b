"""Fault injection and call accounting shared by the GCP and AWS emulators.

Tests of Kodori's retry, sealing and benchmark code need a KMS that misbehaves on demand and that can say how
many calls it answered. A :class:`FaultInjector` holds an ordered list of fault plans ("throttle the next 3
Encrypt calls", "fail 20 % of all calls with UNAVAILABLE") plus an added latency, and a call log with
per-operation counters. Each emulator maps a fault kind onto its own wire error: ``throttle`` is gRPC
RESOURCE_EXHAUSTED on GCP and HTTP 400 ``ThrottlingException`` on AWS; ``unavailable`` is gRPC UNAVAILABLE on
GCP and an HTTP 5xx on AWS.

Ratios draw from a seeded ``random.Random`` so a flaky-looking test is still reproducible.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("throttle", "unavailable")

# The call log is for assertions and debugging; a long benchmark must not grow memory without bound.
MAX_LOGGED_CALLS = 10_000


@dataclass
class FaultPlan:
    """One rule: inject ``kind`` on the next ``remaining`` matching calls, or on a ``ratio`` of them."""

    kind: str
    remaining: int | None = None
    ratio: float | None = None
    operations: frozenset[str] | None = None

    def matches(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


@dataclass(frozen=True)
class CallRecord:
    """One call the emulator answered (or refused): what, who, and how it ended."""

    at: float
    operation: str
    principal: str
    outcome: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "operation": self.operation,
            "principal": self.principal,
            "outcome": self.outcome,
        }


@dataclass
class FaultInjector:
    """Thread-safe fault plans, added latency and call counters for one emulator instance."""

    seed: int = 1234
    plans: list[FaultPlan] = field(default_factory=list)
    latency_ms: float = 0.0
    _random: random.Random = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _calls: list[CallRecord] = field(init=False, default_factory=list)
    _counts: Counter[str] = field(init=False, default_factory=Counter)
    _outcomes: Counter[tuple[str, str]] = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 (fault ratios, not cryptography)

    # -- configuration ---------------------------------------------------------------------------------------

    def add(
        self,
        kind: str,
        count: int | None = None,
        ratio: float | None = None,
        operations: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        """Inject ``kind`` on the next ``count`` calls, or on ``ratio`` (0..1) of calls until cleared."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if (count is None) == (ratio is None):
            raise ValueError("give exactly one of count or ratio")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise ValueError("ratio must be between 0 and 1")
        plan = FaultPlan(kind, count, ratio, frozenset(operations) if operations else None)
        with self._lock:
            self.plans.append(plan)

    def set_latency(self, ms: float) -> None:
        if ms < 0:
            raise ValueError("latency must be >= 0 ms")
        with self._lock:
            self.latency_ms = float(ms)

    def clear(self) -> None:
        """Remove every fault plan and the added latency; counters stay."""
        with self._lock:
            self.plans.clear()
            self.latency_ms = 0.0

    def reset(self) -> None:
        """Faults, latency, call log and counters back to a fresh start."""
        with self._lock:
            self.plans.clear()
            self.latency_ms = 0.0
            self._calls.clear()
            self._counts.clear()
            self._outcomes.clear()
            self._random = random.Random(self.seed)  # noqa: S311 (fault ratios, not cryptography)

    # -- use by the servers ----------------------------------------------------------------------------------

    def before_call(self, operation: str) -> str | None:
        """Sleep the added latency, then return the fault kind to inject for this call, if any."""
        with self._lock:
            delay = self.latency_ms
            fault = self._draw(operation)
        if delay:
            # Latency applies to injected faults too: a throttled cloud call is not instantaneous either.
            time.sleep(delay / 1000.0)
        return fault

    def _draw(self, operation: str) -> str | None:
        for plan in self.plans:
            if not plan.matches(operation):
                continue
            if plan.remaining is not None:
                if plan.remaining <= 0:
                    continue
                plan.remaining -= 1
                return plan.kind
            if plan.ratio is not None and self._random.random() < plan.ratio:
                return plan.kind
        # Spent count plans are dropped so a long-lived emulator's plan list does not grow.
        self.plans = [p for p in self.plans if p.remaining is None or p.remaining > 0]
        return None

    def record(self, operation: str, principal: str, outcome: str) -> None:
        with self._lock:
            self._counts[operation] += 1
            self._outcomes[(operation, outcome)] += 1
            self._calls.append(CallRecord(time.time(), operation, principal, outcome))
            if len(self._calls) > MAX_LOGGED_CALLS:
                del self._calls[: len(self._calls) - MAX_LOGGED_CALLS]

    # -- reading ---------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Calls per operation, whatever their outcome (faults included: they reached the service)."""
        with self._lock:
            return dict(self._counts)

    def outcome_counts(self) -> dict[str, int]:
        """Calls per ``operation:outcome``, e.g. ``Encrypt:ok`` or ``Decrypt:RESOURCE_EXHAUSTED``."""
        with self._lock:
            return {f"{op}:{outcome}": n for (op, outcome), n in self._outcomes.items()}

    def calls(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            selected = self._calls[-limit:] if limit else list(self._calls)
            return [c.as_dict() for c in selected]

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_ms": self.latency_ms,
                "plans": [
                    {
                        "kind": p.kind,
                        "remaining": p.remaining,
                        "ratio": p.ratio,
                        "operations": sorted(p.operations) if p.operations else None,
                    }
                    for p in self.plans
                ],
            }


class FaultControls:
    """The fault and accounting half of an emulator's public (and admin) API, over its ``faults`` injector.

    Each emulator says in its docs what ``throttle`` and ``unavailable`` look like on its wire.
    """

    faults: FaultInjector

    def throttle(
        self, count: int | None = None, ratio: float | None = None, operations: list[str] | None = None
    ) -> None:
        """Throttle the next ``count`` calls, or ``ratio`` of calls; ``operations`` narrows it to some."""
        self.faults.add("throttle", count, ratio, operations)

    def unavailable(
        self, count: int | None = None, ratio: float | None = None, operations: list[str] | None = None
    ) -> None:
        """Answer the next ``count`` calls (or ``ratio`` of calls) with the service's transient error."""
        self.faults.add("unavailable", count, ratio, operations)

    def set_latency(self, ms: float) -> None:
        """Delay every call by ``ms`` milliseconds (0 to stop)."""
        self.faults.set_latency(ms)

    def clear_faults(self) -> None:
        self.faults.clear()

    def faults_state(self) -> dict[str, Any]:
        return self.faults.describe()

    def counts(self) -> dict[str, int]:
        """Calls per operation that reached the emulator, e.g. ``{"Encrypt": 3}``, whatever their outcome."""
        return self.faults.counts()

    def outcome_counts(self) -> dict[str, int]:
        """Calls per ``operation:outcome``, e.g. ``{"Encrypt:ok": 1, "Encrypt:RESOURCE_EXHAUSTED": 2}``."""
        return self.faults.outcome_counts()

    def calls(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The call log (newest last): time, operation, principal, outcome."""
        return self.faults.calls(limit)
