"""The rules of a tenant's deletion: its life is a state machine (``tenants.lifecycle``) whose every
transition from every state leads on or is refused with its message; only an active tenant is writable and
only until the erasure readable; and the database backs it with constraints (state and dates agree, at most
one open deletion per tenant, a support request carries the customer's reason).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from offboarding.models import DeletionRequest, DeletionStatus, Via
from tenants import lifecycle
from tenants.lifecycle import TRANSITIONS, TenantStateError, Transition
from tenants.models import Tenant, TenantState
from tests.offboarding import deletion_support
from tests.offboarding.deletion_support import REFUSED_FROM, fresh

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = deletion_support.private_blob_root


# --- The state machine --------------------------------------------------------------------------------------

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
