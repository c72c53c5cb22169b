"""Support's side, in the admin: support schedules only with the customer's written request and cancels
with a reason that lands in the audit log; it is told per tenant when the state does not allow it; staff who
may only look at tenants cannot schedule or cancel; deletion requests are read-only, their certificates
served once they exist; no one but staff reaches any of it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.encoding import format_time
from audit.models import EventType
from offboarding import erasure
from offboarding.models import DeletionRequest, DeletionStatus, Via
from tenants.lifecycle import due_text
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob
from tests.conftest import client_for, make_user
from tests.offboarding import deletion_support
from tests.offboarding.deletion_support import (
    REFUSED_FROM,
    Capture,
    close_to,
    events,
    fresh,
    make_due,
    messages_of,
    schedule,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = deletion_support.private_blob_root


# --- Support, in the admin ----------------------------------------------------------------------------------

TENANTS = "admin:tenants_tenant_changelist"
REQUEST = "Ticket 4711 of 3 May 2027, from ceo@acme.test: please delete our account."


def _action(client: Client, action: str, tenant: Tenant, **data: str) -> Any:
    return client.post(reverse(TENANTS), {"action": action, "_selected_action": [tenant.pk], **data})


def test_support_schedules_only_with_the_customers_written_request(
    staff: Any,
    owner: Any,
    member: Any,
    tenant: Tenant,
    other_tenant: Tenant,
    mailoutbox: list[Any],
    committed: Capture,
) -> None:
    client = client_for(staff)
    ask = _action(client, "schedule_deletion", tenant)
    assert ask.status_code == 200
    page = ask.content.decode()
    assert "Schedule tenant deletion" in page and "Acme Corp (acme)" in page and 'name="reason"' in page
    with committed():
        empty = _action(client, "schedule_deletion", tenant, post="yes", reason="  ")
    assert empty.status_code == 200
    assert "only on the customer&#x27;s written request: quote it." in empty.content.decode()
    assert fresh(tenant).state == TenantState.ACTIVE and not DeletionRequest.objects.exists()
    assert mailoutbox == []

    before = timezone.now()
    with committed():
        done = _action(client, "schedule_deletion", tenant, post="yes", reason=REQUEST)
    assert done.status_code == 302
    tenant = fresh(tenant)
    assert tenant.state == TenantState.DELETION_SCHEDULED
    assert close_to(tenant.deletion_due_at, before + timedelta(days=30))
    assert fresh(other_tenant).state == TenantState.ACTIVE
    deletion = DeletionRequest.objects.get(tenant=tenant)
    assert (deletion.via, deletion.reason, deletion.requested_by_email) == (
        Via.SUPPORT,
        REQUEST,
        "support@kodori.test",
    )
    (event,) = events(tenant, EventType.TENANT_DELETION_SCHEDULED)
    assert event.payload == {
        "dueAt": format_time(tenant.deletion_due_at),  # type: ignore[arg-type]
        "waitingDays": 30,
        "via": "support",
        "reason": REQUEST,
    }
    assert event.actor_email == "support@kodori.test"
    (mail,) = mailoutbox
    assert mail.to == ["owner@acme.test"]
    assert f"Reason given: {REQUEST}" in mail.body and "through Kodori support" in mail.body
    listing = client.get(done["Location"])
    assert f"Acme Corp: deletion scheduled for {due_text(tenant.deletion_due_at)}; owners e-mailed." in (
        messages_of(listing)
    )


def test_support_cancels_with_a_reason_that_lands_in_the_audit_log(
    staff: Any, owner: Any, tenant: Tenant, mailoutbox: list[Any], committed: Capture
) -> None:
    deletion = schedule(tenant, owner, committed)
    mailoutbox.clear()
    client = client_for(staff)
    ask = _action(client, "cancel_deletion", tenant)
    assert ask.status_code == 200 and "Cancel tenant deletion" in ask.content.decode()
    empty = _action(client, "cancel_deletion", tenant, post="yes", reason="")
    assert "Give the reason: it is recorded in the tenant&#x27;s audit log." in empty.content.decode()
    assert fresh(tenant).state == TenantState.DELETION_SCHEDULED

    with committed():
        done = _action(client, "cancel_deletion", tenant, post="yes", reason="customer changed their mind")
    assert done.status_code == 302 and fresh(tenant).state == TenantState.ACTIVE
    deletion.refresh_from_db()
    assert (deletion.status, deletion.cancel_via, deletion.cancel_reason, deletion.cancelled_by_email) == (
        DeletionStatus.CANCELLED,
        Via.SUPPORT,
        "customer changed their mind",
        "support@kodori.test",
    )
    (event,) = events(tenant, EventType.TENANT_DELETION_CANCELLED)
    assert event.payload == {
        "dueAt": format_time(deletion.due_at),
        "via": "support",
        "reason": "customer changed their mind",
    }
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["owner@acme.test"]


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (TenantState.ACTIVE, "cancel_deletion"),
        (TenantState.DELETION_SCHEDULED, "schedule_deletion"),
        (TenantState.ERASING, "cancel_deletion"),
        (TenantState.ERASING, "schedule_deletion"),
    ],
)
def test_support_is_told_per_tenant_when_the_state_does_not_allow_it(
    staff: Any, owner: Any, tenant: Tenant, committed: Capture, state: TenantState, action: str
) -> None:
    if state != TenantState.ACTIVE:
        deletion = schedule(tenant, owner, committed)
    if state == TenantState.ERASING:
        make_due(deletion)
        assert erasure.destroy_keys(deletion)
    open_before = list(DeletionRequest.objects.values_list("pk", "status"))
    client = client_for(staff)
    done = _action(client, action, tenant, post="yes", reason=REQUEST)
    assert done.status_code == 302
    assert messages_of(client.get(done["Location"])) == [f"Acme Corp: {REFUSED_FROM[state]}"]
    assert fresh(tenant).state == state
    assert list(DeletionRequest.objects.values_list("pk", "status")) == open_before


@pytest.mark.parametrize("action", ["schedule_deletion", "cancel_deletion"])
def test_staff_who_may_only_look_at_tenants_cannot_schedule_or_cancel(
    owner: Any, tenant: Tenant, committed: Capture, action: str
) -> None:
    from django.contrib.auth.models import Permission

    looker = make_user("looker@kodori.test", is_staff=True)
    looker.user_permissions.set(
        Permission.objects.filter(codename__in=["view_tenant", "view_deletionrequest"])
    )
    if action == "cancel_deletion":
        schedule(tenant, owner, committed)
    state = fresh(tenant).state
    client = client_for(looker)
    listing = client.get(reverse(TENANTS))
    assert listing.status_code == 200 and f'value="{action}"' not in listing.content.decode()
    _action(client, action, tenant, post="yes", reason=REQUEST)
    assert fresh(tenant).state == state
    assert DeletionRequest.objects.filter(tenant=tenant).count() == (state != TenantState.ACTIVE)
    assert events(tenant, EventType.TENANT_DELETION_CANCELLED) == []


def test_deletion_requests_are_read_only_and_certificates_served_once_they_exist(
    staff: Any, owner: Any, member: Any, tenant: Tenant, committed: Capture
) -> None:
    from offboarding import certificate

    make_blob(member, b"to be erased")
    deletion = schedule(tenant, owner, committed)
    client = client_for(staff)
    change = reverse("admin:offboarding_deletionrequest_change", args=[deletion.pk])
    certificate_url = reverse("admin:offboarding_deletionrequest_certificate", args=[deletion.pk])

    listing = client.get(reverse("admin:offboarding_deletionrequest_changelist"))
    assert listing.status_code == 200 and "Acme Corp" in listing.content.decode()
    assert certificate_url not in listing.content.decode()
    assert client.get(reverse("admin:offboarding_deletionrequest_add")).status_code == 403
    view = client.get(change)
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert client.post(change, {"status": "cancelled", "reason": "x"}).status_code == 403
    delete = reverse("admin:offboarding_deletionrequest_delete", args=[deletion.pk])
    assert client.get(delete).status_code == 403 and client.post(delete, {"post": "yes"}).status_code == 403
    assert DeletionRequest.objects.get(pk=deletion.pk).status == DeletionStatus.SCHEDULED
    assert client.get(certificate_url).status_code == 404

    make_due(deletion)
    assert erasure.erase(deletion.pk)
    deletion.refresh_from_db()
    assert deletion.status == DeletionStatus.ERASED and deletion.certificate is not None
    download = client.get(certificate_url)
    assert download.status_code == 200 and download["Content-Type"] == "application/json"
    assert download.content == certificate.as_bytes(deletion.certificate)
    assert download["Content-Disposition"] == f'attachment; filename="{certificate.filename(deletion)}"'
    listing = client.get(reverse("admin:offboarding_deletionrequest_changelist"))
    assert certificate_url in listing.content.decode()


@pytest.mark.parametrize("who", ["anonymous", "owner"])
def test_no_one_but_staff_reaches_support_s_side(
    request: pytest.FixtureRequest, owner: Any, tenant: Tenant, committed: Capture, who: str
) -> None:
    deletion = schedule(tenant, owner, committed)
    client = Client() if who == "anonymous" else client_for(request.getfixturevalue(who))
    urls = [
        reverse(TENANTS),
        reverse("admin:offboarding_deletionrequest_changelist"),
        reverse("admin:offboarding_deletionrequest_change", args=[deletion.pk]),
        reverse("admin:offboarding_deletionrequest_certificate", args=[deletion.pk]),
        reverse("admin:offboarding_deletionrequest_purge_record", args=[deletion.pk]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    refused = _action(client, "cancel_deletion", tenant, post="yes", reason="let me out")
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    assert fresh(tenant).state == TenantState.DELETION_SCHEDULED
    assert events(tenant, EventType.TENANT_DELETION_CANCELLED) == []
