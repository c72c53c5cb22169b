"""The members page and its escalation rules (tenants.services)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.urls import reverse

from tenants.models import Membership, Role, Tenant

pytestmark = pytest.mark.django_db


def role_of(user: Any, tenant: Tenant) -> str | None:
    m = Membership.objects.filter(user=user, tenant=tenant).first()
    return m.role if m else None


def membership(user: Any, tenant: Tenant) -> Membership:
    return Membership.objects.get(user=user, tenant=tenant)


def test_it_lists_members_for_owner(as_user: Any, owner: Any, member: Any) -> None:
    r = as_user(owner).get(reverse("tenants:members"))
    assert r.status_code == 200
    assert b"member@acme.test" in r.content and b"owner@acme.test" in r.content


def test_it_adds_a_new_person_and_mails_a_set_password_link(
    as_user: Any, owner: Any, tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        r = as_user(owner).post(reverse("tenants:member_add"), {"email": " New@Acme.test ", "role": "member"})
    assert r.status_code == 302
    m = Membership.objects.get(user__email="new@acme.test", tenant=tenant)
    assert m.role == Role.MEMBER
    assert not m.user.has_usable_password()
    assert len(mail.outbox) == 1
    assert "/accounts/reset/" in mail.outbox[0].body
    assert mail.outbox[0].to == ["new@acme.test"]


def test_it_adds_an_existing_user_without_a_new_account(
    as_user: Any, owner: Any, outsider: Any, tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        r = as_user(owner).post(reverse("tenants:member_add"), {"email": outsider.email, "role": "viewer"})
    assert r.status_code == 302
    assert role_of(outsider, tenant) == Role.VIEWER
    assert "/accounts/reset/" not in mail.outbox[0].body


def test_it_refuses_adding_someone_twice(as_user: Any, owner: Any, member: Any, tenant: Tenant) -> None:
    r = as_user(owner).post(reverse("tenants:member_add"), {"email": member.email, "role": "admin"})
    assert r.status_code == 400
    assert b"already a member" in r.content
    assert role_of(member, tenant) == Role.MEMBER


def test_admin_cannot_create_an_owner(as_user: Any, admin: Any, tenant: Tenant) -> None:
    r = as_user(admin).post(reverse("tenants:member_add"), {"email": "x@acme.test", "role": "owner"})
    assert r.status_code == 400
    assert not Membership.objects.filter(user__email="x@acme.test").exists()


def test_admin_cannot_change_an_owner(as_user: Any, admin: Any, owner: Any, tenant: Tenant) -> None:
    url = reverse("tenants:member_role", args=[membership(owner, tenant).pk])
    as_user(admin).post(url, {"role": "viewer"})
    assert role_of(owner, tenant) == Role.OWNER


def test_admin_cannot_remove_an_owner(as_user: Any, admin: Any, owner: Any, tenant: Tenant) -> None:
    as_user(admin).post(reverse("tenants:member_remove", args=[membership(owner, tenant).pk]))
    assert role_of(owner, tenant) == Role.OWNER


def test_admin_cannot_promote_anyone_to_owner(as_user: Any, admin: Any, member: Any, tenant: Tenant) -> None:
    as_user(admin).post(
        reverse("tenants:member_role", args=[membership(member, tenant).pk]), {"role": "owner"}
    )
    assert role_of(member, tenant) == Role.MEMBER


def test_admin_cannot_raise_their_own_role(as_user: Any, admin: Any, owner: Any, tenant: Tenant) -> None:
    as_user(admin).post(
        reverse("tenants:member_role", args=[membership(admin, tenant).pk]), {"role": "owner"}
    )
    assert role_of(admin, tenant) == Role.ADMIN


def test_admin_can_demote_themselves(as_user: Any, admin: Any, owner: Any, tenant: Tenant) -> None:
    as_user(admin).post(
        reverse("tenants:member_role", args=[membership(admin, tenant).pk]), {"role": "viewer"}
    )
    assert role_of(admin, tenant) == Role.VIEWER


def test_the_last_owner_cannot_be_demoted(as_user: Any, owner: Any, tenant: Tenant) -> None:
    r = as_user(owner).post(
        reverse("tenants:member_role", args=[membership(owner, tenant).pk]), {"role": "admin"}
    )
    assert r.status_code == 302
    assert role_of(owner, tenant) == Role.OWNER


def test_the_last_owner_cannot_be_removed(as_user: Any, owner: Any, tenant: Tenant) -> None:
    as_user(owner).post(reverse("tenants:member_remove", args=[membership(owner, tenant).pk]))
    assert role_of(owner, tenant) == Role.OWNER


def test_an_owner_can_step_down_when_another_owner_remains(
    as_user: Any, owner: Any, member: Any, tenant: Tenant
) -> None:
    client = as_user(owner)
    client.post(reverse("tenants:member_role", args=[membership(member, tenant).pk]), {"role": "owner"})
    assert role_of(member, tenant) == Role.OWNER
    client.post(reverse("tenants:member_role", args=[membership(owner, tenant).pk]), {"role": "admin"})
    assert role_of(owner, tenant) == Role.ADMIN


def test_owner_removes_a_member(as_user: Any, owner: Any, member: Any, tenant: Tenant) -> None:
    r = as_user(owner).post(reverse("tenants:member_remove", args=[membership(member, tenant).pk]))
    assert r.status_code == 302
    assert role_of(member, tenant) is None


def test_an_injected_role_field_on_remove_is_ignored(
    as_user: Any, admin: Any, member: Any, tenant: Tenant
) -> None:
    as_user(admin).post(
        reverse("tenants:member_remove", args=[membership(member, tenant).pk]),
        {"role": "owner", "user": admin.pk},
    )
    assert role_of(member, tenant) is None
    assert role_of(admin, tenant) == Role.ADMIN


def test_an_invalid_role_value_changes_nothing(as_user: Any, owner: Any, member: Any, tenant: Tenant) -> None:
    as_user(owner).post(
        reverse("tenants:member_role", args=[membership(member, tenant).pk]), {"role": "superuser"}
    )
    assert role_of(member, tenant) == Role.MEMBER


def test_outsider_gets_404_for_another_tenants_membership(
    as_user: Any, owner: Any, outsider: Any, other_tenant: Tenant
) -> None:
    foreign = membership(outsider, other_tenant)
    r = as_user(owner).post(reverse("tenants:member_role", args=[foreign.pk]), {"role": "viewer"})
    assert r.status_code == 404
    r = as_user(owner).post(reverse("tenants:member_remove", args=[foreign.pk]))
    assert r.status_code == 404
    assert role_of(outsider, other_tenant) == Role.OWNER


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_cannot_manage_members(
    request: Any, as_user: Any, who: str, owner: Any, tenant: Tenant
) -> None:
    user = request.getfixturevalue(who)
    client = as_user(user)
    assert client.get(reverse("tenants:members")).status_code == 403
    assert (
        client.post(reverse("tenants:member_add"), {"email": "x@acme.test", "role": "viewer"}).status_code
        == 403
    )
    r = client.post(reverse("tenants:member_role", args=[membership(user, tenant).pk]), {"role": "owner"})
    assert r.status_code == 403
    assert role_of(user, tenant) == who


def test_the_page_offers_the_last_owner_no_control_that_would_be_refused(
    as_user: Any, owner: Any, member: Any, tenant: Tenant
) -> None:
    client = as_user(owner)
    mine = membership(owner, tenant).pk
    page = client.get(reverse("tenants:members")).content.decode()
    assert reverse("tenants:member_role", args=[mine]) not in page
    assert reverse("tenants:member_remove", args=[mine]) not in page
    assert "the only owner" in page
    # The member's row keeps its controls.
    assert reverse("tenants:member_role", args=[membership(member, tenant).pk]) in page
    # With a second owner, both owners can be changed again.
    client.post(reverse("tenants:member_role", args=[membership(member, tenant).pk]), {"role": "owner"})
    page = client.get(reverse("tenants:members")).content.decode()
    assert reverse("tenants:member_remove", args=[mine]) in page and "the only owner" not in page
