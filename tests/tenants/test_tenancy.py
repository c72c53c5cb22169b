"""Resolving the current tenant, switching between tenants, and tenant-scoped querysets."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tenants.middleware import SESSION_KEY
from tenants.models import Membership, Role, Tenant

pytestmark = pytest.mark.django_db


def test_it_resolves_the_only_tenant_of_a_user(as_user: Any, member: Any, tenant: Tenant) -> None:
    r = as_user(member).get(reverse("home"))
    assert r.status_code == 200
    assert r.context["current_tenant"] == tenant
    assert r.context["current_role"] == Role.MEMBER


def test_a_user_in_two_tenants_switches(
    as_user: Any, owner: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    Membership.objects.create(user=owner, tenant=other_tenant, role=Role.VIEWER)
    client = as_user(owner)
    assert client.get(reverse("home")).context["current_tenant"] == tenant  # "Acme Corp" sorts first
    r = client.post(reverse("tenants:switch"), {"tenant": "globex"})
    assert r.status_code == 302
    r = client.get(reverse("home"))
    assert r.context["current_tenant"] == other_tenant
    assert r.context["current_role"] == Role.VIEWER
    # The viewer role in Globex does not open Globex's members page, whatever the role in Acme.
    assert client.get(reverse("tenants:members")).status_code == 403


def test_it_refuses_switching_to_a_tenant_you_are_not_in(
    as_user: Any, owner: Any, other_tenant: Tenant
) -> None:
    client = as_user(owner)
    assert client.post(reverse("tenants:switch"), {"tenant": "globex"}).status_code == 404
    assert client.get(reverse("home")).context["current_tenant"].slug == "acme"


def test_a_forged_session_tenant_is_ignored(
    as_user: Any, owner: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    client = as_user(owner)
    session = client.session
    session[SESSION_KEY] = other_tenant.pk
    session.save()
    r = client.get(reverse("home"))
    assert r.context["current_tenant"] == tenant


def test_a_removed_member_loses_the_tenant_at_once(
    as_user: Any, owner: Any, member: Any, tenant: Tenant
) -> None:
    client = as_user(member)
    assert client.get(reverse("home")).status_code == 200
    Membership.objects.filter(user=member).delete()
    r = client.get(reverse("home"))
    assert r.status_code == 403
    assert b"not a member of any tenant" in r.content


def test_for_tenant_scopes_memberships(
    owner: Any, outsider: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    scoped = Membership.objects.for_tenant(tenant)
    assert list(scoped.values_list("user__email", flat=True)) == ["owner@acme.test"]
    assert not scoped.filter(user=outsider).exists()
    assert list(Tenant.objects.for_user(outsider)) == [other_tenant]


def test_the_navigation_shows_members_only_to_managers(as_user: Any, owner: Any, viewer: Any) -> None:
    assert b'href="/members"' in as_user(owner).get(reverse("home")).content
    assert b'href="/members"' not in as_user(viewer).get(reverse("home")).content


def test_the_database_refuses_a_second_membership_for_the_same_tenant(owner: Any, tenant: Tenant) -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(user=owner, tenant=tenant, role=Role.VIEWER)


def test_the_database_refuses_an_unknown_role(owner: Any, other_tenant: Tenant) -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(user=owner, tenant=other_tenant, role="root")


def test_responses_carry_a_request_id(client: Any) -> None:
    r = client.get(reverse("login"))
    assert len(r["X-Request-ID"]) == 32
    r = client.get(reverse("login"), HTTP_X_REQUEST_ID="upstream-id-1234")
    assert r["X-Request-ID"] == "upstream-id-1234"
    r = client.get(reverse("login"), HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert r["X-Request-ID"] != "bad id\nwith newline"
