"""Shared setup of the in-process re-wrap tests: no Celery worker (queueing ``run_rewrap`` appends to a list
the tests read), small batches, and a tenant whose data keys sit under a retired key version."""

from __future__ import annotations

from typing import Any

import pytest

from encryption import keyring, queue, tasks
from tenants.models import Tenant
from tests.encryption.rewrap.support import BATCH, Rotated, rotate_with_keys


@pytest.fixture(autouse=True)
def queued(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[int]:
    """Job ids handed to ``run_rewrap.delay`` (nothing reaches Redis); small batches, no automatic walks."""
    settings.KODORI_REWRAP_BATCH_SIZE = BATCH
    settings.KODORI_REWRAP_AFTER_ROTATION = False
    keyring.cache.clear()
    calls: list[int] = []

    class Broker:
        """Stands in for Celery where ``encryption.queue`` sends tasks by name (after commit)."""

        def send_task(self, name: str, args: list[Any]) -> None:
            if name == "encryption.tasks.run_rewrap":
                calls.append(args[0])

    monkeypatch.setattr(queue, "current_app", Broker())
    monkeypatch.setattr(tasks.run_rewrap, "delay", lambda job_pk: calls.append(job_pk))
    monkeypatch.setattr(tasks.vacuum_data_keys, "delay", lambda: None)
    return calls


@pytest.fixture
def rotated(tenant: Tenant) -> Rotated:
    return rotate_with_keys(tenant)
