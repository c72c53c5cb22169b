"""The custody lifecycle of a registered key: the state machine itself, then every transition through the
services with a real Azure vault (disable, re-enable, make active, retry, remove) and what files do then."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest

from audit.models import AuditEvent
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, lifecycle, services
from encryption.lifecycle import TABLE, Transition, TransitionRefused
from encryption.models import KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod
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

# --- The state machine --------------------------------------------------------------------------------------

# What an owner is told for a refused transition, by the state the key is in.
REFUSALS = {
    KeyStatus.PENDING: "still verifying this key",
    KeyStatus.ACTIVE: "already the active key",
    KeyStatus.RETIRED: "make it active again, or disable it",
    KeyStatus.FAILED: "retry it once its access is fixed, or remove it",
    KeyStatus.DISABLED: "re-enable it first",
}
ALLOWED = sorted((str(s), str(t)) for s, t in TABLE)
REFUSED = sorted((str(s), str(t)) for s, t in itertools.product(KeyStatus, Transition) if (s, t) not in TABLE)


def test_the_table_is_the_documented_lifecycle() -> None:
    assert dict(TABLE) == {
        (KeyStatus.PENDING, Transition.VERIFIED): (KeyStatus.ACTIVE,),
        (KeyStatus.PENDING, Transition.VERIFY_FAILED): (KeyStatus.FAILED,),
        (KeyStatus.FAILED, Transition.RETRY): (KeyStatus.PENDING,),
        (KeyStatus.FAILED, Transition.REMOVE): (),
        (KeyStatus.ACTIVE, Transition.SUPERSEDE): (KeyStatus.RETIRED,),
        (KeyStatus.RETIRED, Transition.MAKE_ACTIVE): (KeyStatus.ACTIVE,),
        (KeyStatus.ACTIVE, Transition.DISABLE): (KeyStatus.DISABLED,),
        (KeyStatus.RETIRED, Transition.DISABLE): (KeyStatus.DISABLED,),
        (KeyStatus.DISABLED, Transition.RE_ENABLE): (KeyStatus.ACTIVE, KeyStatus.RETIRED),
    }
    assert len(REFUSED) == len(KeyStatus) * len(Transition) - len(TABLE) == 31


@pytest.mark.parametrize(("status", "transition"), ALLOWED)
def test_it_allows_every_transition_in_the_table_to_each_of_its_targets(status: str, transition: str) -> None:
    state, move = KeyStatus(status), Transition(transition)
    assert lifecycle.allowed(status, move)
    lifecycle.check(status, move)
    for target in TABLE[(state, move)]:
        lifecycle.check(status, move, target)


@pytest.mark.parametrize(("status", "transition"), REFUSED)
def test_it_refuses_every_transition_the_table_lacks_saying_what_to_do(status: str, transition: str) -> None:
    assert not lifecycle.allowed(status, Transition(transition))
    with pytest.raises(TransitionRefused) as refused:
        lifecycle.check(status, Transition(transition))
    assert REFUSALS[KeyStatus(status)] in str(refused.value)


@pytest.mark.parametrize(
    ("status", "transition", "target"),
    [
        (KeyStatus.DISABLED, Transition.RE_ENABLE, KeyStatus.FAILED),
        (KeyStatus.DISABLED, Transition.RE_ENABLE, KeyStatus.PENDING),
        (KeyStatus.PENDING, Transition.VERIFIED, KeyStatus.RETIRED),
        (KeyStatus.ACTIVE, Transition.SUPERSEDE, KeyStatus.DISABLED),
        (KeyStatus.FAILED, Transition.REMOVE, KeyStatus.PENDING),
    ],
)
def test_it_refuses_a_target_the_transition_does_not_lead_to(
    status: KeyStatus, transition: Transition, target: KeyStatus
) -> None:
    with pytest.raises(TransitionRefused, match=REFUSALS[status]):
        lifecycle.check(status, transition, target)


@pytest.mark.parametrize(
    ("status", "buttons"),
    [
        (KeyStatus.PENDING, []),
        (KeyStatus.ACTIVE, ["disable"]),
        (KeyStatus.RETIRED, ["make-active", "disable"]),
        (KeyStatus.FAILED, ["retry", "remove"]),
        (KeyStatus.DISABLED, ["re-enable"]),
    ],
)
def test_actions_are_the_owners_transitions_of_each_state_in_button_order(
    status: KeyStatus, buttons: list[str]
) -> None:
    assert [str(t) for t in lifecycle.actions(status)] == buttons


def test_every_state_but_pending_has_a_way_out_an_owner_can_take() -> None:
    assert {s for s in KeyStatus if lifecycle.actions(s)} == set(KeyStatus) - {KeyStatus.PENDING}
    assert issubclass(TransitionRefused, services.KeyCustodyError)


# --- Through the services, with a real vault ----------------------------------------------------------------


@pytest.fixture
def cloud_tenant(tenant: Tenant, db: None) -> Tenant:
    return enable_cloud_kms(tenant)


def _key_row(tenant: Tenant, status: KeyStatus, name: str = "row") -> TenantKey:
    """A registration already in ``status`` (no vault call happens before a refused transition)."""
    url = f"https://contoso-keys.vault.azure.net/keys/{name}/{'ab' * 16}"
    return TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_AZURE,
        key_id=url,
        canonical_id=url,
        config={"directory_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"},
        status=status,
    )


@pytest.mark.django_db
def test_disabling_the_active_key_seals_and_re_enabling_it_unseals_with_files_intact(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    key = active_azure_key(cloud_tenant, vault, "only", owner)
    data = os.urandom(70_000)
    blob = make_blob(owner, data, "before.bin")
    client = as_user(owner)

    services.disable_key(key, actor=owner)
    cloud_tenant.refresh_from_db()
    assert fresh(key).status == KeyStatus.DISABLED and fresh(key).disabled_at is not None
    assert cloud_tenant.is_sealed and cloud_tenant.seal_reason.startswith("No active key")
    assert key.label in cloud_tenant.seal_reason and "Re-enable it" in cloud_tenant.seal_reason
    status, body = download(client, blob)
    assert status == 503 and b"No active key" in body

    back = services.re_enable_key(fresh(key), actor=owner)
    assert back.status == KeyStatus.ACTIVE and fresh(key).status == KeyStatus.ACTIVE
    assert fresh(key).disabled_at is None
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed and cloud_tenant.seal_reason == ""
    assert download(client, blob) == (200, data)
    # The key came back with the version it had: nothing was re-created.
    active = TenantKeyVersion.objects.get(tenant=cloud_tenant, status=VersionStatus.ACTIVE)
    assert active.kek_id == key.pk and active.pk == blob.data_key.tkv_id


@pytest.mark.django_db
def test_a_disabled_retired_key_answers_503_naming_it_until_it_is_re_enabled_as_retired(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    old = active_azure_key(cloud_tenant, vault, "old", owner)
    old_data = os.urandom(5_000)
    old_blob = make_blob(owner, old_data, "old.bin")
    new = active_azure_key(cloud_tenant, vault, "new", owner)
    new_data = os.urandom(5_000)
    new_blob = make_blob(owner, new_data, "new.bin")
    retired_at = fresh(old).retired_at
    assert fresh(old).status == KeyStatus.RETIRED and retired_at is not None
    client = as_user(owner)

    services.disable_key(fresh(old), actor=owner)
    status, body = download(client, old_blob)
    assert status == 503
    assert old.key_id[-12:].encode() in body and b"disabled" in body
    assert new.key_id[-12:].encode() not in body
    assert download(client, new_blob) == (200, new_data)
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed

    back = services.re_enable_key(fresh(old), actor=owner)
    assert back.status == KeyStatus.RETIRED and fresh(old).status == KeyStatus.RETIRED
    assert fresh(old).retired_at == retired_at and fresh(new).status == KeyStatus.ACTIVE
    assert download(client, old_blob) == (200, old_data)
    assert download(client, new_blob) == (200, new_data)
    (event,) = AuditEvent.objects.filter(tenant=cloud_tenant, type="tenant-kms.re-enabled")
    assert event.payload["keyRowId"] == old.pk and event.payload["status"] == "retired"


@pytest.mark.django_db
def test_re_enabling_a_key_the_vault_now_refuses_names_the_error_and_changes_nothing(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    key = active_azure_key(cloud_tenant, vault, "refusing", owner)
    services.disable_key(key, actor=owner)
    before = last_seq(cloud_tenant)
    vault.revoke(kodori_app.client_id)

    with pytest.raises(services.KeyCustodyError) as refused:
        services.re_enable_key(fresh(key), actor=owner)
    message = str(refused.value)
    error = fresh(key).last_verify_error
    assert error and error in message
    assert key.label in message and "could not be re-enabled" in message and "Nothing was changed" in message
    assert fresh(key).status == KeyStatus.DISABLED
    cloud_tenant.refresh_from_db()
    assert cloud_tenant.is_sealed and cloud_tenant.seal_reason.startswith("No active key")
    assert story(cloud_tenant, after=before) == []

    vault.grant(kodori_app.client_id, ("get", "wrapKey", "unwrapKey"))
    assert services.re_enable_key(fresh(key), actor=owner).status == KeyStatus.ACTIVE
    assert fresh(key).last_verify_error == ""


@pytest.mark.django_db
def test_making_a_retired_key_active_retires_the_current_one_and_records_the_rotation(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, admin: Any
) -> None:
    first = active_azure_key(cloud_tenant, vault, "first", owner)
    second = active_azure_key(cloud_tenant, vault, "second", owner)
    before = last_seq(cloud_tenant)

    made = services.make_active(fresh(first), actor=admin)
    assert made.status == KeyStatus.ACTIVE
    assert fresh(first).status == KeyStatus.ACTIVE and fresh(second).status == KeyStatus.RETIRED
    assert fresh(second).retired_at is not None
    active = keyring.current_tkv(cloud_tenant)
    assert active is not None and active.kek_id == first.pk
    assert (
        active.version == max(TenantKeyVersion.objects.filter(tenant=cloud_tenant).values_list("version"))[0]
    )
    events = story(cloud_tenant, after=before)
    assert types(events) == ["tenant-kms.rotated"]  # no second "registered": the key was adopted before
    rotated = events[0].payload
    assert (rotated["fromKeyRowId"], rotated["toKeyRowId"]) == (second.pk, first.pk)
    assert rotated["fromKeyIdSuffix"] == second.key_id[-12:]
    assert rotated["toKeyIdSuffix"] == first.key_id[-12:]
    assert events[0].actor_email == admin.email


@pytest.mark.django_db
def test_making_a_retired_key_active_probes_it_first(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    first = active_azure_key(cloud_tenant, vault, "first", owner)
    second = active_azure_key(cloud_tenant, vault, "second", owner)
    vault.disable_key("first")
    versions = list(TenantKeyVersion.objects.filter(tenant=cloud_tenant).values_list("pk", "status"))
    with pytest.raises(services.KeyCustodyError, match="could not be made active"):
        services.make_active(fresh(first), actor=owner)
    assert fresh(first).status == KeyStatus.RETIRED and fresh(second).status == KeyStatus.ACTIVE
    assert list(TenantKeyVersion.objects.filter(tenant=cloud_tenant).values_list("pk", "status")) == versions


@pytest.mark.django_db
def test_a_failed_key_is_retried_as_the_same_row_and_verifies_once_access_is_fixed(
    cloud_tenant: Tenant,
    vault: AzureKeyVaultEmulator,
    kodori_app: Any,
    owner: Any,
    admin: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    vault.revoke(kodori_app.client_id)
    key = verified(register_azure(cloud_tenant, vault, "late-grant", owner))
    assert key.status == KeyStatus.FAILED and key.last_verify_error
    vault.grant(kodori_app.client_id, ("get", "wrapKey", "unwrapKey"))

    with django_capture_on_commit_callbacks() as queued:
        retried = services.retry_key(key, actor=admin)
    assert len(queued) == 1  # the probe task, after commit
    assert retried.pk == key.pk and fresh(key).status == KeyStatus.PENDING
    assert fresh(key).last_verify_error == "" and fresh(key).registered_by == admin
    assert (
        TenantKey.objects.filter(tenant=cloud_tenant, wrap_method=WrapMethod.CUSTOMER_KMS_AZURE).count() == 1
    )
    assert verified(key).status == KeyStatus.ACTIVE


@pytest.mark.django_db
def test_a_failed_key_can_be_removed_and_the_removal_is_audited(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    url = customer_key_url(vault, "gone")
    vault.delete_key("gone", purge=True)
    key = services.register_key(
        cloud_tenant, WrapMethod.CUSTOMER_KMS_AZURE, url, {"directory_id": vault.directory_id}, actor=owner
    )
    assert verified(key).status == KeyStatus.FAILED

    services.remove_key(fresh(key), actor=owner)
    assert not TenantKey.objects.filter(pk=key.pk).exists()
    (removed,) = AuditEvent.objects.filter(tenant=cloud_tenant, type="tenant-kms.removed")
    assert removed.payload["keyRowId"] == key.pk and removed.payload["keyIdSuffix"] == url[-12:]
    assert url not in str(removed.payload) and removed.actor_email == owner.email


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status", [KeyStatus.ACTIVE, KeyStatus.RETIRED, KeyStatus.DISABLED, KeyStatus.PENDING]
)
def test_remove_is_refused_for_every_key_but_a_failed_one(
    cloud_tenant: Tenant, owner: Any, status: KeyStatus
) -> None:
    key = _key_row(cloud_tenant, status)
    with pytest.raises(TransitionRefused, match=REFUSALS[status]):
        services.remove_key(key, actor=owner)
    assert fresh(key).status == status
    assert not AuditEvent.objects.filter(tenant=cloud_tenant).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("verb", "status"),
    [
        ("make_active", KeyStatus.ACTIVE),
        ("make_active", KeyStatus.DISABLED),
        ("make_active", KeyStatus.FAILED),
        ("make_active", KeyStatus.PENDING),
        ("re_enable_key", KeyStatus.ACTIVE),
        ("re_enable_key", KeyStatus.RETIRED),
        ("re_enable_key", KeyStatus.FAILED),
        ("re_enable_key", KeyStatus.PENDING),
        ("retry_key", KeyStatus.ACTIVE),
        ("retry_key", KeyStatus.RETIRED),
        ("retry_key", KeyStatus.DISABLED),
        ("retry_key", KeyStatus.PENDING),
        ("disable_key", KeyStatus.FAILED),
        ("disable_key", KeyStatus.PENDING),
    ],
)
def test_each_verb_refuses_the_states_it_does_not_start_from(
    cloud_tenant: Tenant, owner: Any, verb: str, status: KeyStatus
) -> None:
    key = _key_row(cloud_tenant, status)
    with pytest.raises(TransitionRefused, match=REFUSALS[status]):
        getattr(services, verb)(key, actor=owner)
    row = fresh(key)
    assert (row.status, row.disabled_at, row.last_verify_error) == (status, None, "")
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed and not AuditEvent.objects.filter(tenant=cloud_tenant).exists()


@pytest.mark.django_db
def test_disabling_a_disabled_key_again_changes_nothing(cloud_tenant: Tenant, owner: Any) -> None:
    key = _key_row(cloud_tenant, KeyStatus.DISABLED)
    assert services.disable_key(key, actor=owner).status == KeyStatus.DISABLED
    assert not AuditEvent.objects.filter(tenant=cloud_tenant).exists()
