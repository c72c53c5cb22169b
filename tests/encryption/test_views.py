"""The /encryption overview: current key, kodori-managed state, history with what each key protects."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import reverse

from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import envelope, keyring, services
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
    assert "Your own cloud KMS key" in html and f"…{url[-12:]}" in html
    assert url not in html  # only the last 12 characters are shown
    assert "1 key version, 1 file" in html  # the Azure key
    assert "1 key version, 3 files" in html  # the retired Kodori-managed key still protects the older files
    assert "switched off" not in html


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_cannot_see_it(request: Any, as_user: Any, who: str) -> None:
    assert as_user(request.getfixturevalue(who)).get(reverse("encryption:index")).status_code == 403
