"""Rotating AUTH_SECRET loses nothing: fallbacks keep old wraps readable, the command re-wraps them."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from encryption import envelope, keyring
from encryption.models import TenantKeyVersion
from encryption.providers import ProviderError
from encryption.providers.local import GlobalKeyProvider
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

OLD = "the-old-auth-secret-0123456789abcdefghijkl"
NEW = "the-new-auth-secret-0123456789abcdefghijkl"


def test_it_rotates_auth_secret_without_losing_data(tenant: Tenant, other_tenant: Tenant) -> None:
    keyring.cache.clear()
    with override_settings(AUTH_SECRET=OLD, AUTH_SECRET_FALLBACKS=[]):
        blobs = []
        for t in (tenant, other_tenant):
            keyring.rotate_tkv(t)
            blob_id = uuid.uuid4()
            dek, _ = keyring.new_data_key(t, blob_id, envelope.FORMAT_VERSION)
            blobs.append((t, blob_id, dek))
    keyring.cache.clear()

    with (
        override_settings(AUTH_SECRET=NEW, AUTH_SECRET_FALLBACKS=[]),
        pytest.raises(ProviderError, match="AUTH_SECRET_FALLBACKS"),
    ):
        keyring.open_data_key(tenant, blobs[0][1])

    with override_settings(AUTH_SECRET=NEW, AUTH_SECRET_FALLBACKS=[OLD]):
        for t, blob_id, dek in blobs:
            assert keyring.open_data_key(t, blob_id) == dek
        out = StringIO()
        call_command("rotate_auth_secret", "--dry-run", stdout=out)
        assert "would re-wrap 2" in out.getvalue()
        out = StringIO()
        call_command("rotate_auth_secret", stdout=out)
        assert "re-wrapped 2, already current 0, failed 0" in out.getvalue()
        out = StringIO()
        call_command("rotate_auth_secret", stdout=out)
        assert "re-wrapped 0, already current 2" in out.getvalue()
    keyring.cache.clear()

    with override_settings(AUTH_SECRET=NEW, AUTH_SECRET_FALLBACKS=[]):
        for t, blob_id, dek in blobs:
            assert keyring.open_data_key(t, blob_id) == dek
        for tkv in TenantKeyVersion.objects.all():
            assert GlobalKeyProvider(tkv.tenant_id).wrapped_under_current_secret(bytes(tkv.wrapped_key))


def test_each_tenant_has_its_own_kodori_managed_kek(tenant: Tenant, other_tenant: Tenant) -> None:
    from encryption.providers.local import derive_kek

    assert derive_kek(NEW, tenant.pk) != derive_kek(NEW, other_tenant.pk)
    assert derive_kek(NEW, tenant.pk) != derive_kek(OLD, tenant.pk)
