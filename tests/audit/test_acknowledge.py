"""Acknowledging a break: an owner on ``/audit``, support in the admin, an operator at the command line.

Each records an ``audit.break-acknowledged`` event with the reason, the position and the kind; the badge then
says what was acknowledged, by whom and when. Everyone else is refused, and so is a post without a reason or
a CSRF token, or for another tenant's break.
"""

from __future__ import annotations

import re
from html import unescape
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from audit import chain, services
from audit.models import AcknowledgedVia, AuditEvent, ChainBreak, EventType
from tenants.models import Tenant

from .conftest import fill, raw

pytestmark = pytest.mark.django_db


@pytest.fixture
def broken(tenant: Tenant, owner: Any) -> ChainBreak:
    """Acme's chain, with #3 edited and the break found."""
    fill(tenant, 6, actor=owner)
    raw(
        "UPDATE audit_auditevent SET actor_email = 'x@evil.test' WHERE tenant_id = %s AND seq = 3",
        [tenant.pk],
    )
    assert not chain.verify(tenant, full=True).ok
    return ChainBreak.objects.get(tenant=tenant)


def url(brk: ChainBreak) -> str:
    return reverse("audit:acknowledge_break", args=[brk.pk])


def text(html: bytes) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.decode())))


def acknowledgements(tenant: Tenant) -> list[AuditEvent]:
    return list(AuditEvent.objects.for_tenant(tenant).filter(type=EventType.AUDIT_BREAK_ACKNOWLEDGED))


def test_the_badge_reports_the_break_and_offers_owners_the_form(
    broken: ChainBreak, owner: Any, admin: Any, as_user: Any
) -> None:
    page = as_user(owner).get("/audit")
    assert b'class="status status-danger audit-badge" role="alert">chain broken at #3</span>' in page.content
    assert f'action="{url(broken)}"'.encode() in page.content
    # Admins read it, and are told who can acknowledge it.
    page = as_user(admin).get("/audit")
    assert b"chain broken at #3</span>" in page.content
    assert f'action="{url(broken)}"'.encode() not in page.content
    assert "An owner of this tenant, or Kodori support, acknowledges it" in text(page.content)


def test_an_owner_acknowledges_with_a_reason(
    broken: ChainBreak, tenant: Tenant, owner: Any, as_user: Any
) -> None:
    client = as_user(owner, csrf=False)
    response = client.post(url(broken), {"reason": "  Restored #3 from the backup of 3 May.  "}, follow=True)
    assert response.status_code == 200
    assert "The break at #3 is acknowledged" in text(response.content)
    [event] = acknowledgements(tenant)
    assert event.actor_id == owner.pk and event.ip == "127.0.0.1"
    assert event.payload == {
        "seq": 3, "lastSeq": 3, "kind": "edited", "detail": broken.detail,
        "reason": "Restored #3 from the backup of 3 May.", "foundAt": chain.format_time(broken.found_at),
        "via": "owner",
    }  # fmt: skip
    broken.refresh_from_db()
    assert broken.acknowledged and broken.ack_seq == event.seq and broken.ack_via == "owner"
    # The badge stays truthful: verified past one acknowledged break, which it names with who, when and why.
    page = text(client.get("/audit").content)
    assert re.search(r"verified through #7 at [\d: -]+ UTC, past 1 acknowledged break", page), page
    assert "Acknowledged " in page and "by owner@acme.test (the tenant's owner, on /audit)" in page
    assert "Restored #3 from the backup of 3 May." in page and f"event #{event.seq}" in page
    assert "Acknowledge this break" not in page


def test_a_second_acknowledgement_is_refused(
    broken: ChainBreak, tenant: Tenant, owner: Any, as_user: Any
) -> None:
    client = as_user(owner)
    client.post(url(broken), {"reason": "restored"})
    response = client.post(url(broken), {"reason": "again"}, follow=True)
    assert "was acknowledged already" in text(response.content)
    assert len(acknowledgements(tenant)) == 1


@pytest.mark.parametrize("reason", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_a_reason_is_required(
    broken: ChainBreak, tenant: Tenant, owner: Any, as_user: Any, reason: str | None
) -> None:
    response = as_user(owner).post(url(broken), {} if reason is None else {"reason": reason})
    assert response.status_code == 400
    assert "Give the reason" in text(response.content)
    assert not acknowledgements(tenant)
    assert ChainBreak.objects.get(pk=broken.pk).acknowledged_at is None


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_only_owners_acknowledge(
    broken: ChainBreak, tenant: Tenant, as_user: Any, role: str, request: Any
) -> None:
    response = as_user(request.getfixturevalue(role)).post(url(broken), {"reason": "not mine to say"})
    assert response.status_code == 403
    assert not acknowledgements(tenant)


def test_support_staff_cannot_acknowledge_on_the_tenant_page(
    broken: ChainBreak, staff: Any, as_user: Any
) -> None:
    assert as_user(staff).post(url(broken), {"reason": "x"}).status_code == 403
    assert ChainBreak.objects.get(pk=broken.pk).acknowledged_at is None


def test_another_tenants_owner_gets_404(
    broken: ChainBreak, tenant: Tenant, outsider: Any, as_user: Any
) -> None:
    assert as_user(outsider).post(url(broken), {"reason": "x"}).status_code == 404
    assert not acknowledgements(tenant)


def test_anonymous_users_are_sent_to_log_in(broken: ChainBreak, client: Any) -> None:
    response = client.post(url(broken), {"reason": "x"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_post_without_csrf_token_is_refused(
    broken: ChainBreak, tenant: Tenant, owner: Any, as_user: Any
) -> None:
    response = as_user(owner, csrf=True).post(url(broken), {"reason": "x"})
    assert response.status_code == 403 and b"CSRF" in response.content
    assert not acknowledgements(tenant)


def test_get_is_not_allowed(broken: ChainBreak, owner: Any, as_user: Any) -> None:
    assert as_user(owner).get(url(broken)).status_code == 405


# --- The operator's command ---------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("acknowledge_audit_break", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_the_command_lists_open_breaks(broken: ChainBreak) -> None:
    code, out = run("--tenant", "acme")
    assert code == 1 and f"acme: break {broken.pk}: #3 edited: hash of #3 does not match its content" in out


def test_an_operator_acknowledges_from_the_command_line(broken: ChainBreak, tenant: Tenant) -> None:
    code, out = run(
        "--tenant", "acme", "--seq", "3", "--reason", "customer confirmed", "--operator", "Ann (ops)"
    )
    assert code == 0 and "the break at #3 (edited) is acknowledged" in out
    [event] = acknowledgements(tenant)
    assert (
        event.actor_id is None
        and event.payload["via"] == "operator"
        and event.payload["operator"] == "Ann (ops)"
    )
    assert chain.verify(tenant, full=True).ok
    verify_out = StringIO()
    call_command("verify_audit_chain", stdout=verify_out)
    assert "acknowledged" in verify_out.getvalue() and "Ann (ops)" in verify_out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seq", "3", "--operator", "ops"], "Give a reason"),
        (["--seq", "3", "--reason", "x"], "Give --operator"),
        (["--seq", "4", "--reason", "x", "--operator", "ops"], "No open break"),
        (["--seq", "3", "--kind", "missing", "--reason", "x", "--operator", "ops"], "No open break"),
    ],
)
def test_the_command_refuses(broken: ChainBreak, tenant: Tenant, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("acknowledge_audit_break", "--tenant", "acme", *args, stdout=StringIO())
    assert not acknowledgements(tenant)


def test_the_command_refuses_an_unknown_tenant() -> None:
    with pytest.raises(CommandError, match="No tenant") as caught:
        call_command("acknowledge_audit_break", "--tenant", "nope", stdout=StringIO())
    assert caught.value.returncode == 2


# --- Support, in the admin ----------------------------------------------------------------------------------


@pytest.fixture
def support(staff: Any) -> Any:
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_chainbreak", "change_chainbreak"])
    )
    return staff


def test_support_acknowledges_in_the_admin_with_a_reason(
    broken: ChainBreak, tenant: Tenant, support: Any, as_user: Any
) -> None:
    client = as_user(support)
    changelist = "/admin/audit/chainbreak/"
    assert client.get(changelist).status_code == 200
    action = {"action": "acknowledge_breaks", "_selected_action": [broken.pk]}
    asked = client.post(changelist, action)
    assert asked.status_code == 200 and b"Acknowledge chain breaks" in asked.content
    missing = client.post(changelist, {**action, "post": "yes", "reason": ""})
    assert b"Give the reason" in missing.content and not acknowledgements(tenant)
    done = client.post(changelist, {**action, "post": "yes", "reason": "customer ticket #4411"}, follow=True)
    assert b"is acknowledged" in done.content
    [event] = acknowledgements(tenant)
    assert event.actor_id == support.pk and event.payload["via"] == "support"
    assert chain.verify(tenant, full=True).ok


def test_the_admin_neither_adds_nor_changes_nor_deletes_breaks(
    broken: ChainBreak, support: Any, as_user: Any
) -> None:
    client = as_user(support)
    page = client.get(f"/admin/audit/chainbreak/{broken.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.get("/admin/audit/chainbreak/add/").status_code == 403
    assert client.post(f"/admin/audit/chainbreak/{broken.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ChainBreak.objects.filter(pk=broken.pk, acknowledged_at__isnull=True).exists()


def test_staff_without_the_permission_cannot_acknowledge(
    broken: ChainBreak, tenant: Tenant, staff: Any, as_user: Any
) -> None:
    from django.contrib.auth.models import Permission

    # Support staff hold change_chainbreak (seed_demo); staff who were not given it cannot acknowledge.
    staff.user_permissions.remove(Permission.objects.get(codename="change_chainbreak"))
    action = {"action": "acknowledge_breaks", "_selected_action": [broken.pk], "post": "yes", "reason": "x"}
    response = as_user(staff).post("/admin/audit/chainbreak/", action)
    # They may read the breaks (view_chainbreak), but the action is neither offered nor carried out.
    assert response.status_code == 200
    assert "Acknowledge the selected breaks" not in response.content.decode()
    assert not acknowledgements(tenant)
    assert ChainBreak.objects.filter(pk=broken.pk, acknowledged_at__isnull=True).exists()


def test_the_service_refuses_an_empty_reason(broken: ChainBreak) -> None:
    with pytest.raises(services.AcknowledgementError):
        services.acknowledge_break(broken, reason=" \n ", via=AcknowledgedVia.OPERATOR, operator="ops")


def test_the_evidence_bundle_tells_the_auditor_about_breaks(
    broken: ChainBreak, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Any
) -> None:
    from audit import signing, verify_bundle

    client = as_user(owner)
    client.post(url(broken), {"reason": "restored #3 from backup"})
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"".join(client.get(reverse("audit:export_bundle")).streaming_content))
    bundle = verify_bundle.read_bundle(path)
    [line] = bundle.header["breaks"]
    assert line.startswith("break #3 edited:") and "restored #3 from backup" in line
    report = verify_bundle.verify(bundle, [signing.public_key_b64()])
    # The auditor sees Kodori's account, but it never makes the edited event pass.
    assert any(x.startswith("note: Kodori reports: break #3 edited") for x in report.lines)
    assert report.failure is not None and "chain broken at #3" in report.failure
