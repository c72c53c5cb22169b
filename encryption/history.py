"""The key history on ``/encryption``: every registered key, newest first, a keyset page at a time, each key
linked to the rotations that made it active (their audit events) and to the re-wrap walks that moved data keys
to it (``RewrapJob``). The walk's page links back the same way (``walk_summary``).

Pages use ``audit.pages`` over the key's id (``TenantKey`` rows are numbered as they are registered, so id
order is registration order); a page costs one range scan of the primary key however long the history is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.urls import reverse

from audit import pages
from audit.models import AuditEvent, EventType
from tenants.models import Tenant

from .coverage import KeyCoverage, with_counts
from .models import KeyStatus, RewrapJob, TenantKey

PAGE_SIZE = 20
PAGE_KIND = "key"
STALE = "That page link of the key history is out of date or damaged; here is its first page."


@dataclass(frozen=True)
class Rotation:
    """A ``tenant-kms.rotated`` event that made a key the active one."""

    seq: int
    at: Any
    from_label: str

    @property
    def url(self) -> str:
        return pages.event_url(self.seq, custody=True)


@dataclass(frozen=True)
class HistoryRow:
    coverage: KeyCoverage
    rotations: list[Rotation] = field(default_factory=list)
    walks: list[RewrapJob] = field(default_factory=list)

    @property
    def key(self) -> TenantKey:
        return self.coverage.key


@dataclass(frozen=True)
class HistoryPage:
    rows: list[HistoryRow]
    links: dict[str, str]
    error: str


def rotations_to(tenant: Tenant, key_ids: list[int]) -> dict[int, list[Rotation]]:
    """The rotations to each of ``key_ids``, newest first (the (tenant, type, seq) index finds them)."""
    found: dict[int, list[Rotation]] = defaultdict(list)
    if not key_ids:
        return found
    events = (
        AuditEvent.objects.for_tenant(tenant)
        .filter(type=EventType.TENANT_KMS_ROTATED, payload__toKeyRowId__in=key_ids)
        .order_by("-seq")
    )
    for event in events:
        p = event.payload
        origin = f"{p.get('fromProvider', '?')} …{p.get('fromKeyIdSuffix', '')}".rstrip(" …")
        found[int(p["toKeyRowId"])].append(Rotation(event.seq, event.created_at, origin))
    return found


def walks_to(tenant: Tenant, key_ids: list[int]) -> dict[int, list[RewrapJob]]:
    """The re-wrap walks to each of ``key_ids`` (to one of its key versions), newest first."""
    found: dict[int, list[RewrapJob]] = defaultdict(list)
    jobs = (
        RewrapJob.objects.for_tenant(tenant)
        .filter(target_tkv__kek_id__in=key_ids)
        .select_related("target_tkv")
        .order_by("-pk")
    )
    for job in jobs:
        found[job.target_tkv.kek_id].append(job)
    return found


def refusing(tenant: Tenant) -> list[KeyCoverage]:
    """The usable keys whose KMS refuses Kodori now, with what they protect (the page names each)."""
    keys = TenantKey.objects.for_tenant(tenant).filter(
        refused_at__isnull=False, status__in=[KeyStatus.ACTIVE, KeyStatus.RETIRED]
    )
    return with_counts(list(keys.order_by("-pk")), tenant.pk)


def history_page(tenant: Tenant, query: Any) -> HistoryPage:
    """The page of the key history that ``query`` (the request's GET) asks for."""
    keys = TenantKey.objects.for_tenant(tenant).select_related("registered_by")
    first = partial(pages.page, keys, "pk", PAGE_SIZE, kind=PAGE_KIND)
    error = ""
    try:
        page = first(**pages.requested(query))
    except ValueError:
        page, error = first(), STALE
    if not page.rows and pages.asked_for_a_page(query):
        page = first()
    ids = [key.pk for key in page.rows]
    rotations, walks = rotations_to(tenant, ids), walks_to(tenant, ids)
    rows = [
        HistoryRow(row, rotations.get(row.key.pk, []), walks.get(row.key.pk, []))
        for row in with_counts(page.rows, tenant.pk)
    ]
    base = reverse("encryption:index")

    def link(**extra: str) -> str:
        params = pages.querystring([], **extra)
        return f"{base}?{params}#history" if params else f"{base}#history"

    return HistoryPage(rows, page.links(link), error)
