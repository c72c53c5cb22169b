"""The /encryption overview: current key, kodori-managed state, history with what each key protects."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.urls import reverse

from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, services
from encryption.format import envelope
from encryption.models import WrapMethod
from tenants.models import Tenant
from tests.encryption.conftest import customer_key_url

pytestmark = pytest.mark.django_db


def test_a_new_tenant_is_kodori_managed_and_told_how_to_get_cloud_kms(as_user: Any, owner: Any) -> None:
    r = as_user(owner).get(reverse("encryption:index"))
    assert r.status_code == 200
    html = r.content.decode()
    assert "Kodori-managed" in html and "switched off" in html and "support@" in html
    assert "the first upload provisions" in html


def test_it_shows_the_active_customer_key_and_what_each_key_protects(
    as_user: Any, owner: Any, tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.cache.clear()
    for _ in range(3):
        keyring.new_data_key(tenant, uuid.uuid4(), envelope.FORMAT_VERSION)
    url = customer_key_url(vault, "shown")
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AZURE, url, {"directory_id": vault.directory_id}, actor=owner
    )
    services.verify_key(key.pk)
    keyring.new_data_key(tenant, uuid.uuid4(), envelope.FORMAT_VERSION)
    html = as_user(owner).get(reverse("encryption:index")).content.decode()
    assert "Your own Cloud KMS key" in html and f"…{url[-12:]}" in html
    assert url not in html  # only the last 12 characters are shown
    assert re.search(r"\b1 file\s*<br>", html)  # the Azure key
    assert "3 files still depend on it" in html  # the retired Kodori-managed key still protects older files
    assert "Re-wrap 3 data keys to the active key" in html
    assert "switched off" not in html


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_cannot_see_it(request: Any, as_user: Any, who: str) -> None:
    assert as_user(request.getfixturevalue(who)).get(reverse("encryption:index")).status_code == 403


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.cache.clear()
    return tenant


def test_an_owner_registers_an_azure_key_and_watches_it_become_active(
    as_user: Any,
    owner: Any,
    cloud_tenant: Tenant,
    vault: AzureKeyVaultEmulator,
    kodori_app: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from encryption.models import KeyStatus, TenantKey

    client = as_user(owner)
    url = customer_key_url(vault, "via-form")
    with django_capture_on_commit_callbacks() as queued:
        r = client.post(
            reverse("encryption:register", args=["azure"]),
            {"key_id": url, "directory_id": vault.directory_id},
        )
    assert r.status_code == 302 and len(queued) == 1
    key = TenantKey.objects.get(tenant=cloud_tenant, key_id=url)
    status_url = reverse("encryption:key_status", args=[key.pk])
    pending = client.get(status_url).content.decode()
    assert "Pending verification" in pending and 'hx-trigger="every 2s"' in pending
    services.verify_key(key.pk)  # what the queued Celery task runs
    active = client.get(status_url).content.decode()
    assert "Active" in active and "hx-trigger" not in active
    assert (
        client.get(status_url, HTTP_HX_REQUEST="true")["HX-Refresh"] == "true"
    )  # the page reloads once settled
    assert TenantKey.objects.get(pk=key.pk).status == KeyStatus.ACTIVE


def test_the_aws_form_shows_kodoris_principal_and_the_tenants_external_id(
    as_user: Any, owner: Any, cloud_tenant: Tenant
) -> None:
    html = as_user(owner).get(reverse("encryption:register", args=["aws"])).content.decode()
    assert services.external_id_for(cloud_tenant) in html
    assert '"sts:ExternalId"' in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"key_id": "arn:aws:kms:eu-west-1:1:key/x", "role_arn": "arn:aws:iam::111122223333:role/r"}, "ARN"),
        (
            {
                "key_id": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "role_arn": "arn:aws:iam::111122223333:role/r",
                "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            },
            "aws_secret_access_key",
        ),
        ({"key_id": "AKIAIOSFODNN7EXAMPLE", "role_arn": "arn:aws:iam::111122223333:role/r"}, "key_id"),
    ],
    ids=["malformed-arn", "injected-secret-field", "access-key-as-key-id"],
)
def test_the_form_refuses_bad_input_and_stores_nothing(
    as_user: Any, owner: Any, cloud_tenant: Tenant, data: dict[str, str], message: str
) -> None:
    from encryption.models import TenantKey

    r = as_user(owner).post(reverse("encryption:register", args=["aws"]), data)
    assert r.status_code == 400
    assert message in r.content.decode()
    assert "wJalrXUtnFEMI" not in r.content.decode() or "wJalrXUtnFEMI" in data.get("key_id", "")
    assert not TenantKey.objects.filter(tenant=cloud_tenant).exclude(wrap_method=WrapMethod.GLOBAL).exists()


def test_disabling_the_active_key_needs_the_typed_confirmation(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    key = keyring.active_tkv(tenant).kek
    client = as_user(owner)
    url = reverse("encryption:disable", args=[key.pk])
    assert "seals" in client.get(url).content.decode()
    assert client.post(url, {"confirm": "wrong"}).status_code == 400
    tenant.refresh_from_db()
    assert not tenant.is_sealed
    assert client.post(url, {"confirm": tenant.slug}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.is_sealed
    page = client.get(reverse("encryption:index")).content.decode()
    # Probing again cannot help a tenant without an active key; re-enabling the key can.
    assert "No active key — tenant sealed" in page and "Retry now" not in page
    assert reverse("encryption:enable", args=[key.pk]) in page


def test_the_aws_form_refuses_a_region_that_contradicts_the_arn(
    as_user: Any, owner: Any, cloud_tenant: Tenant
) -> None:
    r = as_user(owner).post(
        reverse("encryption:register", args=["aws"]),
        {
            "key_id": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "region": "us-east-1",
            "role_arn": "arn:aws:iam::111122223333:role/r",
        },
    )
    assert r.status_code == 400 and "region" in r.content.decode()
