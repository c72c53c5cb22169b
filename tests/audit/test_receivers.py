"""Membership changes and support's cloud-KMS switch each leave exactly one event, in their transaction."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.urls import reverse

from audit.models import AuditEvent
from tenants import services as tenant_services
from tenants.models import Membership, Role, Tenant

pytestmark = pytest.mark.django_db


def events(tenant: Tenant) -> list[AuditEvent]:
    return list(AuditEvent.objects.for_tenant(tenant).order_by("seq"))


def test_adding_a_member_records_one_event(as_user: Any, owner: Any, tenant: Tenant) -> None:
    r = as_user(owner).post(reverse("tenants:member_add"), {"email": "New@Acme.test", "role": "viewer"})
    assert r.status_code == 302
    [event] = events(tenant)
    new = Membership.objects.get(user__email="new@acme.test")
    assert event.type == "membership.added"
    assert (event.actor_id, event.actor_email) == (owner.pk, "owner@acme.test")
    assert event.payload == {
        "userId": new.user_id,
        "email": "new@acme.test",
        "role": "viewer",
        "createdAccount": True,
    }
    assert len(event.request_id) >= 8  # the request id middleware's, although signals carry no request
    assert event.ip == "127.0.0.1"  # the test client's address, through the same middleware


def test_changing_a_role_records_one_event(as_user: Any, owner: Any, member: Any, tenant: Tenant) -> None:
    m = Membership.objects.get(user=member, tenant=tenant)
    as_user(owner).post(reverse("tenants:member_role", args=[m.pk]), {"role": "admin"})
    [event] = events(tenant)
    assert event.type == "membership.role-changed"
    assert event.payload == {
        "userId": member.pk,
        "email": "member@acme.test",
        "fromRole": "member",
        "toRole": "admin",
    }


def test_an_unchanged_role_records_nothing(owner: Any, member: Any, tenant: Tenant) -> None:
    tenant_services.change_role(Membership.objects.get(user=member), Role.MEMBER, actor=owner)
    assert events(tenant) == []


def test_removing_a_member_records_one_event(as_user: Any, owner: Any, viewer: Any, tenant: Tenant) -> None:
    m = Membership.objects.get(user=viewer, tenant=tenant)
    as_user(owner).post(reverse("tenants:member_remove", args=[m.pk]))
    [event] = events(tenant)
    assert event.type == "membership.removed"
    assert event.payload == {"userId": viewer.pk, "email": "viewer@acme.test", "role": "viewer"}


def test_a_refused_change_records_nothing(as_user: Any, admin: Any, owner: Any, tenant: Tenant) -> None:
    as_user(admin).post(
        reverse("tenants:member_role", args=[Membership.objects.get(user=owner).pk]), {"role": "viewer"}
    )
    assert events(tenant) == []


@pytest.mark.parametrize("change", ["add", "role", "remove", "cloud-kms"])
def test_a_rolled_back_change_leaves_no_event(change: str, owner: Any, member: Any, tenant: Tenant) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        if change == "add":
            tenant_services.add_member(tenant, "x@acme.test", Role.VIEWER, actor=owner)
        elif change == "role":
            tenant_services.change_role(Membership.objects.get(user=member), Role.VIEWER, actor=owner)
        elif change == "remove":
            tenant_services.remove_member(Membership.objects.get(user=member), actor=owner)
        else:
            tenant_services.set_cloud_kms_enabled(tenant, True, actor=owner)
        assert len(events(tenant)) == 1  # recorded inside the change's transaction...
        raise RuntimeError("the request failed after the change")
    assert events(tenant) == []  # ...and gone with it
    assert Membership.objects.filter(user=member, role=Role.MEMBER).exists()
    tenant.refresh_from_db()
    assert not tenant.cloud_kms_enabled


@pytest.fixture
def support(staff: Any) -> Any:
    staff.user_permissions.add(Permission.objects.get(codename="change_tenant"))
    return staff


def test_support_switching_cloud_kms_in_the_admin_form_records_one_event(
    as_user: Any, support: Any, tenant: Tenant, owner: Any
) -> None:
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    form = {
        "name": tenant.name,
        "slug": tenant.slug,
        "cloud_kms_enabled": "on",
        "cloud_kms_reason": "customer signed the BYOK addendum",
        "keys-TOTAL_FORMS": "0",
        "keys-INITIAL_FORMS": "0",
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "1",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-id": str(Membership.objects.get(user=owner).pk),
        "memberships-0-tenant": str(tenant.pk),
        "_save": "Save",
    }
    r = as_user(support).post(url, form)
    assert r.status_code == 302, r.content.decode()[:3000]
    tenant.refresh_from_db()
    assert tenant.cloud_kms_enabled
    [event] = events(tenant)
    assert event.type == "tenant.cloud-kms-enabled"
    assert event.payload == {"cloudKmsEnabled": True, "reason": "customer signed the BYOK addendum"}
    assert (event.actor_id, event.actor_email) == (support.pk, "support@kodori.test")


def test_support_switching_cloud_kms_with_the_list_actions_records_one_event_per_change(
    as_user: Any, support: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    client = as_user(support)
    url = reverse("admin:tenants_tenant_changelist")
    confirmed = {"post": "yes", "reason": "BYOK pilot"}  # the action's confirmation page, answered
    client.post(
        url, {"action": "enable_cloud_kms", "_selected_action": [tenant.pk, other_tenant.pk], **confirmed}
    )
    client.post(url, {"action": "enable_cloud_kms", "_selected_action": [tenant.pk], **confirmed})  # no event
    client.post(url, {"action": "disable_cloud_kms", "_selected_action": [tenant.pk], **confirmed})
    assert [e.type for e in events(tenant)] == ["tenant.cloud-kms-enabled", "tenant.cloud-kms-disabled"]
    assert [e.type for e in events(other_tenant)] == ["tenant.cloud-kms-enabled"]
