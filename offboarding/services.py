"""Scheduling and cancelling a tenant's deletion. Each verb is one transaction with its audit event; owners
are e-mailed after it commits.

The waiting period is 7 to 30 days (default 30, like a KMS key's deletion window). During it the tenant is
read-only (``tenants.lifecycle.check_writable``), every member sees a banner with the date, and any owner (or
support) can cancel. ``offboarding.erasure`` takes over once the date has passed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from audit import payloads
from audit.encoding import format_time
from audit.models import EventType
from audit.services import actor_fields, record
from tenants import lifecycle
from tenants.lifecycle import TenantStateError, Transition, due_text
from tenants.models import Membership, Tenant, TenantState

from .models import OPEN_STATUSES, DeletionRequest, DeletionStatus, Via

logger = logging.getLogger(__name__)

MIN_DAYS = 7
MAX_DAYS = 30
DEFAULT_DAYS = 30


def due_date(now: datetime, days: int) -> datetime:
    """When a deletion scheduled ``now`` with ``days`` of waiting falls due.

    ``TENANT_DELETION_SHORT_WINDOW_SECONDS`` (development and demos only; refused in production by the
    ``offboarding.E001`` check) replaces the days with that many seconds, so an erasure can be watched.
    """
    short = int(getattr(settings, "TENANT_DELETION_SHORT_WINDOW_SECONDS", 0) or 0)
    return now + (timedelta(seconds=short) if short > 0 else timedelta(days=days))


def open_request(tenant: Tenant) -> DeletionRequest | None:
    return DeletionRequest.objects.for_tenant(tenant).filter(status__in=OPEN_STATUSES).first()


def owner_emails(tenant: Tenant) -> list[str]:
    owners = Membership.objects.for_tenant(tenant).owners().select_related("user")
    return sorted({m.user.email for m in owners if m.user.email and m.user.is_active})


def schedule_deletion(
    tenant: Tenant,
    *,
    actor: Any,
    via: Via,
    days: int = DEFAULT_DAYS,
    reason: str = "",
    request: HttpRequest | None = None,
) -> DeletionRequest:
    """Schedule ``tenant``'s erasure ``days`` from now. Support must give the customer's request as reason.

    The callers check who may do it (an owner who typed the tenant's name and their password; a staff user in
    the admin); this checks the rules that hold for everyone.
    """
    if not MIN_DAYS <= int(days) <= MAX_DAYS:
        raise TenantStateError(f"The waiting period must be {MIN_DAYS} to {MAX_DAYS} days.")
    reason = reason.strip()
    if via == Via.SUPPORT and not reason:
        raise TenantStateError(
            "Support schedules a deletion only on the customer's written request: quote it."
        )
    now = timezone.now()
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        lifecycle.check(tenant, Transition.SCHEDULE)
        due = due_date(now, int(days))
        person_id, name, email = actor_fields(actor)
        deletion = DeletionRequest.objects.create(
            tenant=tenant,
            via=via,
            reason=reason,
            waiting_days=int(days),
            requested_at=now,
            due_at=due,
            requested_by_id=person_id,
            requested_by_name=name,
            requested_by_email=email,
        )
        tenant.state = TenantState.DELETION_SCHEDULED
        tenant.deletion_due_at = due
        tenant.save(update_fields=["state", "deletion_due_at"])
        record(
            tenant,
            EventType.TENANT_DELETION_SCHEDULED,
            actor=actor,
            request=request,
            payload=payloads.deletion_scheduled(
                due_at=format_time(due), waiting_days=int(days), via=via, reason=reason
            ),
        )
        transaction.on_commit(lambda: _mail_scheduled(deletion, _base_url(request)))
    return deletion


def cancel_deletion(
    tenant: Tenant, *, actor: Any, via: Via, reason: str = "", request: HttpRequest | None = None
) -> DeletionRequest:
    """Cancel a scheduled deletion: the tenant is active (and writable) again at once."""
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        lifecycle.check(tenant, Transition.CANCEL)
        deletion = DeletionRequest.objects.select_for_update().get(
            tenant=tenant, status=DeletionStatus.SCHEDULED
        )
        _, name, email = actor_fields(actor)
        deletion.status = DeletionStatus.CANCELLED
        deletion.cancelled_at = timezone.now()
        deletion.cancelled_by_name = name
        deletion.cancelled_by_email = email
        deletion.cancel_via = via
        deletion.cancel_reason = reason.strip()
        deletion.save()
        tenant.state = TenantState.ACTIVE
        tenant.deletion_due_at = None
        tenant.save(update_fields=["state", "deletion_due_at"])
        record(
            tenant,
            EventType.TENANT_DELETION_CANCELLED,
            actor=actor,
            request=request,
            payload=payloads.deletion_cancelled(
                due_at=format_time(deletion.due_at), via=via, reason=deletion.cancel_reason
            ),
        )
        transaction.on_commit(lambda: _mail_cancelled(deletion, _base_url(request)))
    return deletion


# --- E-mail ------------------------------------------------------------------------------------------------


def _base_url(request: HttpRequest | None) -> str:
    if request is not None:
        return request.build_absolute_uri("/").rstrip("/")
    return str(getattr(settings, "KODORI_BASE_URL", "")).rstrip("/")


def _mail_scheduled(deletion: DeletionRequest, base_url: str) -> None:
    tenant = deletion.tenant
    who = deletion.requested_by_email or deletion.requested_by_name
    how = "on your written request, through Kodori support" if deletion.via == Via.SUPPORT else "as an owner"
    body = [
        f"{who} scheduled the deletion of {tenant.name} on Kodori ({how}).",
        f"On {due_text(deletion.due_at)} Kodori will erase it: every key and data key first, so that no copy "
        "of any file can be decrypted again, then every file, member and API token.",
        "Until then the tenant is read-only: download or export your files now "
        f"({base_url}{reverse('offboarding:export')}).",
        f"Any owner can cancel the deletion until then: {base_url}{reverse('offboarding:deletion')}",
    ]
    if deletion.reason:
        body.insert(1, f"Reason given: {deletion.reason}")
    _send(tenant, f"{tenant.name} will be erased on {due_text(deletion.due_at)}", body)


def _mail_cancelled(deletion: DeletionRequest, base_url: str) -> None:
    tenant = deletion.tenant
    who = deletion.cancelled_by_email or deletion.cancelled_by_name
    body = [
        f"{who} cancelled the deletion of {tenant.name} that was due on {due_text(deletion.due_at)}.",
        f"The tenant is active again; nothing was erased. {base_url}{reverse('offboarding:deletion')}",
    ]
    _send(tenant, f"Deletion of {tenant.name} cancelled", body)


def _send(tenant: Tenant, subject: str, lines: list[str]) -> None:
    recipients = owner_emails(tenant)
    if not recipients:
        return
    try:
        send_mail(subject, "\n\n".join(lines), settings.DEFAULT_FROM_EMAIL, recipients)
    except Exception:
        # After the commit: the deletion is scheduled (or cancelled) and audited whatever the mail server
        # says, and the page shows it; a refused e-mail must not turn that into a server error.
        logger.exception("offboarding: could not e-mail the owners of tenant %s: %s", tenant.pk, subject)
