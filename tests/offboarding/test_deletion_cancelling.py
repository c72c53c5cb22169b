"""Cancelling a scheduled deletion: any owner cancels and every owner is told; cancelling when nothing is
scheduled is refused; once the erasure began nobody can cancel; a mail server that refuses neither undoes nor
hides what was done.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.encoding import format_time
from audit.models import EventType
from offboarding import erasure, services
from offboarding.models import DeletionRequest, DeletionStatus, Via
from tenants.lifecycle import TenantStateError, due_text
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob
from tests.conftest import client_for
from tests.offboarding import deletion_support
from tests.offboarding.deletion_support import (
    REFUSED_FROM,
    Capture,
    banner,
    close_to,
    events,
    fresh,
    make_due,
    messages_of,
    schedule,
    schedule_form,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = deletion_support.private_blob_root


# --- Cancelling ---------------------------------------------------------------------------------------------


def test_any_owner_cancels_and_every_owner_is_told(
    owner: Any,
    second_owner: Any,
    admin: Any,
    tenant: Tenant,
    mailoutbox: list[Any],
    committed: Capture,
) -> None:
    deletion = schedule(tenant, owner, committed)
    mailoutbox.clear()
    client = client_for(second_owner)
    with committed():
        response = client.post(reverse("offboarding:cancel"), follow=True)
    assert response.redirect_chain == [(reverse("offboarding:deletion"), 302)]
    assert messages_of(response) == ["The deletion is cancelled. Acme Corp is active again."]

    tenant = fresh(tenant)
    assert tenant.state == TenantState.ACTIVE and tenant.deletion_due_at is None
    deletion.refresh_from_db()
    assert deletion.status == DeletionStatus.CANCELLED and deletion.cancel_via == Via.OWNER
    assert deletion.cancelled_by_email == "second-owner@acme.test"
    assert close_to(deletion.cancelled_at, timezone.now())
    assert deletion.requested_by_email == "owner@acme.test"  # the scheduler stays on record

    (event,) = events(tenant, EventType.TENANT_DELETION_CANCELLED)
    assert event.payload == {"dueAt": format_time(deletion.due_at), "via": "owner"}
    assert event.actor_email == "second-owner@acme.test"
    (mail,) = mailoutbox
    assert sorted(mail.to) == ["owner@acme.test", "second-owner@acme.test"]
    assert mail.subject == "Deletion of Acme Corp cancelled"
    assert "second-owner@acme.test cancelled the deletion of Acme Corp" in mail.body
    assert due_text(deletion.due_at) in mail.body

    html = response.content.decode()
    assert "Before you delete Acme Corp" in html and "Cancelled" in html  # the form again, and the history
    again = client.post(reverse("offboarding:schedule"), schedule_form(tenant))
    assert again.status_code == 302 and fresh(tenant).state == TenantState.DELETION_SCHEDULED


def test_cancelling_when_nothing_is_scheduled_is_refused(
    owner: Any, tenant: Tenant, mailoutbox: list[Any], committed: Capture
) -> None:
    with committed():
        response = client_for(owner).post(reverse("offboarding:cancel"), follow=True)
    assert messages_of(response) == ["No deletion is scheduled for this tenant."]
    assert events(tenant, EventType.TENANT_DELETION_CANCELLED) == [] and mailoutbox == []
    with pytest.raises(TenantStateError, match="No deletion is scheduled"):
        services.cancel_deletion(tenant, actor=owner, via=Via.OWNER)


def test_once_the_erasure_began_nobody_can_cancel(
    owner: Any, member: Any, tenant: Tenant, mailoutbox: list[Any], committed: Capture
) -> None:
    make_blob(member, b"soon gone")
    deletion = schedule(tenant, owner, committed)
    make_due(deletion)
    assert erasure.destroy_keys(deletion)
    assert fresh(tenant).state == TenantState.ERASING
    mailoutbox.clear()

    client = client_for(owner)
    with committed():
        response = client.post(reverse("offboarding:cancel"), follow=True)
    assert messages_of(response) == [REFUSED_FROM[TenantState.ERASING]]
    assert "being erased" in messages_of(response)[0]
    html = response.content.decode()
    assert "Acme Corp is being erased" in html and reverse("offboarding:cancel") not in html
    assert fresh(tenant).state == TenantState.ERASING
    assert DeletionRequest.objects.get(pk=deletion.pk).status == DeletionStatus.ERASING
    home = client_for(member).get(reverse("home")).content.decode()
    assert banner(home) is None and "<strong>Acme Corp is being erased.</strong>" in home
    assert events(tenant, EventType.TENANT_DELETION_CANCELLED) == [] and mailoutbox == []
    with pytest.raises(TenantStateError, match="being erased"):
        services.cancel_deletion(tenant, actor=owner, via=Via.SUPPORT, reason="too late")


@pytest.mark.django_db(transaction=True)
def test_a_mail_server_that_refuses_neither_undoes_nor_hides_what_was_done(
    settings: Any, owner: Any, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    """The e-mails go after the commit (really committed here): a refused one is logged, and the owner
    still sees the page that says what happened, not a server error."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    client = client_for(owner)
    client.raise_request_exception = False

    scheduled = client.post(reverse("offboarding:schedule"), schedule_form(tenant), follow=True)
    assert scheduled.status_code == 200 and messages_of(scheduled)[0].startswith("Deletion scheduled.")
    assert "Acme Corp will be erased on" in scheduled.content.decode()
    assert fresh(tenant).state == TenantState.DELETION_SCHEDULED
    cancelled = client.post(reverse("offboarding:cancel"), follow=True)
    assert cancelled.status_code == 200 and messages_of(cancelled)[0].startswith("The deletion is cancelled.")
    assert fresh(tenant).state == TenantState.ACTIVE
    failures = [r for r in caplog.records if "could not e-mail the owners of tenant" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
