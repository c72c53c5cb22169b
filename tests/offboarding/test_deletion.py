"""Scheduling and cancelling a tenant's deletion, and the read-only window in between.

The tenant's life is a state machine (``tenants.lifecycle``) that the database backs with constraints. An
owner schedules on /tenant/deletion (typing the tenant's name and their password), support in the admin on
the customer's written request; every member then sees a banner with the date, every write is refused with
a message that says so, reads and exports go on, and any owner can cancel until the erasure begins.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.encoding import format_time
from audit.models import AuditEvent, EventType
from blobs.models import Blob
from encryption import keyring, rewrap
from encryption import services as key_services
from encryption.lifecycle import KeyCustodyError
from encryption.models import KeyStatus, RewrapJob, RewrapStatus, TenantKey, WrapMethod
from offboarding import erasure, services
from offboarding.models import DeletionRequest, DeletionStatus, Export, Via
from tenants import lifecycle
from tenants.lifecycle import TRANSITIONS, TenantStateError, Transition, due_text
from tenants.models import Membership, Role, Tenant, TenantState
from tests.blobs.support import bearer, make_blob, make_token, pattern, stored_files
from tests.conftest import PASSWORD, client_for, make_user

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]
READ_ONLY = "is scheduled for deletion on"


@pytest.fixture(autouse=True)
def _private_blob_root(blob_root: Path) -> Iterator[None]:
    yield


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Capture) -> Capture:
    """``with committed():`` runs what the code under test queued for after its commit (the e-mails)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def second_owner(tenant: Tenant) -> Any:
    user = make_user("second-owner@acme.test")
    Membership.objects.create(user=user, tenant=tenant, role=Role.OWNER)
    return user


def fresh(tenant: Tenant) -> Tenant:
    return Tenant.objects.get(pk=tenant.pk)


def events(tenant: Tenant, kind: EventType) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, type=kind).order_by("seq"))


def close_to(moment: datetime | None, expected: datetime, slack: float = 10) -> bool:
    return moment is not None and abs((moment - expected).total_seconds()) <= slack


def schedule_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    return {"days": 14, "confirm_name": tenant.name, "password": PASSWORD, **changes}


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def banner(html: str) -> str | None:
    """The deletion banner of a page, or None."""
    found = re.search(r'<div class="banner banner-warning" role="status">(.*?)</div>', html, re.S)
    return found.group(1) if found else None


def schedule(tenant: Tenant, owner: Any, committed: Capture, days: int = 14) -> DeletionRequest:
    with committed():
        return services.schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=days)


def make_due(deletion: DeletionRequest) -> None:
    """Move the date into the past, as if the waiting period had ended."""
    past = timezone.now() - timedelta(minutes=1)
    DeletionRequest.objects.filter(pk=deletion.pk).update(due_at=past)
    Tenant.objects.filter(pk=deletion.tenant_id).update(deletion_due_at=past)


# --- The state machine --------------------------------------------------------------------------------------

REFUSED_FROM = {
    TenantState.ACTIVE: "No deletion is scheduled for this tenant.",
    TenantState.DELETION_SCHEDULED: "Deletion of this tenant is already scheduled; cancel it to change it.",
    TenantState.ERASING: "This tenant is being erased: its keys are destroyed; nothing can stop or undo it.",
    TenantState.ERASED: "This tenant was erased; nothing of it remains to change.",
}
EVERY_MOVE = [(str(s), str(t)) for s in TenantState for t in Transition]


def test_the_transitions_are_the_documented_lifecycle() -> None:
    assert dict(TRANSITIONS) == {
        Transition.SCHEDULE: (frozenset({TenantState.ACTIVE}), TenantState.DELETION_SCHEDULED),
        Transition.CANCEL: (frozenset({TenantState.DELETION_SCHEDULED}), TenantState.ACTIVE),
        Transition.BEGIN_ERASURE: (frozenset({TenantState.DELETION_SCHEDULED}), TenantState.ERASING),
        Transition.FINISH_ERASURE: (frozenset({TenantState.ERASING}), TenantState.ERASED),
    }


@pytest.mark.parametrize(("state", "transition"), EVERY_MOVE)
def test_each_transition_from_each_state_leads_on_or_is_refused(state: str, transition: str) -> None:
    tenant = Tenant(slug="t", name="T", state=state)
    move = Transition(transition)
    starts, leads_to = TRANSITIONS[move]
    if TenantState(state) in starts:
        assert lifecycle.allowed(state, move)
        assert lifecycle.check(tenant, move) == leads_to
        return
    assert not lifecycle.allowed(state, move)
    with pytest.raises(TenantStateError) as refused:
        lifecycle.check(tenant, move)
    if move == Transition.BEGIN_ERASURE and state == TenantState.ACTIVE:
        assert str(refused.value) == "The deletion was cancelled; nothing will be erased."
    else:
        assert str(refused.value) == REFUSED_FROM[TenantState(state)]


@pytest.mark.parametrize("state", list(TenantState))
def test_only_an_active_tenant_is_writable_and_only_until_the_erasure_readable(state: TenantState) -> None:
    due = datetime(2027, 1, 4, 9, 30, tzinfo=timezone.get_fixed_timezone(0))
    tenant = Tenant(slug="t", name="Acme Corp", state=state, deletion_due_at=due)
    if state == TenantState.ACTIVE:
        lifecycle.check_writable(tenant)
    else:
        with pytest.raises(lifecycle.TenantReadOnly) as refused:
            lifecycle.check_writable(tenant)
        expected = (
            "Acme Corp is scheduled for deletion on 4 January 2027 at 09:30 UTC and is read-only"
            if state == TenantState.DELETION_SCHEDULED
            else REFUSED_FROM[state]
        )
        assert str(refused.value).startswith(expected)
    if state in (TenantState.ERASING, TenantState.ERASED):
        with pytest.raises(lifecycle.TenantReadOnly, match=re.escape(REFUSED_FROM[state])):
            lifecycle.check_readable(tenant)
    else:
        lifecycle.check_readable(tenant)


NOW = datetime(2030, 1, 1, tzinfo=timezone.get_fixed_timezone(0))


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"state": TenantState.ACTIVE, "deletion_due_at": NOW}, "tenant_deletion_due_matches_state"),
        ({"state": TenantState.DELETION_SCHEDULED}, "tenant_deletion_due_matches_state"),
        ({"state": TenantState.ERASING}, "tenant_deletion_due_matches_state"),
        ({"state": TenantState.ERASED, "erased_at": NOW}, "tenant_deletion_due_matches_state"),
        ({"state": TenantState.ERASED, "deletion_due_at": NOW}, "tenant_erased_has_time"),
        ({"state": "paused", "deletion_due_at": NOW}, "tenant_state_valid"),
    ],
)
def test_the_database_refuses_a_tenant_row_whose_state_and_dates_disagree(
    tenant: Tenant, fields: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        Tenant.objects.filter(pk=tenant.pk).update(**{"deletion_due_at": None, "erased_at": None, **fields})
    assert fresh(tenant).state == TenantState.ACTIVE


@pytest.mark.parametrize(
    "fields",
    [
        {"state": TenantState.ACTIVE},
        {"state": TenantState.DELETION_SCHEDULED, "deletion_due_at": NOW},
        {"state": TenantState.ERASING, "deletion_due_at": NOW},
        {"state": TenantState.ERASED, "deletion_due_at": NOW, "erased_at": NOW},
    ],
)
def test_the_database_accepts_each_consistent_state(tenant: Tenant, fields: dict[str, Any]) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(**fields)
    assert fresh(tenant).state == fields["state"]


def _request_row(tenant: Tenant, **fields: Any) -> DeletionRequest:
    values: dict[str, Any] = {
        "tenant": tenant,
        "via": Via.OWNER,
        "waiting_days": 30,
        "requested_at": NOW,
        "due_at": NOW + timedelta(days=30),
        "requested_by_name": "someone",
        **fields,
    }
    return DeletionRequest.objects.create(**values)


@pytest.mark.parametrize("second", [DeletionStatus.SCHEDULED, DeletionStatus.ERASING])
def test_the_database_holds_at_most_one_open_deletion_per_tenant(
    tenant: Tenant, other_tenant: Tenant, second: DeletionStatus
) -> None:
    _request_row(tenant)
    _request_row(tenant, status=DeletionStatus.CANCELLED)  # closed ones do not count
    _request_row(other_tenant)  # nor another tenant's
    with pytest.raises(IntegrityError, match="deletion_one_open_per_tenant"), transaction.atomic():
        _request_row(tenant, status=second)
    assert DeletionRequest.objects.filter(tenant=tenant).count() == 2


def test_the_database_refuses_a_support_request_without_the_customers_reason(tenant: Tenant) -> None:
    with pytest.raises(IntegrityError, match="deletion_support_has_reason"), transaction.atomic():
        _request_row(tenant, via=Via.SUPPORT, reason="")
    assert _request_row(tenant, via=Via.SUPPORT, reason="ticket 42, 3 May, from ceo@acme.test").pk


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


# --- The read-only window -----------------------------------------------------------------------------------


def _refusal_text(tenant: Tenant) -> str:
    when = due_text(fresh(tenant).deletion_due_at)
    return f"Acme Corp is scheduled for deletion on {when} and is read-only"


def test_uploads_are_refused_on_the_page_and_the_api_storing_nothing(
    owner: Any, member: Any, tenant: Tenant, blob_root: Path, committed: Capture
) -> None:
    make_blob(member, b"before")
    schedule(tenant, owner, committed)
    stored_before, uploaded_before = stored_files(blob_root), len(events(tenant, EventType.BLOB_UPLOADED))
    refusal = _refusal_text(tenant)
    client = client_for(member)

    form = client.get(reverse("blobs:upload")).content.decode()
    assert "Uploads are closed." in form and due_text(fresh(tenant).deletion_due_at) in form

    page = client.post(reverse("blobs:upload"), {"file": SimpleUploadedFile("new.txt", b"new file")})
    assert page.status_code == 409 and refusal in page.content.decode()

    raw = client.post(
        reverse("blobs:upload") + "?name=new.txt", b"new file", content_type="application/octet-stream"
    )
    assert raw.status_code == 409 and raw.json()["error"]["code"] == "tenant_read_only"

    api = Client().post(
        reverse("blobs:api_blobs") + "?name=new.txt",
        b"new file",
        content_type="application/octet-stream",
        **bearer(make_token(member)),
    )
    assert api.status_code == 409 and api["Content-Type"] == "application/json"
    assert api.json()["error"]["code"] == "tenant_read_only"
    assert api.json()["error"]["message"].startswith(refusal)

    assert list(Blob.objects.for_tenant(tenant).values_list("name", flat=True)) == ["hello.txt"]
    assert stored_files(blob_root) == stored_before
    assert len(events(tenant, EventType.BLOB_UPLOADED)) == uploaded_before


def test_deletes_are_refused_and_not_offered_while_downloads_and_exports_go_on(
    owner: Any, member: Any, tenant: Tenant, committed: Capture
) -> None:
    data = pattern(70_000)
    blob = make_blob(member, data, name="keep.bin")
    schedule(tenant, owner, committed)
    refusal = _refusal_text(tenant)
    client = client_for(member)
    token = bearer(make_token(member))

    detail = client.get(reverse("blobs:detail", args=[blob.pk])).content.decode()
    assert reverse("blobs:delete", args=[blob.pk]) not in detail
    page = client.post(reverse("blobs:delete", args=[blob.pk]))
    assert page.status_code == 409 and refusal in page.content.decode()
    api = Client().delete(reverse("blobs:api_blob", args=[blob.pk]), **token)
    assert api.status_code == 409 and api.json()["error"]["code"] == "tenant_read_only"
    assert Blob.objects.filter(pk=blob.pk).exists()
    assert events(tenant, EventType.BLOB_DELETED) == []

    full = client.get(reverse("blobs:download", args=[blob.pk]))
    assert full.status_code == 200 and body(full) == data
    part = client.get(reverse("blobs:download", args=[blob.pk]), HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206 and body(part) == data[100:200]
    api_full = Client().get(reverse("blobs:api_blob", args=[blob.pk]), **token)
    assert api_full.status_code == 200 and body(api_full) == data
    api_part = Client().get(reverse("blobs:api_blob", args=[blob.pk]), HTTP_RANGE="bytes=-10", **token)
    assert api_part.status_code == 206 and body(api_part) == data[-10:]
    head = Client().head(reverse("blobs:api_blob", args=[blob.pk]), **token)
    assert head.status_code == 200 and head["Content-Length"] == str(len(data))
    page_head = client.head(reverse("blobs:download", args=[blob.pk]))
    assert page_head.status_code == 200 and page_head["Content-Length"] == str(len(data))

    export_page = client_for(owner).post(reverse("offboarding:export"), {"format": "zip"})
    assert export_page.status_code == 302
    export_api = Client().post(reverse("offboarding:api_exports"), **bearer(make_token(owner)))
    assert export_api.status_code == 201 and export_api.json()["files"] == 1
    assert Export.objects.for_tenant(tenant).count() == 2


AZURE_URL = "https://contoso-keys.vault.azure.net/keys/{name}/" + "cd" * 16
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _azure_row(tenant: Tenant, status: KeyStatus, name: str) -> TenantKey:
    """A customer key registration already in ``status`` (no KMS is called before a refusal)."""
    url = AZURE_URL.format(name=name)
    return TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_AZURE,
        key_id=url,
        canonical_id=url,
        config={"directory_id": DIRECTORY},
        status=status,
    )


class Keys:
    """A tenant with one key in each state an owner can act on, and a paused re-wrap with work left."""

    def __init__(self, tenant: Tenant, owner: Any) -> None:
        make_blob(owner, b"under the first key")
        self.retired = keyring.active_tkv(tenant).kek
        self.active = TenantKey.objects.create(
            tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING
        )
        key_services.activate_key(self.active, actor=owner)
        self.disabled = _azure_row(tenant, KeyStatus.DISABLED, "disabled")
        self.failed = _azure_row(tenant, KeyStatus.FAILED, "failed")
        self.failed_too = _azure_row(tenant, KeyStatus.FAILED, "failed-too")
        job = rewrap.start_rewrap(tenant, actor=owner)
        assert job is not None
        self.job = rewrap.pause_rewrap(job, actor=owner)

    def action_urls(self) -> list[str]:
        """The buttons of the key history, one per key in a state that has one."""
        return [
            reverse("encryption:disable", args=[self.active.pk]),
            reverse("encryption:activate", args=[self.retired.pk]),
            reverse("encryption:enable", args=[self.disabled.pk]),
            reverse("encryption:retry_key", args=[self.failed.pk]),
            reverse("encryption:remove", args=[self.failed.pk]),
        ]

    def statuses(self) -> dict[str, str]:
        keys = [self.retired, self.active, self.disabled, self.failed, self.failed_too]
        found = dict(TenantKey.objects.filter(pk__in=[k.pk for k in keys]).values_list("pk", "status"))
        return {k.label: found.get(k.pk, "removed") for k in keys} | {
            "job": RewrapJob.objects.get(pk=self.job.pk).status
        }


def _reloaded(key: TenantKey) -> TenantKey:
    return TenantKey.objects.select_related("tenant").get(pk=key.pk)


def test_every_key_change_is_refused_by_the_services(owner: Any, tenant: Tenant, committed: Capture) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    keys = Keys(fresh(tenant), owner)
    schedule(tenant, owner, committed)
    before, seq = keys.statuses(), AuditEvent.objects.filter(tenant=tenant).count()
    refusal = _refusal_text(tenant)
    attempts: list[Callable[[], Any]] = [
        lambda: key_services.register_or_restore(
            fresh(tenant),
            WrapMethod.CUSTOMER_KMS_AZURE,
            AZURE_URL.format(name="new"),
            {"directory_id": DIRECTORY},
            actor=owner,
        ),
        lambda: key_services.disable_key(_reloaded(keys.active), actor=owner),
        lambda: key_services.disable_key(_reloaded(keys.retired), actor=owner),
        lambda: key_services.re_enable_key(_reloaded(keys.disabled), actor=owner),
        lambda: key_services.make_active(_reloaded(keys.retired), actor=owner),
        lambda: key_services.retry_key(_reloaded(keys.failed), actor=owner),
        lambda: key_services.remove_key(_reloaded(keys.failed), actor=owner),
    ]
    for attempt in attempts:
        with pytest.raises(KeyCustodyError) as refused:
            attempt()
        assert str(refused.value).startswith(refusal)
    with pytest.raises(rewrap.RewrapError, match="No re-wrap can start while the tenant is scheduled"):
        rewrap.start_rewrap(fresh(tenant), actor=owner)
    with pytest.raises(rewrap.RewrapError, match="No re-wrap can resume while the tenant is scheduled"):
        rewrap.resume_rewrap(keys.job, actor=owner)
    assert keys.statuses() == before
    assert AuditEvent.objects.filter(tenant=tenant).count() == seq


def _shown(response: Any) -> str:
    """The page a POST ended on (after its redirect): its messages and its body."""
    return " ".join(messages_of(response)) + response.content.decode()


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_the_encryption_pages_refuse_every_key_change_with_the_message(
    request: pytest.FixtureRequest, owner: Any, tenant: Tenant, committed: Capture, role: str
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    keys = Keys(fresh(tenant), owner)
    schedule(tenant, owner, committed)
    before, seq = keys.statuses(), AuditEvent.objects.filter(tenant=tenant).count()
    refusal = _refusal_text(tenant).replace("'", "&#x27;")
    client = client_for(request.getfixturevalue(role))

    index = client.get(reverse("encryption:index")).content.decode()
    assert "Key changes are closed" in index
    assert not [url for url in keys.action_urls() if url in index]  # no button offers what is refused

    register = client.post(
        reverse("encryption:register", args=["azure"]),
        {"key_id": AZURE_URL.format(name="new"), "directory_id": DIRECTORY},
    )
    assert register.status_code == 400 and refusal in register.content.decode()
    posts = [
        ("encryption:disable", keys.active, {"confirm": tenant.slug}),
        ("encryption:disable", keys.retired, {"confirm": ""}),
        ("encryption:enable", keys.disabled, {}),
        ("encryption:activate", keys.retired, {}),
        ("encryption:retry_key", keys.failed, {}),
        ("encryption:remove", keys.failed, {}),
    ]
    for name, key, data in posts:
        response = client.post(reverse(name, args=[key.pk]), data, follow=True)
        assert response.redirect_chain[-1][0] == reverse("encryption:index"), name
        assert messages_of(response) and messages_of(response)[0].startswith(_refusal_text(tenant)), name
    start = client.post(reverse("encryption:rewrap_start"), follow=True)
    resume = client.post(reverse("encryption:rewrap_resume", args=[keys.job.pk]), follow=True)
    assert messages_of(start) == [
        "No re-wrap can start while the tenant is scheduled for deletion or being erased."
    ]
    assert messages_of(resume) == [
        "No re-wrap can resume while the tenant is scheduled for deletion or being erased."
    ]
    assert keys.statuses() == before
    assert AuditEvent.objects.filter(tenant=tenant).count() == seq


def test_after_cancelling_every_write_works_again(
    owner: Any, member: Any, tenant: Tenant, blob_root: Path, committed: Capture
) -> None:
    keys = Keys(tenant, owner)
    schedule(tenant, owner, committed)
    with committed():
        services.cancel_deletion(tenant, actor=owner, via=Via.OWNER)
    assert fresh(tenant).state == TenantState.ACTIVE

    uploaded = Client().post(
        reverse("blobs:api_blobs") + "?name=after.txt",
        b"written again",
        content_type="text/plain",
        **bearer(make_token(member)),
    )
    assert uploaded.status_code == 201, uploaded.content
    blob_id = uploaded.json()["id"]
    page = client_for(member)
    detail = page.get(reverse("blobs:detail", args=[blob_id])).content.decode()
    assert reverse("blobs:delete", args=[blob_id]) in detail
    with committed():
        deleted = page.post(reverse("blobs:delete", args=[blob_id]))
    assert deleted.status_code == 302 and not Blob.objects.filter(pk=blob_id).exists()

    manager = client_for(owner)
    index = manager.get(reverse("encryption:index")).content.decode()
    assert [url for url in keys.action_urls() if url in index] == keys.action_urls()
    assert manager.post(reverse("encryption:rewrap_resume", args=[keys.job.pk])).status_code == 302
    disabled = manager.post(reverse("encryption:disable", args=[keys.retired.pk]), {"confirm": ""})
    assert disabled.status_code == 302
    assert manager.post(reverse("encryption:retry_key", args=[keys.failed.pk])).status_code == 302
    assert manager.post(reverse("encryption:remove", args=[keys.failed_too.pk])).status_code == 302
    assert keys.statuses() == {
        keys.retired.label: KeyStatus.DISABLED,
        keys.active.label: KeyStatus.ACTIVE,
        keys.disabled.label: KeyStatus.DISABLED,
        keys.failed.label: KeyStatus.PENDING,
        keys.failed_too.label: "removed",
        "job": RewrapStatus.RUNNING,
    }
    assert [e.type for e in AuditEvent.objects.filter(tenant=tenant).order_by("-seq")[:5]] == [
        EventType.TENANT_KMS_REMOVED,
        EventType.TENANT_KMS_DISABLED,
        EventType.REWRAP_RESUMED,
        EventType.BLOB_DELETED,
        EventType.BLOB_UPLOADED,
    ]


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
