"""The filters of ``/audit`` and its exports, read from the URL so that a link reproduces the view.

``types`` (repeatable, or comma-separated) takes exact names, globs (``tenant-kms.*``) or a preset's name
(``custody``, see ``PRESETS``), expanded against the known event types; ``year``; ``from``/``to``
(``YYYY-MM-DD``, inclusive, UTC); ``actor``: an e-mail address or ``system``. Every filter is served by an
index (see ``AuditEvent.Meta.indexes``).

``/audit`` opens on the key-custody events (``DEFAULT_VIEW``): a tenant's uploads would otherwise bury its
few key changes. ``all=1`` (or an emptied types box, ``types=``) shows every type; the exports, which people
reach from the page's own links, keep what the link says and default to every type.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.db.models.functions import Upper
from django.http import QueryDict

from .models import AuditEvent, EventType

SYSTEM_ACTOR = "system"

# Named sets of types, usable wherever a type or glob is (``types=custody``, ``types=custody,blob.deleted``).
# The URL, the CSV export and the bundle header keep the name, so a link means the same set release after
# release, and a new type matching a glob (``tenant-kms.re-enabled``) joins the preset by itself.
PRESETS: dict[str, tuple[str, ...]] = {
    # Every change to who holds the keys: registration, rotation, disabling and re-enabling of keys, seal and
    # unseal, re-wrap jobs, and support's cloud-KMS switch.
    "custody": ("tenant-kms.*", "tenant.sealed", "tenant.unsealed", "tenant.cloud-kms-*", "rewrap.*"),
}
# What ``/audit`` shows when the URL names no types: the one place that decides it.
DEFAULT_VIEW = "custody"


def _parse_date(value: str, name: str, errors: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"“{name}” must be a date like 2026-04-26, not “{value}”.")
        return None


def expand_types(globs: list[str]) -> tuple[list[str], list[str]]:
    """(matching event types, errors) for a list of names, globs or preset names."""
    known = [t.value for t in EventType]
    matched: list[str] = []
    errors = []
    for pattern in globs:
        parts = PRESETS.get(pattern, (pattern,))
        hits = [t for t in known if any(fnmatch.fnmatchcase(t, part) for part in parts)]
        if not hits:
            errors.append(f"No event type matches “{pattern}”.")
        matched.extend(t for t in hits if t not in matched)
    return matched, errors


def _seq_span(events: QuerySet[AuditEvent], start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """The run of sequence numbers whose ``created_at`` lies in [start, end); (1, 0) when there is none.

    ``created_at`` never decreases along a chain (``audit_append`` makes it so), so a time range is a sequence
    range, and the page query then walks the (tenant, seq) index in order instead of sorting a year of events.
    """
    span = events
    if start is not None:
        span = span.filter(created_at__gte=start)
    if end is not None:
        span = span.filter(created_at__lt=end)
    first = span.order_by("created_at", "seq").values_list("seq", flat=True).first()
    last = span.order_by("-created_at", "-seq").values_list("seq", flat=True).first()
    return (first, last) if first is not None and last is not None else (1, 0)


@dataclass
class AuditFilters:
    types: list[str] = field(default_factory=list)
    year: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    actor: str = ""
    errors: list[str] = field(default_factory=list)
    # Every type on purpose (``all=1``), so that links keep showing every type where a default would apply.
    all_types: bool = False
    # The types are the page's default (``DEFAULT_VIEW``), not the URL's.
    defaulted: bool = False

    @classmethod
    def from_query(cls, query: QueryDict, *, default: str | None = None) -> AuditFilters:
        """The filters a URL names; with ``default`` (``/audit``), a URL naming no types gets that preset."""
        errors: list[str] = []
        types = [
            part.strip() for value in query.getlist("types") for part in value.split(",") if part.strip()
        ]
        everything = not types and ("types" in query or query.get("all", "") not in ("", "0"))
        year = None
        if query.get("year", "").strip():
            raw = query.get("year", "").strip()
            if raw.isdigit() and 1970 <= int(raw) <= 9999:
                year = int(raw)
            else:
                errors.append(f"“year” must be a year like 2026, not “{raw}”.")
        date_from = _parse_date(query.get("from", "").strip(), "from", errors)
        date_to = _parse_date(query.get("to", "").strip(), "to", errors)
        if date_from and date_to and date_from > date_to:
            errors.append("“from” must not be after “to”.")
        defaulted = not types and not everything and default is not None
        if defaulted:
            types = [str(default)]
        filters = cls(types, year, date_from, date_to, query.get("actor", "").strip()[:254], errors)
        filters.all_types, filters.defaulted = everything, defaulted
        errors.extend(expand_types(types)[1])
        return filters

    @property
    def active(self) -> bool:
        return bool(self.types or self.year or self.date_from or self.date_to or self.actor)

    @property
    def narrowed(self) -> bool:
        """Narrowed by more than the types: a year, dates or an actor."""
        return bool(self.year or self.date_from or self.date_to or self.actor)

    @property
    def custody_only(self) -> bool:
        """Exactly the key-custody view (whether by default or asked for)."""
        return self.types == [DEFAULT_VIEW]

    def time_bounds(self) -> tuple[datetime | None, datetime | None]:
        """[start, end) in UTC: the intersection of ``year`` and ``from``/``to``."""
        starts, ends = [], []
        if self.year:
            starts.append(datetime(self.year, 1, 1, tzinfo=UTC))
            ends.append(
                datetime(self.year + 1, 1, 1, tzinfo=UTC)
                if self.year < 9999
                else datetime.max.replace(tzinfo=UTC)
            )
        if self.date_from:
            starts.append(datetime.combine(self.date_from, time.min, tzinfo=UTC))
        if self.date_to:
            ends.append(datetime.combine(self.date_to, time.min, tzinfo=UTC) + timedelta(days=1))
        return (max(starts) if starts else None, min(ends) if ends else None)

    def apply(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """Narrow one tenant's events (``AuditEvent.objects.for_tenant(tenant)``) to these filters."""
        start, end = self.time_bounds()
        if start is not None or end is not None:
            first, last = _seq_span(events, start, end)
            events = events.filter(seq__gte=first, seq__lte=last)
        if self.types:
            events = events.filter(type__in=expand_types(self.types)[0])
        if self.actor.lower() == SYSTEM_ACTOR:
            events = events.filter(actor_id__isnull=True)
        elif self.actor:
            # Spelled like the functional index (tenant, UPPER(actor_email), seq) so PostgreSQL can use it.
            events = events.alias(actor_upper=Upper("actor_email")).filter(actor_upper=self.actor.upper())
        return events

    def params(self) -> list[tuple[str, str]]:
        """The filters as URL parameters, in a stable order."""
        pairs = [("types", t) for t in self.types] or ([("all", "1")] if self.all_types else [])
        if self.year:
            pairs.append(("year", str(self.year)))
        if self.date_from:
            pairs.append(("from", self.date_from.isoformat()))
        if self.date_to:
            pairs.append(("to", self.date_to.isoformat()))
        if self.actor:
            pairs.append(("actor", self.actor))
        return pairs

    def querystring(self, **extra: str) -> str:
        return urlencode(self.params() + [(k, v) for k, v in extra.items() if v])

    def switched(self, *, custody: bool) -> str:
        """This view's query string with the types swapped for the key-custody view or for every event; the
        year, dates and actor stay."""
        rest = [pair for pair in self.params() if pair[0] not in ("types", "all")]
        return urlencode([("types", DEFAULT_VIEW) if custody else ("all", "1"), *rest])
