"""Helpers of the tenant deletion tests (``test_deletion_*.py``, ``test_read_only_window.py``,
``test_support_admin.py``): scheduling as an owner does, reading the tenant and its audit events back, the
banner of a page, and the message each state refuses a transition with."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent, EventType
from offboarding import services
from offboarding.models import DeletionRequest, Via
from tenants.models import Tenant, TenantState
from tests.conftest import PASSWORD

Capture = Callable[..., Any]


@pytest.fixture(autouse=True)
def private_blob_root(blob_root: Path) -> Iterator[None]:
    """Every test's objects in its own directory: autouse in each test module that binds it
    (``_private_blob_root = deletion_support.private_blob_root``)."""
    yield


def fresh(tenant: Tenant) -> Tenant:
    return Tenant.objects.get(pk=tenant.pk)


def events(tenant: Tenant, kind: EventType) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, type=kind).order_by("seq"))


def close_to(moment: datetime | None, expected: datetime, slack: float = 10) -> bool:
    return moment is not None and abs((moment - expected).total_seconds()) <= slack


def schedule_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    return {"days": 14, "confirm_name": tenant.name, "password": PASSWORD, **changes}


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


REFUSED_FROM = {
    TenantState.ACTIVE: "No deletion is scheduled for this tenant.",
    TenantState.DELETION_SCHEDULED: "Deletion of this tenant is already scheduled; cancel it to change it.",
    TenantState.ERASING: "This tenant is being erased: its keys are destroyed; nothing can stop or undo it.",
    TenantState.ERASED: "This tenant was erased; nothing of it remains to change.",
}
