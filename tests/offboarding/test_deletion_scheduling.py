"""An owner schedules the tenant's deletion on /tenant/deletion, typing the tenant's name and their
password: a wrong confirmation changes nothing, every owner is told once, scheduling twice keeps the first
date, and the service holds the same rules for every caller. Every member then sees a banner with the date;
only owners see the way to cancel.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.encoding import format_time
from audit.models import EventType
from offboarding import services
from offboarding.models import DeletionRequest, DeletionStatus, Via
from tenants.lifecycle import TenantStateError, due_text
from tenants.models import Tenant, TenantState
from tests.conftest import PASSWORD, client_for
from tests.offboarding import deletion_support
from tests.offboarding.deletion_support import (
    REFUSED_FROM,
    Capture,
    banner,
    close_to,
    events,
    fresh,
    messages_of,
    schedule,
    schedule_form,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = deletion_support.private_blob_root


# --- An owner schedules the deletion ------------------------------------------------------------------------


def test_the_page_explains_and_asks_for_the_name_days_and_password(as_user: Any, owner: Any) -> None:
    html = as_user(owner).get(reverse("offboarding:deletion")).content.decode()
    assert "Before you delete Acme Corp" in html
    assert 'name="confirm_name"' in html and 'name="password"' in html and 'name="days"' in html
    assert 'value="30"' in html  # the default waiting period
    assert banner(html) is None


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"confirm_name": "Acme"}, "confirm_name", "That is not the tenant's name. Type Acme Corp exactly."),
        (
            {"confirm_name": "acme corp"},
            "confirm_name",
            "That is not the tenant's name. Type Acme Corp exactly.",
        ),
        (
            {"password": "not my password"},
            "password",
            "That is not your password. Enter it again to confirm it is you.",
        ),
        ({"days": "6"}, "days", "Ensure this value is greater than or equal to 7."),
        ({"days": "31"}, "days", "Ensure this value is less than or equal to 30."),
        ({"days": "ten"}, "days", "Enter a whole number."),
        ({"days": ""}, "days", "This field is required."),
    ],
)
def test_a_wrong_confirmation_is_refused_and_changes_nothing(
    as_user: Any,
    owner: Any,
    admin: Any,
    tenant: Tenant,
    mailoutbox: list[Any],
    committed: Capture,
    changes: dict[str, str],
    field: str,
    error: str,
) -> None:
    with committed():
        response = as_user(owner).post(reverse("offboarding:schedule"), schedule_form(tenant, **changes))
    assert response.status_code == 400
    assert response.context["form"].errors[field] == [error]
    html = response.content.decode()
    assert error.replace("'", "&#x27;") in html
    assert PASSWORD not in html and "not my password" not in html
    assert fresh(tenant).state == TenantState.ACTIVE and fresh(tenant).deletion_due_at is None
    assert not DeletionRequest.objects.exists()
    assert events(tenant, EventType.TENANT_DELETION_SCHEDULED) == []
    assert mailoutbox == []


def test_an_owner_schedules_the_deletion_and_every_owner_is_told_once(
    as_user: Any,
    owner: Any,
    second_owner: Any,
    admin: Any,
    member: Any,
    tenant: Tenant,
    mailoutbox: list[Any],
    committed: Capture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = as_user(owner)
    before = timezone.now()
    with committed():
        response = client.post(reverse("offboarding:schedule"), schedule_form(tenant, days="14"))
    assert response.status_code == 302 and response["Location"] == reverse("offboarding:deletion")

    tenant = fresh(tenant)
    assert tenant.state == TenantState.DELETION_SCHEDULED
    assert close_to(tenant.deletion_due_at, before + timedelta(days=14))
    deletion = DeletionRequest.objects.get(tenant=tenant)
    assert deletion.status == DeletionStatus.SCHEDULED and deletion.via == Via.OWNER
    assert deletion.waiting_days == 14 and deletion.due_at == tenant.deletion_due_at
    assert deletion.requested_by_id == owner.pk and deletion.requested_by_email == "owner@acme.test"

    (event,) = events(tenant, EventType.TENANT_DELETION_SCHEDULED)
    assert event.payload == {"dueAt": format_time(tenant.deletion_due_at), "waitingDays": 14, "via": "owner"}
    assert event.actor_email == "owner@acme.test" and event.ip

    (mail,) = mailoutbox
    assert sorted(mail.to) == ["owner@acme.test", "second-owner@acme.test"]
    when = due_text(tenant.deletion_due_at)
    assert when in mail.subject and when in mail.body
    assert "http://testserver/tenant/deletion" in mail.body  # how to cancel
    assert "http://testserver/export" in mail.body

    page = client.get(response["Location"])
    html = page.content.decode()
    assert messages_of(page) == [
        "Deletion scheduled. The owners are being e-mailed; any owner can cancel until the date."
    ]
    assert f"Acme Corp will be erased on {when}" in html
    assert reverse("offboarding:cancel") in html and 'name="password"' not in html

    everything = [html, json.dumps(event.payload), caplog.text, mail.subject, mail.body]
    assert all(PASSWORD not in text for text in everything)


def test_the_short_window_setting_makes_the_wait_that_many_seconds(
    settings: Any, as_user: Any, owner: Any, tenant: Tenant, committed: Capture
) -> None:
    settings.TENANT_DELETION_SHORT_WINDOW_SECONDS = 90
    before = timezone.now()
    with committed():
        as_user(owner).post(reverse("offboarding:schedule"), schedule_form(tenant, days="14"))
    due = fresh(tenant).deletion_due_at
    assert close_to(due, before + timedelta(seconds=90), slack=5)
    (event,) = events(tenant, EventType.TENANT_DELETION_SCHEDULED)
    assert event.payload["dueAt"] == format_time(due)  # type: ignore[arg-type]


def test_scheduling_twice_is_refused_and_keeps_the_first_date(
    as_user: Any, owner: Any, tenant: Tenant, mailoutbox: list[Any], committed: Capture
) -> None:
    client = as_user(owner)
    with committed():
        client.post(reverse("offboarding:schedule"), schedule_form(tenant, days="20"))
    due = fresh(tenant).deletion_due_at
    with committed():
        response = client.post(reverse("offboarding:schedule"), schedule_form(tenant, days="7"), follow=True)
    assert messages_of(response)[-1] == REFUSED_FROM[TenantState.DELETION_SCHEDULED]
    assert fresh(tenant).deletion_due_at == due
    assert DeletionRequest.objects.filter(tenant=tenant).count() == 1
    assert len(events(tenant, EventType.TENANT_DELETION_SCHEDULED)) == 1 and len(mailoutbox) == 1
    with pytest.raises(TenantStateError, match="already scheduled"):
        services.schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=7)


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        ({"days": 6}, "The waiting period must be 7 to 30 days."),
        ({"days": 31}, "The waiting period must be 7 to 30 days."),
        ({"via": Via.SUPPORT}, "Support schedules a deletion only on the customer's written request"),
        ({"via": Via.SUPPORT, "reason": "   "}, "Support schedules a deletion only on the customer's"),
    ],
)
def test_the_service_holds_the_rules_for_every_caller(
    owner: Any, tenant: Tenant, arguments: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(TenantStateError, match=re.escape(refusal)):
        services.schedule_deletion(tenant, actor=owner, **{"via": Via.OWNER, **arguments})
    assert fresh(tenant).state == TenantState.ACTIVE and not DeletionRequest.objects.exists()


# --- The banner ---------------------------------------------------------------------------------------------

ROLES = ["owner", "admin", "member", "viewer"]
BANNER_PAGES = [(role, page) for role in ROLES for page in ("home", "blobs:list")] + [
    ("owner", "encryption:index"),
    ("admin", "encryption:index"),
]


@pytest.mark.parametrize(("role", "page"), BANNER_PAGES)
def test_every_member_sees_the_date_and_only_owners_the_way_to_cancel(
    request: pytest.FixtureRequest, owner: Any, tenant: Tenant, committed: Capture, role: str, page: str
) -> None:
    deletion = schedule(tenant, owner, committed)
    client = client_for(request.getfixturevalue(role))
    response = client.get(reverse(page))
    assert response.status_code == 200
    shown = banner(response.content.decode())
    assert shown is not None
    assert f"Acme Corp will be erased on {due_text(deletion.due_at)}." in shown
    assert "read-only" in shown
    cancel_link = f'<a href="{reverse("offboarding:deletion")}">Cancel the deletion'
    if role == "owner":
        assert cancel_link in shown
    else:
        assert "href" not in shown and "An owner can export every file or cancel the deletion." in shown

    services.cancel_deletion(tenant, actor=owner, via=Via.OWNER)
    assert banner(client.get(reverse(page)).content.decode()) is None
