"""Helpers of the in-process re-wrap tests (fixtures are in ``conftest.py``): a tenant whose data keys sit
under a retired key version, driving the walk batch by batch, and keys that refuse."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from audit.models import AuditEvent, EventType
from encryption import keyring, services
from encryption.models import (
    KeyStatus,
    RewrapJob,
    TenantKey,
    TenantKeyVersion,
    WrapMethod,
)
from encryption.providers import FailureKind, KeyContext, ProviderError
from encryption.providers.local import GlobalKeyProvider
from encryption.rewrap import walk
from tenants.models import Tenant
from tests.encryption.support import rotate_kek, seed_data_keys

N = 250  # data keys under the retired version
BATCH = 50


@dataclass
class Rotated:
    """A tenant with ``N`` data keys under ``old`` (retired) and ``new`` active, no job yet."""

    tenant: Tenant
    keys: dict[uuid.UUID, bytes] = field(repr=False)  # plaintext DEKs: never in a failure report
    old: TenantKeyVersion
    new: TenantKeyVersion


def rotate_with_keys(tenant: Tenant, n: int = N) -> Rotated:
    old = keyring.active_tkv(tenant)
    keys = seed_data_keys(tenant, n, old)
    new = rotate_kek(tenant)
    return Rotated(tenant, keys, old, new)


def finish(job: RewrapJob, max_batches: int = 100) -> list[walk.Outcome]:
    """Run batches until the walk is done; a walk that never ends fails the test instead of hanging."""
    outcomes = []
    for _ in range(max_batches):
        outcome = walk.run_batch(job.pk)
        outcomes.append(outcome)
        if outcome != walk.Outcome.MORE:
            job.refresh_from_db()
            return outcomes
    raise AssertionError(f"the walk was not done after {max_batches} batches: {outcomes[-5:]}")


def events(tenant: Tenant, kind: EventType) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, type=kind).order_by("seq"))


def refuse_unwrap(monkeypatch: pytest.MonkeyPatch, version: int, kind: FailureKind) -> list[int]:
    """Make the kodori-managed KEK refuse to unwrap key version ``version`` as a KMS would; count calls."""
    real = GlobalKeyProvider.unwrap
    calls: list[int] = []

    def unwrap(self: GlobalKeyProvider, ciphertext: bytes, context: KeyContext) -> bytes:
        if context.key_version == version:
            calls.append(version)
            raise ProviderError(kind, f"Simulated {kind} from the KMS for key version {version}.")
        return real(self, ciphertext, context)

    monkeypatch.setattr(GlobalKeyProvider, "unwrap", unwrap)
    keyring.cache.clear()
    return calls


def activate_another_kek(tenant: Tenant, owner: Any) -> TenantKeyVersion:
    """Register and activate another (kodori-managed) KEK: the current one retires, a new version starts."""
    kek = TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING)
    services.activate_key(kek, actor=owner)
    return keyring.active_tkv(tenant)


def checkpoint(job: RewrapJob) -> tuple[Any, ...]:
    job.refresh_from_db()
    return (job.status, job.cursor_tkv_id, job.cursor_id, job.done, job.unreadable, job.total, job.versions)
