"""Watching every key Kodori depends on: which keys are probed, what a refusing retired key does (its files
answer 503 naming it, everything else works, the tenant stays unsealed), how it clears, and the re-verify that
the first refusal met in use asks for, once per key across processes (real Redis)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from emulators.azure_keyvault import AzureKeyVaultEmulator
from emulators.azure_keyvault_store import DEFAULT_GRANT
from encryption import alerts, health, keyring, services
from encryption.coverage import destroy_unreferenced_versions
from encryption.format import envelope
from encryption.models import KeyStatus, TenantKeyVersion, VersionStatus, WrapMethod
from encryption.providers import ProviderError
from encryption.sealing import Trigger
from tenants.models import Tenant
from tests.blobs.support import make_blob
from tests.encryption.conftest import customer_key_url
from tests.encryption.support import (
    active_azure_key,
    download,
    enable_cloud_kms,
    fresh,
    last_seq,
    register_azure,
    story,
    types,
    verified,
)

pytestmark = pytest.mark.django_db
QUEUE = "celery"  # Celery's default queue: a Redis list, newest message on the left


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    return enable_cloud_kms(tenant)


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The Redis the test plugin started (Celery's broker and the re-verify deduplication both use it)."""
    alerts.reset()
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    alerts.reset()
    client.close()


def taken(broker: redis.Redis) -> dict[str, Any]:
    """Remove the newest queued task message (so no later worker runs it) and return its headers."""
    raw = broker.lpop(QUEUE)
    assert isinstance(raw, bytes), "no task was queued"
    headers: dict[str, Any] = json.loads(raw)["headers"]
    return headers


def per_key_access(vault: AzureKeyVaultEmulator, client_id: str, *names: str) -> None:
    """Kodori may use only the named keys (not the whole vault), so one of them can be revoked alone."""
    vault.revoke(client_id)
    for name in names:
        vault.grant(client_id, DEFAULT_GRANT, key=name)


def data_key(tenant: Tenant) -> None:
    keyring.new_data_key(tenant, uuid.uuid4(), envelope.FORMAT_VERSION)


# --- Which keys are watched ---------------------------------------------------------------------------------


def test_it_watches_active_cloud_keys_and_retired_ones_that_still_hold_versions(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    data_key(cloud_tenant)  # under the Kodori-managed key, which then retires with a live version
    emptied = active_azure_key(cloud_tenant, vault, "emptied", owner)  # retires wrapping nothing
    holding = active_azure_key(cloud_tenant, vault, "holding", owner)
    data_key(cloud_tenant)
    switched_off = active_azure_key(cloud_tenant, vault, "switched-off", owner)
    data_key(cloud_tenant)
    active = active_azure_key(cloud_tenant, vault, "active", owner)
    services.disable_key(fresh(switched_off), actor=owner)
    broken = customer_key_url(vault, "broken")
    vault.delete_key("broken", purge=True)
    failed = verified(
        services.register_key(
            cloud_tenant,
            WrapMethod.CUSTOMER_KMS_AZURE,
            broken,
            {"directory_id": vault.directory_id},
            actor=owner,
        )
    )
    pending = register_azure(cloud_tenant, vault, "pending", owner)
    assert (failed.status, pending.status) == (KeyStatus.FAILED, KeyStatus.PENDING)
    assert health.keys_to_reverify() == [emptied.pk, holding.pk, active.pk]

    destroyed = destroy_unreferenced_versions(cloud_tenant)
    assert [kek for _, _, kek in destroyed] == [emptied.pk]
    assert not TenantKeyVersion.objects.filter(kek=emptied).exclude(status=VersionStatus.DESTROYED).exists()
    assert health.keys_to_reverify() == [holding.pk, active.pk]


# --- A retired key that refuses Kodori ----------------------------------------------------------------------


def test_a_retired_key_the_vault_refuses_stops_only_its_own_files_until_it_answers_again(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    per_key_access(vault, kodori_app.client_id, "old", "new")
    old = active_azure_key(cloud_tenant, vault, "old", owner)
    old_files = {make_blob(owner, os.urandom(3_000), f"old-{i}.bin"): i for i in range(2)}
    new = active_azure_key(cloud_tenant, vault, "new", owner)
    new_data = os.urandom(4_000)
    new_blob = make_blob(owner, new_data, "new.bin")
    client = as_user(owner)
    mark = last_seq(cloud_tenant)

    vault.revoke(kodori_app.client_id, key="old")
    assert health.probe_key(old.pk, trigger=Trigger.SCHEDULE) is False
    row = fresh(old)
    assert row.status == KeyStatus.RETIRED and row.refused_at is not None and row.last_verify_error
    (unreachable,) = story(cloud_tenant, after=mark)
    assert unreachable.type == "tenant-kms.unreachable"
    payload = unreachable.payload
    assert (payload["keyRowId"], payload["status"], payload["trigger"]) == (old.pk, "retired", "schedule")
    assert payload["dataKeys"] == 2 and payload["error"]
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed

    for blob in old_files:
        status, body = download(client, blob)
        assert status == 503 and old.key_id[-12:].encode() in body and b"refuses Kodori" in body
    assert download(client, new_blob) == (200, new_data)
    keyring.new_data_key(cloud_tenant, uuid.uuid4(), envelope.FORMAT_VERSION)  # uploads go on, under "new"

    page = client.get(reverse("encryption:index")).content.decode()
    assert f"{old.label} refuses Kodori" in page
    assert "2 files it protects cannot be read" in page
    assert f"{new.label} refuses Kodori" not in page

    # Probed again while still refused: still marked, told once.
    assert health.probe_key(old.pk, trigger=Trigger.SCHEDULE) is False
    assert types(story(cloud_tenant, after=mark)) == ["tenant-kms.unreachable"]
    assert old.pk in health.keys_to_reverify()  # the schedule keeps watching it

    # Access restored: "Retry now" probes the refused retired key as well, and clears it.
    vault.grant(kodori_app.client_id, DEFAULT_GRANT, key="old")
    assert services.reverify_tenant(cloud_tenant, actor=owner) is True
    assert fresh(old).refused_at is None and fresh(old).last_verify_error == ""
    assert fresh(old).status == KeyStatus.RETIRED and fresh(new).status == KeyStatus.ACTIVE
    events = story(cloud_tenant, after=mark)
    assert types(events) == ["tenant-kms.unreachable", "tenant-kms.reachable"]
    assert events[1].payload["keyRowId"] == old.pk and events[1].payload["trigger"] == "owner-retry"
    for blob in old_files:
        assert download(client, blob)[0] == 200
    assert "refuses Kodori" not in client.get(reverse("encryption:index")).content.decode()


def test_retry_now_under_a_refusing_retired_key_does_not_say_its_files_are_available(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    """The warning about a refusing retired key has its own "Retry now" button; while that key still refuses,
    the answer must not tell the owner that files are available (the files it protects are not)."""
    per_key_access(vault, kodori_app.client_id, "old", "new")
    old = active_azure_key(cloud_tenant, vault, "old", owner)
    make_blob(owner, os.urandom(1_000), "old.bin")
    active_azure_key(cloud_tenant, vault, "new", owner)
    vault.revoke(kodori_app.client_id, key="old")
    assert health.probe_key(old.pk, trigger=Trigger.SCHEDULE) is False
    client = as_user(owner)
    html = client.get(reverse("encryption:index")).content.decode()
    warning = html[html.index(f"{old.label} refuses Kodori") :]
    assert f'action="{reverse("encryption:retry")}"' in warning[: warning.index("</form>")]

    answer = client.post(reverse("encryption:retry"), follow=True).content.decode()
    assert fresh(old).refused_at is not None  # still refused: nothing became available
    assert "files are available" not in answer
    assert f"{old.label} refuses Kodori" in answer


def test_a_disabled_key_is_not_probed(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    key = active_azure_key(cloud_tenant, vault, "off", owner)
    services.disable_key(key, actor=owner)
    vault.clear_calls()
    assert health.probe_key(key.pk, trigger=Trigger.SCHEDULE) is False
    assert vault.call_count() == 0 and fresh(key).refused_at is None


# --- The first refusal met in use ---------------------------------------------------------------------------


def test_request_reverify_queues_one_probe_per_key_within_its_window(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    kek_pk = 10**12 + int.from_bytes(os.urandom(3), "big")  # no such key: a worker would find nothing
    marker = f"kodori:reverify:{kek_pk}"
    broker.delete(marker, f"kodori:reverify:{kek_pk + 1}")
    before = broker.llen(QUEUE)

    assert alerts.request_reverify(kek_pk) is True
    assert alerts.request_reverify(kek_pk) is False
    assert alerts.request_reverify(kek_pk, trigger="rewrap") is False
    assert broker.llen(QUEUE) == before + 1
    assert broker.get(marker) == b"use" and 0 < broker.ttl(marker) <= alerts.DEDUP_SECONDS
    headers = taken(broker)
    assert headers["task"] == "encryption.tasks.reverify_key"
    assert headers["argsrepr"] == f"[{kek_pk}, 'use']"

    assert alerts.request_reverify(kek_pk + 1, trigger="rewrap") is True  # each key has its own window
    assert taken(broker)["argsrepr"] == f"[{kek_pk + 1}, 'rewrap']"

    monkeypatch.setattr(alerts, "DEDUP_SECONDS", 1)
    broker.delete(marker)
    assert alerts.request_reverify(kek_pk) is True
    taken(broker)
    time.sleep(1.2)
    assert alerts.request_reverify(kek_pk) is True  # the window passed: the next refusal asks again
    taken(broker)
    assert broker.llen(QUEUE) == before


def test_request_reverify_never_raises_when_redis_is_unreachable(broker: redis.Redis, settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # the discard port: nothing listens
    alerts.reset()
    started = time.monotonic()
    assert alerts.request_reverify(1) is False
    assert time.monotonic() - started < 10


def test_the_first_refused_unwrap_in_use_asks_for_one_re_verify(
    cloud_tenant: Tenant,
    vault: AzureKeyVaultEmulator,
    kodori_app: Any,
    owner: Any,
    broker: redis.Redis,
) -> None:
    key = active_azure_key(cloud_tenant, vault, "in-use", owner)
    blob_id = uuid.uuid4()
    keyring.new_data_key(cloud_tenant, blob_id, envelope.FORMAT_VERSION)
    marker = f"kodori:reverify:{key.pk}"
    broker.delete(marker)
    before = broker.llen(QUEUE)
    vault.revoke(kodori_app.client_id)

    for _ in range(3):  # a burst of failing downloads
        keyring.cache.clear()
        with pytest.raises(ProviderError) as refused:
            keyring.open_data_key(cloud_tenant, blob_id)
        assert refused.value.seals
    assert broker.llen(QUEUE) == before + 1 and broker.get(marker) == b"use"
    assert taken(broker)["argsrepr"] == f"[{key.pk}, 'use']"
    # Nothing changed yet in this process: the queued probe is what marks the key.
    assert fresh(key).refused_at is None
