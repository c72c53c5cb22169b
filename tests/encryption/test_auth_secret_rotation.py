"""Rotating AUTH_SECRET loses nothing: fallbacks keep old wraps readable, the command re-wraps them."""

from __future__ import annotations

import contextlib
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from encryption import keyring
from encryption.format import envelope
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
            keyring.add_key_version(t)
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


# --- The audit trail of a rotation --------------------------------------------------------------------------

ROTATED = "tenant-kms.auth-secret-rotated"
LOST = "a-secret-nobody-kept-anymore-0123456789abcdefgh"


def _versions_under(secret: str, tenant: Tenant, count: int = 1) -> None:
    with override_settings(AUTH_SECRET=secret, AUTH_SECRET_FALLBACKS=[]):
        for _ in range(count):
            keyring.add_key_version(tenant)
    keyring.cache.clear()


def _rotate(*fallbacks: str) -> str:
    out = StringIO()
    with (
        override_settings(AUTH_SECRET=NEW, AUTH_SECRET_FALLBACKS=list(fallbacks)),
        contextlib.suppress(SystemExit),  # it exits 1 when a version failed
    ):
        call_command("rotate_auth_secret", stdout=out, stderr=StringIO())
    keyring.cache.clear()
    return out.getvalue()


def _fingerprint(secret: str, tenant: Tenant) -> str:
    from encryption.providers.local import derive_kek, fingerprint

    return fingerprint(derive_kek(secret, tenant.pk)).hex()


def test_it_records_the_rotation_in_each_tenant_it_rewrapped(tenant: Tenant, other_tenant: Tenant) -> None:
    from audit import chain
    from audit.models import AuditEvent

    current = Tenant.objects.create(slug="initech", name="Initech")
    _versions_under(OLD, tenant, count=2)
    _versions_under(OLD, other_tenant)
    _versions_under(NEW, current)

    assert "re-wrapped 3, already current 1, failed 0" in _rotate(OLD)

    for t, versions in ((tenant, [1, 2]), (other_tenant, [1])):
        [event] = AuditEvent.objects.for_tenant(t).filter(type=ROTATED)
        assert event.actor_id is None and event.actor_name == "system"
        assert event.payload == {
            "rewrapped": len(versions),
            "versions": versions,
            "failed": 0,
            "kekFingerprint": _fingerprint(NEW, t),
            "previousKekFingerprints": [_fingerprint(OLD, t)],
        }
        assert chain.verify(t, full=True).ok
    assert not AuditEvent.objects.for_tenant(current).filter(type=ROTATED).exists()


def test_no_secret_reaches_the_audit_log(tenant: Tenant, other_tenant: Tenant) -> None:
    from audit.encoding import canonical_json
    from audit.models import AuditEvent
    from encryption.providers.local import derive_kek

    _versions_under(OLD, tenant)
    _versions_under(OLD, other_tenant)
    _rotate(OLD)
    recorded = AuditEvent.objects.filter(type=ROTATED)
    assert recorded.count() == 2
    stored = " ".join(canonical_json(e.payload).decode() for e in AuditEvent.objects.all())
    for secret in (OLD, NEW):
        assert secret not in stored
        assert secret[:12] not in stored
        for t in (tenant, other_tenant):
            kek = derive_kek(secret, t.pk)
            assert kek.hex() not in stored and kek.hex()[:16] not in stored


def test_a_dry_run_and_a_run_with_nothing_to_do_record_nothing(tenant: Tenant) -> None:
    from audit.models import AuditEvent

    _versions_under(OLD, tenant)
    with override_settings(AUTH_SECRET=NEW, AUTH_SECRET_FALLBACKS=[OLD]):
        call_command("rotate_auth_secret", "--dry-run", stdout=StringIO())
    assert not AuditEvent.objects.filter(type=ROTATED).exists()
    _rotate(OLD)
    assert AuditEvent.objects.filter(type=ROTATED).count() == 1
    assert "re-wrapped 0, already current 1" in _rotate(OLD)
    assert AuditEvent.objects.filter(type=ROTATED).count() == 1


def test_the_event_counts_the_versions_it_could_not_rewrap(tenant: Tenant) -> None:
    from audit.models import AuditEvent

    _versions_under(OLD, tenant)
    _versions_under(LOST, tenant)
    assert "re-wrapped 1, already current 0, failed 1" in _rotate(OLD)
    [event] = AuditEvent.objects.for_tenant(tenant).filter(type=ROTATED)
    assert event.payload["versions"] == [1] and event.payload["failed"] == 1
