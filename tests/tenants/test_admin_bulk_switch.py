"""Support's bulk cloud-KMS switch asks for a reason on a confirmation page, like the change form does."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from audit import chain
from audit.models import AuditEvent
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:tenants_tenant_changelist"


def _act(client: Any, action: str, tenants: list[Tenant], **extra: str) -> Any:
    data: dict[str, Any] = {"action": action, "_selected_action": [t.pk for t in tenants], **extra}
    return client.post(reverse(CHANGELIST), data)


def _switch_events(tenant: Tenant) -> list[AuditEvent]:
    return list(AuditEvent.objects.for_tenant(tenant).filter(type__startswith="tenant.cloud-kms-"))


def test_the_bulk_switch_first_asks_for_a_reason(
    as_user: Any, staff: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    r = _act(as_user(staff), "enable_cloud_kms", [tenant, other_tenant])
    assert r.status_code == 200
    page = r.content.decode()
    assert "Switch Cloud KMS on" in page and "Acme Corp" in page and "Globex" in page
    assert 'name="reason"' in page and 'name="post" value="yes"' in page
    assert 'name="action" value="enable_cloud_kms"' in page
    assert not Tenant.objects.filter(cloud_kms_enabled=True).exists()
    assert _switch_events(tenant) == _switch_events(other_tenant) == []


@pytest.mark.parametrize("reason", ["", "   "])
def test_the_bulk_switch_without_a_reason_changes_nothing(
    as_user: Any, staff: Any, tenant: Tenant, other_tenant: Tenant, reason: str
) -> None:
    r = _act(as_user(staff), "enable_cloud_kms", [tenant, other_tenant], post="yes", reason=reason)
    assert r.status_code == 200
    assert "Say why Cloud KMS is switched" in r.content.decode()
    assert not Tenant.objects.filter(cloud_kms_enabled=True).exists()
    assert _switch_events(tenant) == _switch_events(other_tenant) == []


def test_the_bulk_switch_with_a_reason_switches_and_records_it_for_every_tenant(
    as_user: Any, staff: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    reason = "customers signed the BYOK addendum (ticket 4521)"
    r = _act(as_user(staff), "enable_cloud_kms", [tenant, other_tenant], post="yes", reason=reason)
    assert r.status_code == 302
    assert Tenant.objects.filter(cloud_kms_enabled=True).count() == 2
    for t in (tenant, other_tenant):
        [event] = _switch_events(t)
        assert event.type == "tenant.cloud-kms-enabled"
        assert event.payload == {"cloudKmsEnabled": True, "reason": reason}
        assert (event.actor_id, event.actor_email) == (staff.pk, "support@kodori.test")
        assert chain.verify(t, full=True).ok


def test_the_bulk_switch_off_records_the_reason_and_skips_tenants_already_off(
    as_user: Any, staff: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    client = as_user(staff)
    confirm = _act(client, "disable_cloud_kms", [tenant, other_tenant]).content.decode()
    assert "Globex (globex) — already off" in confirm
    r = _act(client, "disable_cloud_kms", [tenant, other_tenant], post="yes", reason="contract ended")
    assert r.status_code == 302
    assert not Tenant.objects.filter(cloud_kms_enabled=True).exists()
    [event] = _switch_events(tenant)
    assert event.type == "tenant.cloud-kms-disabled"
    assert event.payload == {"cloudKmsEnabled": False, "reason": "contract ended"}
    assert _switch_events(other_tenant) == []  # nothing changed there, so nothing is recorded


def test_staff_who_may_only_view_tenants_cannot_switch(as_user: Any, tenant: Tenant, db: None) -> None:
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    viewer = make_user("viewer@kodori.test", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_tenant"))
    r = _act(as_user(viewer), "enable_cloud_kms", [tenant], post="yes", reason="trying")
    assert r.status_code in (302, 403)
    tenant.refresh_from_db()
    assert tenant.cloud_kms_enabled is False
    assert _switch_events(tenant) == []
