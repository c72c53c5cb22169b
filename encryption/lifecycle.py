"""The custody lifecycle of a registered key as an explicit state machine.

::

    (register) ─► pending ──probe ok──► active ──another key activated──► retired ──make active──► active
                     │                    │                                 │
                     └──probe refused──► failed ──retry──► pending          │
                                          └──remove──► (row deleted)        │
                  active ──disable──► disabled ◄──disable───────────────────┘
                  disabled ──re-enable (probe ok)──► active (no other active key) or retired

Every state has a way out: ``pending`` ends by itself (the probe task), ``failed`` can be retried or removed,
``retired`` can be made active again or disabled, ``disabled`` can be re-enabled. Only a customer deleting the
key in their own KMS ends a key for good, and Kodori says when that is safe.

``services`` performs each transition inside a transaction that holds the key's row lock; :func:`check`
refuses a transition the table does not allow with a message that says what the owner can do instead. The
pages show exactly :func:`actions` for each row, so a button never offers what the service would refuse.
"""

from __future__ import annotations

from enum import StrEnum

from tenants import lifecycle as tenant_lifecycle
from tenants.models import Tenant

from .models import KeyStatus


class Transition(StrEnum):
    VERIFIED = "verified"
    VERIFY_FAILED = "verify-failed"
    RETRY = "retry"
    REMOVE = "remove"
    SUPERSEDE = "supersede"
    MAKE_ACTIVE = "make-active"
    DISABLE = "disable"
    RE_ENABLE = "re-enable"


# (from, transition) -> the states it may lead to (re-enabling leads to active or retired, as appropriate).
TABLE: dict[tuple[KeyStatus, Transition], tuple[KeyStatus, ...]] = {
    (KeyStatus.PENDING, Transition.VERIFIED): (KeyStatus.ACTIVE,),
    (KeyStatus.PENDING, Transition.VERIFY_FAILED): (KeyStatus.FAILED,),
    (KeyStatus.FAILED, Transition.RETRY): (KeyStatus.PENDING,),
    (KeyStatus.FAILED, Transition.REMOVE): (),
    (KeyStatus.ACTIVE, Transition.SUPERSEDE): (KeyStatus.RETIRED,),
    (KeyStatus.RETIRED, Transition.MAKE_ACTIVE): (KeyStatus.ACTIVE,),
    (KeyStatus.ACTIVE, Transition.DISABLE): (KeyStatus.DISABLED,),
    (KeyStatus.RETIRED, Transition.DISABLE): (KeyStatus.DISABLED,),
    (KeyStatus.DISABLED, Transition.RE_ENABLE): (KeyStatus.ACTIVE, KeyStatus.RETIRED),
}

# What an owner is told when a transition is not allowed from a state.
_REFUSALS: dict[KeyStatus, str] = {
    KeyStatus.PENDING: "Kodori is still verifying this key; wait for the result.",
    KeyStatus.ACTIVE: "This key is already the active key.",
    KeyStatus.RETIRED: "This key is retired: make it active again, or disable it.",
    KeyStatus.FAILED: "This key failed verification: retry it once its access is fixed, or remove it.",
    KeyStatus.DISABLED: "This key is disabled: re-enable it first.",
}


class KeyCustodyError(Exception):
    """A custody change the rules forbid; ``str()`` tells the owner what to do instead."""


class TransitionRefused(KeyCustodyError):
    """The lifecycle does not allow this transition from the key's state; ``str()`` says what to do."""


def check_tenant_writable(tenant: Tenant) -> None:
    """No key changes while the tenant is scheduled for deletion or being erased (``tenants.lifecycle``)."""
    try:
        tenant_lifecycle.check_writable(tenant)
    except tenant_lifecycle.TenantReadOnly as exc:
        raise KeyCustodyError(str(exc)) from None


def refusal(status: str) -> str:
    """What an owner is told when nothing they asked for can start from ``status``."""
    return _REFUSALS[KeyStatus(status)]


def allowed(status: str, transition: Transition) -> bool:
    return (KeyStatus(status), transition) in TABLE


def check(status: str, transition: Transition, target: KeyStatus | None = None) -> None:
    """Raise ``TransitionRefused`` unless ``transition`` (to ``target``, if given) may start at ``status``."""
    state = KeyStatus(status)
    targets = TABLE.get((state, transition))
    if targets is None or (target is not None and target not in targets):
        raise TransitionRefused(refusal(state))


def actions(status: str) -> list[Transition]:
    """The transitions an owner may start from the key history for a key in ``status``, in button order.

    Supersede, verified and verify-failed happen to keys, not by a click.
    """
    manual = [Transition.MAKE_ACTIVE, Transition.RE_ENABLE, Transition.RETRY, Transition.DISABLE]
    return [t for t in [*manual, Transition.REMOVE] if allowed(status, t)]
