"""Support re-enables a disabled key only with a reason; support's re-probe names itself; the overview's "Key
custody" shows the real active key, never the support switch."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from audit.models import AuditEvent, EventType
from encryption import keyring, services
from encryption.models import KeyStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:encryption_tenantkey_changelist"


def _disabled_active_key(tenant: Tenant, owner: Any) -> TenantKey:
    key = keyring.active_tkv(tenant).kek
    services.disable_key(key, actor=owner)
    tenant.refresh_from_db()
    assert tenant.is_sealed
    return key


def _re_enable(client: Any, key: TenantKey, reason: str) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": "re_enable_keys", "_selected_action": [key.pk], "post": "yes", "reason": reason},
    )


def test_support_must_give_a_reason_to_re_enable_a_key(
    as_user: Any, staff: Any, owner: Any, tenant: Tenant
) -> None:
    key = _disabled_active_key(tenant, owner)
    client = as_user(staff)
    page = client.post(reverse(CHANGELIST), {"action": "re_enable_keys", "_selected_action": [key.pk]})
    assert page.status_code == 200 and "Reason" in page.content.decode()
    missing = _re_enable(client, key, "")
    assert missing.status_code == 200 and "Give the reason" in missing.content.decode()
    key.refresh_from_db()
    assert key.status == KeyStatus.DISABLED


def test_support_re_enables_with_a_reason_and_the_tenant_unseals(
    as_user: Any, staff: Any, owner: Any, tenant: Tenant
) -> None:
    key = _disabled_active_key(tenant, owner)
    assert _re_enable(as_user(staff), key, "Ticket 4711: owner locked out").status_code == 302
    key.refresh_from_db()
    tenant.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE and not tenant.is_sealed
    events = list(AuditEvent.objects.filter(tenant=tenant).order_by("seq"))
    types = [e.type for e in events]
    # The key that was disabled comes back: no other key took over, so no rotation is recorded.
    assert types[-2:] == ["tenant-kms.re-enabled", "tenant.unsealed"]
    re_enabled = events[-2]
    assert re_enabled.payload["reason"] == "Ticket 4711: owner locked out"
    assert re_enabled.payload["status"] == "active" and re_enabled.actor_email == staff.email
    assert events[-1].payload["trigger"] == "re-enable"


def test_staff_without_the_key_permission_cannot_re_enable(as_user: Any, owner: Any, tenant: Tenant) -> None:
    key = _disabled_active_key(tenant, owner)
    viewer = make_user("readonly@kodori.test", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_tenant", "view_tenantkey"]))
    _re_enable(as_user(viewer), key, "no right to")
    key.refresh_from_db()
    assert key.status == KeyStatus.DISABLED


def test_the_key_list_shows_the_last_verify_error(as_user: Any, staff: Any, tenant: Tenant) -> None:
    key = keyring.active_tkv(tenant).kek
    TenantKey.objects.filter(pk=key.pk).update(last_verify_error="Access denied by the role's trust policy.")
    page = as_user(staff).get(reverse(CHANGELIST)).content.decode()
    assert "Access denied by the role&#x27;s trust policy." in page


def test_supports_reprobe_names_itself_in_the_unseal_event(
    as_user: Any, staff: Any, owner: Any, tenant: Tenant
) -> None:
    key = keyring.active_tkv(tenant).kek
    services.seal_tenant(tenant, "Simulated refusal.", key=key)
    as_user(staff).post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "reprobe_keys", "_selected_action": [tenant.pk]},
    )
    tenant.refresh_from_db()
    assert not tenant.is_sealed
    unsealed = AuditEvent.objects.filter(tenant=tenant, type=EventType.TENANT_UNSEALED).latest("seq")
    assert unsealed.payload["trigger"] == "support-reprobe" and unsealed.actor_email == staff.email


def test_the_overview_shows_the_active_key_not_the_support_switch(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    client = as_user(owner)
    assert "provisioned with the first upload" in client.get("/").content.decode()
    keyring.active_tkv(tenant)
    page = client.get("/").content.decode()
    assert "Kodori-managed key" in page and "Cloud KMS available" not in page
    TenantKey.objects.filter(tenant=tenant, wrap_method=WrapMethod.GLOBAL).update(status=KeyStatus.RETIRED)
    key = TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_GCP,
        key_id="projects/p/locations/global/keyRings/r/cryptoKeys/overview-key",
        canonical_id="projects/p/locations/global/keyRings/r/cryptoKeys/overview-key",
        status=KeyStatus.ACTIVE,
    )
    page = client.get("/").content.decode()
    assert f"…{key.key_id_suffix}" in page and "Your GCP Cloud KMS key" in page
    services.disable_key(key, actor=owner)
    page = client.get("/").content.decode()
    assert "No active key — tenant sealed" in page


def test_a_pending_key_whose_probe_was_lost_is_queued_again_by_the_schedule(tenant: Tenant) -> None:
    import datetime

    from django.utils import timezone

    from encryption import health

    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    key = TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_GCP,
        key_id="projects/p/locations/global/keyRings/r/cryptoKeys/lost-probe",
        canonical_id="projects/p/locations/global/keyRings/r/cryptoKeys/lost-probe",
    )
    assert health.stale_pending_keys() == []  # just registered: its probe is on its way
    old = timezone.now() - datetime.timedelta(seconds=health.STALE_PENDING_SECONDS + 60)
    TenantKey.objects.filter(pk=key.pk).update(created_at=old)
    assert health.stale_pending_keys() == [key.pk]
    TenantKey.objects.filter(pk=key.pk).update(last_verified_at=timezone.now())  # a retry queued lately
    assert health.stale_pending_keys() == []
