"""Support's Django admin: find tenants, see members, switch cloud KMS through the one service seam."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tenants import signals
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def switches() -> Any:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.cloud_kms_switched.connect(receiver)
    yield seen
    signals.cloud_kms_switched.disconnect(receiver)


def test_staff_find_a_tenant_by_member_email(as_user: Any, staff: Any, tenant: Tenant, owner: Any) -> None:
    r = as_user(staff).get(reverse("admin:tenants_tenant_changelist"), {"q": "owner@acme"})
    assert r.status_code == 200
    assert b"Acme Corp" in r.content


def test_staff_filter_tenants_by_cloud_kms(
    as_user: Any, staff: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    Tenant.objects.filter(pk=other_tenant.pk).update(cloud_kms_enabled=True)
    r = as_user(staff).get(reverse("admin:tenants_tenant_changelist"), {"cloud_kms_enabled__exact": "1"})
    assert b"Globex" in r.content and b"Acme Corp" not in r.content


def test_the_change_page_shows_memberships_read_only(
    as_user: Any, staff: Any, tenant: Tenant, owner: Any
) -> None:
    r = as_user(staff).get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    assert r.status_code == 200
    assert b"owner@acme.test" in r.content
    assert b'name="memberships-0-role"' not in r.content


def test_staff_switch_cloud_kms_on_through_the_service(
    as_user: Any, staff: Any, tenant: Tenant, switches: list[dict[str, Any]]
) -> None:
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    data = {
        "name": tenant.name,
        "slug": tenant.slug,
        "cloud_kms_enabled": "on",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "keys-TOTAL_FORMS": "0",
        "keys-INITIAL_FORMS": "0",
    }
    r = as_user(staff).post(url, data)
    assert r.status_code == 200 and b"Say why Cloud KMS is switched" in r.content  # a reason is required
    tenant.refresh_from_db()
    assert tenant.cloud_kms_enabled is False and switches == []
    r = as_user(staff).post(url, {**data, "cloud_kms_reason": "signed the BYOK addendum"})
    assert r.status_code == 302, r.content[:2000]
    tenant.refresh_from_db()
    assert tenant.cloud_kms_enabled is True
    assert len(switches) == 1
    assert switches[0]["enabled"] is True and switches[0]["actor"] == staff
    assert switches[0]["reason"] == "signed the BYOK addendum"


def test_saving_without_changing_the_switch_announces_nothing(
    as_user: Any, staff: Any, tenant: Tenant, switches: list[dict[str, Any]]
) -> None:
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    data = {
        "name": "Acme Corporation",
        "slug": tenant.slug,
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "keys-TOTAL_FORMS": "0",
        "keys-INITIAL_FORMS": "0",
    }
    assert as_user(staff).post(url, data).status_code == 302
    assert switches == []


def test_tenant_users_cannot_open_the_admin(as_user: Any, owner: Any) -> None:
    r = as_user(owner).get(reverse("admin:tenants_tenant_changelist"))
    assert r.status_code == 302 and "/admin/login/" in r["Location"]


def test_the_admin_refuses_staff_without_permissions(as_user: Any, db: None) -> None:
    from tests.conftest import make_user

    bare_staff = make_user("bare@kodori.test", is_staff=True)
    assert as_user(bare_staff).get(reverse("admin:tenants_tenant_changelist")).status_code == 403


def test_staff_see_each_tenants_key_status_and_can_reprobe(as_user: Any, staff: Any, tenant: Tenant) -> None:
    from encryption import keyring

    keyring.active_tkv(tenant)
    client = as_user(staff)
    page = client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()
    assert "registered key" in page.lower() and "kodori-managed" in page
    r = client.post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "reprobe_keys", "_selected_action": [tenant.pk]},
    )
    assert r.status_code == 302
