"""Membership and tenant verbs. Each is atomic and announces itself (see ``signals``) in its transaction.

The escalation rules live here, not in forms or views, so every entry point (pages, admin, API, shell) obeys
them: admins neither create nor change owners, the last owner can be neither removed nor demoted, and nobody
raises their own role.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from . import signals
from .models import Membership, Role, Tenant


class MembershipRuleError(ValidationError):
    """A change to memberships that the rules forbid; the message says which rule and what to do."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _actor_role(tenant: Tenant, actor: Any) -> Role:
    membership = Membership.objects.for_tenant(tenant).filter(user=actor).first()
    if membership is None or not membership.role_enum.manages_tenant:
        raise MembershipRuleError("Only an owner or admin of this tenant can manage its members.")
    return membership.role_enum


def assignable_roles(actor_role: Role) -> list[Role]:
    """The roles ``actor_role`` may give to someone: owners any, admins anything but owner."""
    if actor_role == Role.OWNER:
        return list(Role)
    if actor_role == Role.ADMIN:
        return [Role.ADMIN, Role.MEMBER, Role.VIEWER]
    return []


def _lock_owner_count(tenant: Tenant) -> int:
    # Lock the owner rows so two concurrent demotions cannot both see "another owner is left".
    return len(list(Membership.objects.for_tenant(tenant).owners().select_for_update().values_list("pk")))


@transaction.atomic
def add_member(tenant: Tenant, email: str, role: Role, *, actor: Any, base_url: str = "") -> Membership:
    """Add the user with ``email`` to ``tenant``, creating an account (and mailing a set-password link)."""
    actor_role = _actor_role(tenant, actor)
    role = Role(role)
    if role not in assignable_roles(actor_role):
        raise MembershipRuleError("Only an owner can add another owner.")
    email = normalize_email(email)
    user_model = get_user_model()
    user = user_model.objects.filter(email__iexact=email).first()
    created_account = user is None
    if user is None:
        user = user_model.objects.create_user(username=email, email=email)
        user.set_unusable_password()
        user.save(update_fields=["password"])
    elif Membership.objects.for_tenant(tenant).filter(user=user).exists():
        raise MembershipRuleError(f"{email} is already a member of {tenant.name}.")
    membership = Membership.objects.create(user=user, tenant=tenant, role=role)
    signals.membership_added.send(
        sender=Membership, tenant=tenant, actor=actor, membership=membership, created_account=created_account
    )
    transaction.on_commit(lambda: _send_welcome(membership, created_account, base_url))
    return membership


def _send_welcome(membership: Membership, created_account: bool, base_url: str) -> None:
    tenant, user = membership.tenant, membership.user
    lines = [f"You have been added to {tenant.name} on Kodori as {membership.get_role_display()}."]
    if created_account:
        uid = urlsafe_base64_encode(force_bytes(user.pk))
        token = default_token_generator.make_token(user)
        path = reverse("password_reset_confirm", kwargs={"uidb64": uid, "token": token})
        lines.append(f"Choose your password here: {base_url}{path}")
    else:
        lines.append(f"Sign in at {base_url}{reverse('login')} and switch to {tenant.name}.")
    send_mail(
        f"Welcome to {tenant.name} on Kodori", "\n\n".join(lines), settings.DEFAULT_FROM_EMAIL, [user.email]
    )


@transaction.atomic
def change_role(membership: Membership, new_role: Role, *, actor: Any) -> Membership:
    """Give ``membership`` a new role, within what ``actor`` may grant."""
    tenant = membership.tenant
    actor_role = _actor_role(tenant, actor)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    new_role, previous = Role(new_role), membership.role_enum
    if new_role == previous:
        return membership
    if actor_role != Role.OWNER and Role.OWNER in (previous, new_role):
        raise MembershipRuleError("Only an owner can make someone an owner or change an owner's role.")
    if membership.user_id == actor.pk and new_role.rank > previous.rank:
        raise MembershipRuleError("You cannot raise your own role; ask an owner.")
    if previous == Role.OWNER and _lock_owner_count(tenant) <= 1:
        raise MembershipRuleError("This is the last owner. Make someone else an owner first.")
    membership.role = new_role
    membership.save(update_fields=["role"])
    signals.membership_role_changed.send(
        sender=Membership, tenant=tenant, actor=actor, membership=membership, previous_role=previous
    )
    return membership


@transaction.atomic
def remove_member(membership: Membership, *, actor: Any) -> None:
    """Take ``membership``'s user out of its tenant. Their account stays; their blobs stay the tenant's."""
    tenant = membership.tenant
    actor_role = _actor_role(tenant, actor)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role_enum == Role.OWNER:
        if actor_role != Role.OWNER:
            raise MembershipRuleError("Only an owner can remove an owner.")
        if _lock_owner_count(tenant) <= 1:
            raise MembershipRuleError("This is the last owner. Make someone else an owner first.")
    user = membership.user
    role = membership.role
    membership.delete()
    signals.membership_removed.send(
        sender=Membership, tenant=tenant, actor=actor, user_id=user.pk, email=user.email, role=role
    )


@transaction.atomic
def set_cloud_kms_enabled(tenant: Tenant, enabled: bool, *, actor: Any, reason: str = "") -> bool:
    """Support's switch for cloud KMS registration, with the reason support gives. True when it changed."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if tenant.cloud_kms_enabled == enabled:
        return False
    tenant.cloud_kms_enabled = enabled
    tenant.save(update_fields=["cloud_kms_enabled"])
    signals.cloud_kms_switched.send(sender=Tenant, tenant=tenant, actor=actor, enabled=enabled, reason=reason)
    return True
