"""Access ends when membership ends: removal revokes a member's tokens for good; a demotion bites at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from audit import chain
from audit.models import AuditEvent
from blobs.models import ApiToken
from tenants import services as tenant_services
from tenants.models import Membership, Role, Tenant
from tests.blobs.support import bearer, make_blob, make_token

pytestmark = pytest.mark.django_db


def _remove(user: Any, tenant: Tenant, actor: Any) -> None:
    tenant_services.remove_member(Membership.objects.get(user=user, tenant=tenant), actor=actor)


def _list(secret: str) -> int:
    return Client().get(reverse("blobs:api_blobs"), **bearer(secret)).status_code


def _upload(secret: str, name: str = "new.txt") -> int:
    url = f"{reverse('blobs:api_blobs')}?name={name}"
    return Client().post(url, b"fresh bytes\n", content_type="text/plain", **bearer(secret)).status_code


def _delete(secret: str, blob_id: Any) -> int:
    return Client().delete(reverse("blobs:api_blob", args=[blob_id]), **bearer(secret)).status_code


def test_it_revokes_every_token_of_a_removed_member(owner: Any, member: Any, tenant: Tenant) -> None:
    first, second = make_token(member), make_token(member)
    owners = make_token(owner)
    assert _list(first) == _list(second) == 200
    _remove(member, tenant, owner)
    assert ApiToken.objects.filter(user=member, revoked_at__isnull=True).count() == 0
    assert _list(first) == _list(second) == 401
    assert ApiToken.objects.get(user=owner).revoked_at is None
    assert _list(owners) == 200


def test_re_adding_the_user_does_not_revive_their_old_token(owner: Any, member: Any, tenant: Tenant) -> None:
    old = make_token(member)
    _remove(member, tenant, owner)
    revoked_at = ApiToken.objects.get(user=member).revoked_at
    tenant_services.add_member(tenant, member.email, Role.MEMBER, actor=owner)
    assert _list(old) == 401
    assert ApiToken.objects.get(user=member).revoked_at == revoked_at
    assert _list(make_token(member)) == 200  # the member is back: a new token works


def test_it_refuses_a_token_older_than_the_current_membership(
    owner: Any, member: Any, tenant: Tenant
) -> None:
    # A removal that revoked nothing (from before the revocation existed, or one that bypassed the service):
    # the token is still "active", but it belongs to a membership that ended.
    old = make_token(member)
    Membership.objects.filter(user=member, tenant=tenant).delete()
    Membership.objects.create(user=member, tenant=tenant, role=Role.MEMBER)
    assert ApiToken.objects.get(user=member).revoked_at is None
    assert _list(old) == 401
    assert ApiToken.objects.get(user=member).last_used_at is None  # a refused token is not marked used


def test_it_records_one_revocation_per_token_with_the_reason(owner: Any, member: Any, tenant: Tenant) -> None:
    make_token(member)
    make_token(member)
    tokens = list(ApiToken.objects.filter(user=member).order_by("pk"))
    before = AuditEvent.objects.for_tenant(tenant).count()
    _remove(member, tenant, owner)
    events = list(AuditEvent.objects.for_tenant(tenant).order_by("seq"))[before:]
    assert [e.type for e in events] == ["membership.removed", "api-token.revoked", "api-token.revoked"]
    assert [e.payload for e in events[1:]] == [
        {"tokenId": t.pk, "name": t.name, "reason": "membership removed"} for t in tokens
    ]
    assert {e.actor_id for e in events} == {owner.pk}
    assert chain.verify(tenant, full=True).ok


def test_a_member_without_tokens_leaves_only_the_removal_event(
    owner: Any, viewer: Any, tenant: Tenant
) -> None:
    _remove(viewer, tenant, owner)
    assert [e.type for e in AuditEvent.objects.for_tenant(tenant)] == ["membership.removed"]


def test_a_removal_that_rolls_back_revokes_nothing(owner: Any, member: Any, tenant: Tenant) -> None:
    secret = make_token(member)
    with pytest.raises(RuntimeError), transaction.atomic():
        _remove(member, tenant, owner)
        raise RuntimeError("the removal's transaction fails after the signal")
    assert ApiToken.objects.get(user=member).revoked_at is None
    assert not AuditEvent.objects.for_tenant(tenant).filter(type="api-token.revoked").exists()
    assert _list(secret) == 200


def test_it_revokes_only_the_tokens_of_the_tenant_they_left(
    owner: Any, member: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    Membership.objects.create(user=member, tenant=other_tenant, role=Role.MEMBER)
    here, there = make_token(member, tenant), make_token(member, other_tenant)
    _remove(member, tenant, owner)
    assert _list(here) == 401
    assert _list(there) == 200
    assert not AuditEvent.objects.for_tenant(other_tenant).filter(type="api-token.revoked").exists()


def test_a_token_revoked_by_hand_is_not_revoked_again(
    as_user: Any, owner: Any, member: Any, tenant: Tenant
) -> None:
    make_token(member)
    token = ApiToken.objects.get(user=member)
    assert as_user(member).post(reverse("blobs:token_revoke", args=[token.pk])).status_code == 302
    _remove(member, tenant, owner)
    assert AuditEvent.objects.for_tenant(tenant).filter(type="api-token.revoked").count() == 1


def test_a_demoted_admins_token_loses_write_access_on_the_next_request(
    owner: Any, admin: Any, member: Any, tenant: Tenant
) -> None:
    secret = make_token(admin)
    first, second = make_blob(member, name="a.txt"), make_blob(member, name="b.txt")
    assert _delete(secret, first.pk) == 204  # an admin deletes another member's file
    assert _upload(secret, "by-admin.txt") == 201
    tenant_services.change_role(Membership.objects.get(user=admin, tenant=tenant), Role.VIEWER, actor=owner)
    assert _delete(secret, second.pk) == 403
    assert _upload(secret, "by-viewer.txt") == 403
    assert _list(secret) == 200  # still a viewer: reading goes on
    assert ApiToken.objects.get(user=admin).revoked_at is None  # narrowed, not revoked


def test_a_removed_members_tokens_show_as_revoked_to_admins(
    as_user: Any, owner: Any, member: Any, tenant: Tenant
) -> None:
    make_token(member)
    _remove(member, tenant, owner)
    page = as_user(owner).get(reverse("blobs:tokens")).content.decode()
    assert "member@acme.test" in page and "revoked" in page
    assert reverse("blobs:token_revoke", args=[ApiToken.objects.get(user=member).pk]) not in page
