"""The audit log tells a key's custody story in order, causes before effects, event by event, and the chain
still verifies: register, rotate (with the re-wrap it starts), disable (seal), re-enable (unseal), rotate."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import override_settings

from audit import chain
from audit.models import AuditEvent
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, services
from encryption.format import envelope
from encryption.models import KeyStatus, TenantKey
from tenants.models import Tenant
from tests.encryption.support import (
    enable_cloud_kms,
    fresh,
    last_seq,
    register_azure,
    story,
    types,
    verified,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    return enable_cloud_kms(tenant)


def names(key: TenantKey) -> dict[str, Any]:
    return {"provider": "azure-kv", "keyIdSuffix": key.key_id[-12:], "keyRowId": key.pk}


def about(event: AuditEvent, key: TenantKey) -> bool:
    """Whether ``event`` names ``key`` the way every custody event does (never its full identifier)."""
    payload = event.payload
    named = {name: payload.get(name) for name in ("provider", "keyIdSuffix", "keyRowId")}
    return named == names(key) and key.key_id not in str(payload)


def rotated(event: AuditEvent, old: TenantKey | None, new: TenantKey) -> None:
    assert event.type == "tenant-kms.rotated"
    payload = event.payload
    assert payload["toKeyRowId"] == new.pk and payload["toProvider"] == "azure-kv"
    assert payload["toKeyIdSuffix"] == new.key_id[-12:]
    if old is not None:
        assert payload["fromKeyRowId"] == old.pk and payload["fromProvider"] == "azure-kv"
        assert payload["fromKeyIdSuffix"] == old.key_id[-12:]


def some_data(tenant: Tenant, n: int = 3) -> None:
    for _ in range(n):
        keyring.new_data_key(tenant, uuid.uuid4(), envelope.FORMAT_VERSION)


def test_the_audit_tells_the_custody_story_in_order(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, admin: Any
) -> None:
    # Register and verify the first key: adopted, nothing to rotate from.
    first = verified(register_azure(cloud_tenant, vault, "first", owner))
    (registered,) = story(cloud_tenant)
    assert registered.type == "tenant-kms.registered" and about(registered, first)
    assert registered.actor_email == owner.email
    some_data(cloud_tenant)

    # A second key: registered, then rotated from the first, then the re-wrap the rotation starts.
    mark = last_seq(cloud_tenant)
    with override_settings(KODORI_REWRAP_AFTER_ROTATION=True):
        second = verified(register_azure(cloud_tenant, vault, "second", admin))
    events = story(cloud_tenant, after=mark)
    assert types(events) == ["tenant-kms.registered", "tenant-kms.rotated", "rewrap.started"]
    assert about(events[0], second) and events[0].actor_email == admin.email
    rotated(events[1], first, second)
    assert events[2].payload["toKeyRowId"] == second.pk and events[2].payload["dataKeys"] == 3
    assert events[2].payload["trigger"] == "rotation"

    # Disable the active key: disabled, then the tenant sealed by the disable.
    mark = last_seq(cloud_tenant)
    services.disable_key(fresh(second), actor=owner)
    events = story(cloud_tenant, after=mark)
    assert types(events) == ["tenant-kms.disabled", "tenant.sealed"]
    assert about(events[0], second) and events[0].payload["previousStatus"] == "active"
    sealed = events[1].payload
    assert sealed["trigger"] == "disable" and sealed["keyRowId"] == second.pk
    assert sealed["reason"].startswith("No active key") and "owner@acme.test" in sealed["reason"]
    assert all(event.actor_email == owner.email for event in events)

    # Re-enable it: re-enabled (as active) first, then unsealed. The key new data is wrapped under is the one
    # it was before the disable, so a rotation, if recorded at all, sits between the two and names this key.
    mark = last_seq(cloud_tenant)
    services.re_enable_key(fresh(second), actor=admin)
    events = story(cloud_tenant, after=mark)
    assert types(events) in (
        ["tenant-kms.re-enabled", "tenant-kms.rotated", "tenant.unsealed"],
        ["tenant-kms.re-enabled", "tenant.unsealed"],
    )
    assert about(events[0], second) and events[0].payload["status"] == "active"
    if len(events) == 3:
        rotated(events[1], None, second)
        assert events[1].payload["fromKeyRowId"] in (None, second.pk)
    unsealed = events[-1].payload
    assert unsealed["trigger"] == "re-enable" and about(events[-1], second)
    assert all(event.actor_email == admin.email for event in events)

    # Rotate again: the story goes on from the re-enabled key.
    mark = last_seq(cloud_tenant)
    third = verified(register_azure(cloud_tenant, vault, "third", owner))
    events = story(cloud_tenant, after=mark)
    assert types(events) == ["tenant-kms.registered", "tenant-kms.rotated"]
    assert about(events[0], third)
    rotated(events[1], second, third)
    assert [fresh(k).status for k in (first, second, third)] == ["retired", "retired", "active"]

    assert [event.seq for event in story(cloud_tenant)] == list(range(1, last_seq(cloud_tenant) + 1))
    assert chain.verify(cloud_tenant, full=True).ok


def test_without_automatic_re_wraps_a_rotation_starts_none(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    verified(register_azure(cloud_tenant, vault, "first", owner))
    some_data(cloud_tenant)
    with override_settings(KODORI_REWRAP_AFTER_ROTATION=False):
        verified(register_azure(cloud_tenant, vault, "second", owner))
    assert "rewrap.started" not in types(story(cloud_tenant))


def test_activating_another_key_after_the_active_one_was_disabled_rotates_from_it_and_unseals(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    gone = verified(register_azure(cloud_tenant, vault, "gone", owner))
    some_data(cloud_tenant)
    services.disable_key(gone, actor=owner)
    cloud_tenant.refresh_from_db()
    assert cloud_tenant.is_sealed

    mark = last_seq(cloud_tenant)
    with override_settings(KODORI_REWRAP_AFTER_ROTATION=True):
        successor = verified(register_azure(cloud_tenant, vault, "successor", owner))
    assert successor.status == KeyStatus.ACTIVE and fresh(gone).status == KeyStatus.DISABLED
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed
    events = story(cloud_tenant, after=mark)
    # No re-wrap: the data keys under the disabled key are left alone (Kodori no longer opens them).
    assert types(events) == ["tenant-kms.registered", "tenant-kms.rotated", "tenant.unsealed"]
    rotated(events[1], gone, successor)
    assert events[2].payload["trigger"] == "activation" and about(events[2], successor)
    assert chain.verify(cloud_tenant, full=True).ok


def test_a_refusal_found_by_retry_now_seals_and_its_answer_unseals_naming_the_trigger(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    key = verified(register_azure(cloud_tenant, vault, "flaky", owner))
    mark = last_seq(cloud_tenant)
    vault.revoke(kodori_app.client_id)
    assert services.reverify_tenant(cloud_tenant, actor=owner) is False
    vault.grant(kodori_app.client_id, ("get", "wrapKey", "unwrapKey"))
    assert services.reverify_tenant(cloud_tenant, actor=owner) is True
    events = story(cloud_tenant, after=mark)
    assert types(events) == [
        "tenant-kms.unreachable",
        "tenant.sealed",
        "tenant-kms.reachable",
        "tenant.unsealed",
    ]
    assert all(about(event, key) for event in events)
    assert {event.payload["trigger"] for event in events} == {"owner-retry"}
    assert events[0].payload["status"] == "active" and events[0].payload["dataKeys"] == 0
    assert all(event.actor_email == owner.email for event in events)
    assert chain.verify(cloud_tenant, full=True).ok
