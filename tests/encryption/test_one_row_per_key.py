"""One row per KMS key and tenant: a key registered again under another name of it (host case, a GCP version
path, an AWS alias) never gets a second row; what happens instead depends on the row's state. Plus the
database's own guard, and "safe to delete from your KMS" across every tenant."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from emulators.azure_keyvault import AzureKeyVaultEmulator
from emulators.dev import DevEmulators
from encryption import identity, keyring, rewrap, services
from encryption.coverage import coverage_of
from encryption.format import envelope
from encryption.models import KeyStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.emulators.support.aws import customer_root_client
from tests.encryption.conftest import customer_key_url
from tests.encryption.rewrap.support import finish
from tests.encryption.support import enable_cloud_kms, fresh, rotate_kek, verified

pytestmark = pytest.mark.django_db

SAFE = "safe to delete from your KMS"
NOT_SAFE = "another registration Kodori still uses names the same key: not safe to delete"


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    return enable_cloud_kms(tenant)


def shouting(url: str) -> str:
    """The same Key Vault key URL with the host (and the key name) in other letter cases."""
    host_and_rest = url.removeprefix("https://")
    host, _, path = host_and_rest.partition("/")
    _, name, version = path.split("/")
    return f"https://{host.upper()}/keys/{name.upper()}/{version.upper()}"


def register(tenant: Tenant, url: str, directory_id: str, actor: Any) -> tuple[TenantKey, str]:
    return services.register_or_restore(
        tenant, WrapMethod.CUSTOMER_KMS_AZURE, url, {"directory_id": directory_id}, actor=actor
    )


def rows(tenant: Tenant) -> list[tuple[int, str]]:
    keys = TenantKey.objects.filter(tenant=tenant).exclude(wrap_method=WrapMethod.GLOBAL).order_by("pk")
    return list(keys.values_list("pk", "status"))


# --- Each cloud's second names of one key ------------------------------------------------------------------


def test_azure_urls_differing_only_in_case_are_one_key(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    url = customer_key_url(vault, "cased")
    key, outcome = register(cloud_tenant, url, vault.directory_id, owner)
    assert outcome == "registered"
    assert identity.canonical_id(WrapMethod.CUSTOMER_KMS_AZURE, shouting(url)) == key.canonical_id
    with pytest.raises(services.KeyCustodyError, match=r"already has this key .*Kodori is verifying it now"):
        register(cloud_tenant, shouting(url), vault.directory_id, owner)
    verified(key)
    with pytest.raises(services.KeyCustodyError, match=r"already has this key .*it is the active key"):
        register(cloud_tenant, shouting(url), vault.directory_id, owner)
    assert rows(cloud_tenant) == [(key.pk, KeyStatus.ACTIVE)]


def test_a_gcp_key_and_its_version_path_are_one_key(
    clouds: DevEmulators, cloud_tenant: Tenant, owner: Any
) -> None:
    assert clouds.gcp is not None
    name = clouds.gcp.create_key("one-row", "kek")
    key, outcome = services.register_or_restore(
        cloud_tenant, WrapMethod.CUSTOMER_KMS_GCP, name, {}, actor=owner
    )
    assert outcome == "registered" and key.canonical_id == name
    assert verified(key).status == KeyStatus.ACTIVE
    version_path = name + "/cryptoKeyVersions/1"
    with pytest.raises(services.KeyCustodyError, match="it is the active key"):
        services.register_or_restore(cloud_tenant, WrapMethod.CUSTOMER_KMS_GCP, version_path, {}, actor=owner)
    assert rows(cloud_tenant) == [(key.pk, KeyStatus.ACTIVE)]


def test_a_failed_gcp_key_registered_again_by_version_path_is_retried_as_the_same_row(
    clouds: DevEmulators, cloud_tenant: Tenant, owner: Any
) -> None:
    assert clouds.gcp is not None
    name = clouds.gcp.create_key("late-grant", "kek", grant_to=None)
    key = services.register_key(cloud_tenant, WrapMethod.CUSTOMER_KMS_GCP, name, {}, actor=owner)
    assert verified(key).status == KeyStatus.FAILED
    clouds.gcp.grant(name)
    again, outcome = services.register_or_restore(
        cloud_tenant, WrapMethod.CUSTOMER_KMS_GCP, name + "/cryptoKeyVersions/1", {}, actor=owner
    )
    assert outcome == "retrying" and again.pk == key.pk and again.status == KeyStatus.PENDING
    assert verified(again).status == KeyStatus.ACTIVE
    assert rows(cloud_tenant) == [(key.pk, KeyStatus.ACTIVE)]


def test_an_aws_alias_arn_and_its_key_arn_are_one_key(
    clouds: DevEmulators, cloud_tenant: Tenant, owner: Any
) -> None:
    assert clouds.aws is not None
    key_arn = clouds.aws.create_key(alias="alias/one-row")
    role_arn = clouds.aws.create_tenant_role("one-row", services.external_id_for(cloud_tenant), key_arn)
    alias_arn = key_arn.split(":key/")[0] + ":alias/one-row"
    config = {"role_arn": role_arn}

    key, outcome = services.register_or_restore(
        cloud_tenant, WrapMethod.CUSTOMER_KMS_AWS, alias_arn, config, actor=owner
    )
    assert outcome == "registered" and key.key_id == alias_arn and key.canonical_id == key_arn
    with pytest.raises(services.KeyCustodyError, match="Kodori is verifying it now"):
        services.register_or_restore(cloud_tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, config, actor=owner)
    assert verified(key).status == KeyStatus.ACTIVE
    for again in (key_arn, alias_arn):
        with pytest.raises(services.KeyCustodyError, match="it is the active key"):
            services.register_or_restore(
                cloud_tenant, WrapMethod.CUSTOMER_KMS_AWS, again, config, actor=owner
            )
    assert rows(cloud_tenant) == [(key.pk, KeyStatus.ACTIVE)]

    # Once the alias is pointed at another key it names that one: a new row, not the old.
    other_arn = clouds.aws.create_key()
    clouds.aws.create_tenant_role("one-row-2", services.external_id_for(cloud_tenant), other_arn)
    customer_root_client(clouds.aws, "kms").update_alias(AliasName="alias/one-row", TargetKeyId=other_arn)
    moved, outcome = services.register_or_restore(
        cloud_tenant,
        WrapMethod.CUSTOMER_KMS_AWS,
        alias_arn,
        {"role_arn": role_arn.replace("one-row", "one-row-2")},
        actor=owner,
    )
    assert outcome == "registered" and moved.pk != key.pk and moved.canonical_id == other_arn


# --- What a second registration does, by the state of the first ---------------------------------------------


def test_registering_a_retired_key_again_probes_it_and_makes_it_active(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    first_url = customer_key_url(vault, "first")
    first = verified(register(cloud_tenant, first_url, vault.directory_id, owner)[0])
    second = verified(register(cloud_tenant, customer_key_url(vault, "second"), vault.directory_id, owner)[0])
    assert fresh(first).status == KeyStatus.RETIRED

    vault.disable_key("first")
    with pytest.raises(services.KeyCustodyError, match="could not be made active"):
        register(cloud_tenant, shouting(first_url), vault.directory_id, owner)
    assert rows(cloud_tenant) == [(first.pk, KeyStatus.RETIRED), (second.pk, KeyStatus.ACTIVE)]

    vault.enable_key("first")
    again, outcome = register(cloud_tenant, shouting(first_url), vault.directory_id, owner)
    assert outcome == "made-active" and again.pk == first.pk
    assert rows(cloud_tenant) == [(first.pk, KeyStatus.ACTIVE), (second.pk, KeyStatus.RETIRED)]


def test_registering_a_disabled_key_again_re_enables_it(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any
) -> None:
    url = customer_key_url(vault, "off")
    key = verified(register(cloud_tenant, url, vault.directory_id, owner)[0])
    services.disable_key(key, actor=owner)
    cloud_tenant.refresh_from_db()
    assert cloud_tenant.is_sealed
    again, outcome = register(cloud_tenant, shouting(url), vault.directory_id, owner)
    assert outcome == "re-enabled" and again.pk == key.pk and again.status == KeyStatus.ACTIVE
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed
    assert rows(cloud_tenant) == [(key.pk, KeyStatus.ACTIVE)]


def test_registering_a_failed_key_again_retries_the_same_row(
    cloud_tenant: Tenant,
    vault: AzureKeyVaultEmulator,
    kodori_app: Any,
    owner: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    url = customer_key_url(vault, "retry-me")
    vault.revoke(kodori_app.client_id)
    key = verified(register(cloud_tenant, url, vault.directory_id, owner)[0])
    assert key.status == KeyStatus.FAILED
    with django_capture_on_commit_callbacks() as queued:
        again, outcome = register(cloud_tenant, url, vault.directory_id, owner)
    assert outcome == "retrying" and again.pk == key.pk and fresh(key).status == KeyStatus.PENDING
    assert len(queued) == 1
    assert rows(cloud_tenant) == [(key.pk, KeyStatus.PENDING)]


REGISTERED_AGAIN = {
    "active": (400, "it is the active key."),
    "pending": (400, "Kodori is verifying it now; the key history shows the result."),
    "failed": (
        200,
        "failed verification; Kodori is verifying it again now, with the settings you just gave.",
    ),
    "retired": (
        200,
        "was already registered (retired). Kodori verified it and made it the active key again.",
    ),
    "disabled": (
        200,
        "was already registered and disabled. Kodori verified it and re-enabled it; it is now Active.",
    ),
}


@pytest.mark.parametrize("state", list(REGISTERED_AGAIN))
def test_the_register_page_says_what_a_second_registration_did(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any, state: str
) -> None:
    url = customer_key_url(vault, "again")
    key = register(cloud_tenant, url, vault.directory_id, owner)[0]
    if state != "pending":
        if state == "failed":
            vault.disable_key("again")
        key = verified(key)
        vault.enable_key("again")
    if state == "retired":
        verified(register(cloud_tenant, customer_key_url(vault, "newer"), vault.directory_id, owner)[0])
    if state == "disabled":
        services.disable_key(fresh(key), actor=owner)
    assert fresh(key).status == state
    response = as_user(owner).post(
        reverse("encryption:register", args=["azure"]),
        {"key_id": shouting(url), "directory_id": vault.directory_id},
        follow=True,
    )
    status, message = REGISTERED_AGAIN[state]
    assert response.status_code == status
    assert message in response.content.decode()
    assert f"…{key.key_id[-12:]}" in response.content.decode()
    assert TenantKey.objects.filter(tenant=cloud_tenant, canonical_id=key.canonical_id).count() == 1


# --- The database's guard -----------------------------------------------------------------------------------


def test_the_database_refuses_a_second_row_for_one_canonical_key(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    canonical = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
    fields = {
        "wrap_method": WrapMethod.CUSTOMER_KMS_GCP,
        "canonical_id": canonical,
        "status": KeyStatus.FAILED,
    }
    TenantKey.objects.create(tenant=tenant, key_id=canonical, **fields)
    with pytest.raises(IntegrityError, match="tenant_key_one_row_per_kms_key"), transaction.atomic():
        TenantKey.objects.create(tenant=tenant, key_id=canonical + "/cryptoKeyVersions/1", **fields)
    # Another tenant may register the same key; Kodori-managed rows have no canonical id and may repeat.
    TenantKey.objects.create(tenant=other_tenant, key_id=canonical, **fields)
    for _ in range(2):
        TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.RETIRED)


# --- "Safe to delete from your KMS" ------------------------------------------------------------------------


def walk_off(tenant: Tenant, owner: Any) -> None:
    """Re-wrap everything to the active key version now, in this process, to the end."""
    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    finish(job)
    assert job.status == "completed", job.last_error


def data_key(tenant: Tenant) -> None:
    keyring.new_data_key(tenant, uuid.uuid4(), envelope.FORMAT_VERSION)


def protects(client: Any, key: TenantKey) -> str:
    """The "Protects" cell and the rest of ``key``'s row in the key history on /encryption."""
    html = client.get(reverse("encryption:index")).content.decode()
    start = html.index(f'<tr id="key-{key.pk}">')
    return html[start : html.index("</tr>", start)]


def test_a_gcp_key_two_tenants_share_is_safe_to_delete_only_once_neither_uses_it(
    clouds: DevEmulators, cloud_tenant: Tenant, other_tenant: Tenant, owner: Any, outsider: Any, as_user: Any
) -> None:
    assert clouds.gcp is not None
    shared = clouds.gcp.create_key("shared", "kek")
    globex = enable_cloud_kms(other_tenant)
    mine = verified(services.register_key(cloud_tenant, WrapMethod.CUSTOMER_KMS_GCP, shared, {}, actor=owner))
    theirs = verified(services.register_key(globex, WrapMethod.CUSTOMER_KMS_GCP, shared, {}, actor=outsider))
    assert (mine.status, theirs.status) == (KeyStatus.ACTIVE, KeyStatus.ACTIVE)
    data_key(cloud_tenant)
    data_key(globex)
    own = clouds.gcp.create_key("acme-own", "kek")
    verified(services.register_key(cloud_tenant, WrapMethod.CUSTOMER_KMS_GCP, own, {}, actor=owner))
    walk_off(cloud_tenant, owner)

    row = coverage_of(fresh(mine))
    assert row.unreferenced and row.used_elsewhere and not row.deletable_in_kms
    cell = protects(as_user(owner), mine)
    assert NOT_SAFE in cell and SAFE not in cell
    assert "globex" not in cell.lower()  # it says yes or no, never which tenant

    # Still in use while the other tenant's row protects data, even disabled...
    services.disable_key(fresh(theirs), actor=outsider)
    assert coverage_of(fresh(mine)).used_elsewhere
    # ...and no longer once that tenant moved off it too.
    services.re_enable_key(fresh(theirs), actor=outsider)
    verified(
        services.register_key(
            globex, WrapMethod.CUSTOMER_KMS_GCP, clouds.gcp.create_key("g", "k"), {}, actor=outsider
        )
    )
    walk_off(globex, outsider)
    row = coverage_of(fresh(mine))
    assert row.deletable_in_kms and not row.used_elsewhere
    cell = protects(as_user(owner), mine)
    assert "No longer referenced — " + SAFE in cell and NOT_SAFE not in cell


def test_a_retired_azure_version_is_not_safe_to_delete_while_another_version_of_the_key_is_used(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    solo = verified(register(cloud_tenant, customer_key_url(vault, "solo"), vault.directory_id, owner)[0])
    data_key(cloud_tenant)
    v1 = verified(register(cloud_tenant, customer_key_url(vault, "versioned"), vault.directory_id, owner)[0])
    data_key(cloud_tenant)
    v2 = verified(register(cloud_tenant, customer_key_url(vault, "versioned"), vault.directory_id, owner)[0])
    assert v1.pk != v2.pk and v1.key_id.rsplit("/", 1)[0] == v2.key_id.rsplit("/", 1)[0]
    walk_off(cloud_tenant, owner)

    client = as_user(owner)
    assert (coverage_of(fresh(solo)).deletable_in_kms, coverage_of(fresh(v1)).deletable_in_kms) == (
        True,
        False,
    )
    assert SAFE in protects(client, solo)
    cell = protects(client, v1)
    assert NOT_SAFE in cell and SAFE not in cell
    assert fresh(v2).status == KeyStatus.ACTIVE and SAFE not in protects(client, v2)


def test_a_kodori_managed_key_that_protects_nothing_is_never_called_safe_to_delete_from_a_kms(
    tenant: Tenant, owner: Any, as_user: Any
) -> None:
    data_key(tenant)
    old = TenantKey.objects.get(tenant=tenant, wrap_method=WrapMethod.GLOBAL)
    rotate_kek(tenant)
    walk_off(tenant, owner)
    row = coverage_of(fresh(old))
    assert row.unreferenced and not row.deletable_in_kms and not row.used_elsewhere
    cell = protects(as_user(owner), old)
    assert "No longer referenced" in cell and "KMS" not in cell
