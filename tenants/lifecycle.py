"""A tenant's life as an explicit state machine: which transition is allowed from which state, and the
refusal a person reads otherwise.

::

    active ──schedule──► deletion-scheduled ──begin erasure (due)──► erasing ──finish──► erased
       ▲                        │
       └────────cancel──────────┘

Only ``active`` is writable. From ``deletion-scheduled`` on, every write that could change what is kept or
how it is protected (uploads, deletes, key changes) is refused with ``TenantReadOnly``, naming the date and
the way out; reads and the export still work until the erasure begins. ``erasing`` and ``erased`` have no
way back: the keys are gone. The verbs that move a tenant live in ``offboarding.services`` and
``offboarding.erasure``; they ask ``check`` first, under a row lock.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from django.utils import timezone

from .models import Tenant, TenantState


class Transition(StrEnum):
    SCHEDULE = "schedule"
    CANCEL = "cancel"
    BEGIN_ERASURE = "begin-erasure"
    FINISH_ERASURE = "finish-erasure"


# transition -> (the states it may start from, the state it leads to)
TRANSITIONS: dict[Transition, tuple[frozenset[TenantState], TenantState]] = {
    Transition.SCHEDULE: (frozenset({TenantState.ACTIVE}), TenantState.DELETION_SCHEDULED),
    Transition.CANCEL: (frozenset({TenantState.DELETION_SCHEDULED}), TenantState.ACTIVE),
    Transition.BEGIN_ERASURE: (frozenset({TenantState.DELETION_SCHEDULED}), TenantState.ERASING),
    Transition.FINISH_ERASURE: (frozenset({TenantState.ERASING}), TenantState.ERASED),
}

_REFUSALS = {
    TenantState.ACTIVE: "No deletion is scheduled for this tenant.",
    TenantState.DELETION_SCHEDULED: "Deletion of this tenant is already scheduled; cancel it to change it.",
    TenantState.ERASING: "This tenant is being erased: its keys are destroyed; nothing can stop or undo it.",
    TenantState.ERASED: "This tenant was erased; nothing of it remains to change.",
}


class TenantStateError(Exception):
    """A transition the state machine refuses; the message says why and what is possible instead."""


class TenantReadOnly(TenantStateError):
    """A write to a tenant that is scheduled for deletion or being erased."""


def allowed(state: str, transition: Transition) -> bool:
    return TenantState(state) in TRANSITIONS[transition][0]


def check(tenant: Tenant, transition: Transition) -> TenantState:
    """The state ``transition`` leads ``tenant`` to, or ``TenantStateError`` naming why it cannot."""
    state = TenantState(tenant.state)
    if not allowed(state, transition):
        if transition == Transition.BEGIN_ERASURE and state == TenantState.ACTIVE:
            raise TenantStateError("The deletion was cancelled; nothing will be erased.")
        raise TenantStateError(_REFUSALS[state])
    return TRANSITIONS[transition][1]


def due_text(moment: datetime | None) -> str:
    """``4 January 2027 at 09:30 UTC``: how pages, messages and e-mails name the erasure date."""
    if moment is None:
        return "?"
    utc = timezone.localtime(moment, timezone.get_fixed_timezone(0))
    return f"{utc.day} {utc:%B %Y} at {utc:%H:%M} UTC"


def check_writable(tenant: Tenant) -> None:
    """Refuse a write (upload, delete, key change) unless the tenant is active, saying when and what to do."""
    state = TenantState(tenant.state)
    if state == TenantState.ACTIVE:
        return
    if state == TenantState.DELETION_SCHEDULED:
        raise TenantReadOnly(
            f"{tenant.name} is scheduled for deletion on {due_text(tenant.deletion_due_at)} and is read-only "
            "until then: files can be downloaded (and exported by an owner), but nothing can be uploaded, "
            "deleted or changed. "
            "An owner can cancel the deletion on the Tenant deletion page."
        )
    raise TenantReadOnly(_REFUSALS[state])


def check_readable(tenant: Tenant) -> None:
    """Refuse reads once the erasure has begun: the keys are destroyed, nothing can be decrypted."""
    if tenant.state in (TenantState.ERASING, TenantState.ERASED):
        raise TenantReadOnly(_REFUSALS[TenantState(tenant.state)])
