"""``/audit`` and its exports, for owners and admins of the current tenant; acknowledging breaks, owners."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import cast

from django.conf import settings
from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from tenants.access import MANAGERS, tenant_required
from tenants.roles import Role

from . import chain, export, pages, payloads, services, signing
from .filters import DEFAULT_VIEW, AuditFilters
from .forms import AcknowledgeForm
from .models import AcknowledgedVia, AuditEvent, ChainBreak, Checkpoint, EventType
from .presenters import break_row, row

# A filtered view says how many events match up to this many ("10,000+"), never counting a whole chain.
COUNT_CAP = 10_000
PAGE_KIND = pages.AUDIT_KIND
_STALE = "That page link is out of date or damaged; here is the first page."


def _events_page(
    request: HttpRequest, filters: AuditFilters, events: QuerySet[AuditEvent]
) -> tuple[pages.Page[AuditEvent], str]:
    first = partial(pages.page, events, "seq", settings.AUDIT_PAGE_SIZE, kind=PAGE_KIND)
    try:
        page = first(**pages.requested(request.GET))
    except ValueError:
        return first(), _STALE
    if not page.rows and pages.asked_for_a_page(request.GET):
        return first(), ""  # everything beyond the link is filtered away
    return page, ""


def _shown(filters: AuditFilters, events: QuerySet[AuditEvent], total: int) -> int:
    """How many events the view holds: the whole chain needs no count (``seq`` has no gaps)."""
    if not filters.types and not filters.narrowed:
        return total
    return pages.count_up_to(events, COUNT_CAP + 1)


@require_GET
@tenant_required(*MANAGERS)
def index(request: HttpRequest) -> HttpResponse:
    return _index(request)


def _index(
    request: HttpRequest,
    *,
    ack_form: AcknowledgeForm | None = None,
    ack_pk: int | None = None,
    code: int = 200,
) -> HttpResponse:
    tenant = request.tenant  # type: ignore[attr-defined]
    filters = AuditFilters.from_query(request.GET, default=DEFAULT_VIEW)
    status = chain.verify(tenant, limit=settings.AUDIT_PAGE_VERIFY_LIMIT)
    page: pages.Page[AuditEvent] | None = None
    cursor_error = ""
    shown = 0
    if not filters.errors:
        events = filters.apply(AuditEvent.objects.for_tenant(tenant))
        page, cursor_error = _events_page(request, filters, events)
        shown = _shown(filters, events, status.head_seq)
    seen = status.full_verified_at
    acknowledged = []
    for b in status.acknowledged:
        line = break_row(b, status.proofs.get(b.pk), seen)
        line["ack_url"] = pages.event_url(line["ack_seq"]) if line["ack_seq"] else ""
        acknowledged.append(line)
    ctx = {
        "filters": filters,
        "rows": [row(e) for e in page.rows] if page else [],
        "pager": page.links(lambda **extra: f"?{filters.querystring(**extra)}") if page else {},
        "cursor_error": cursor_error,
        "shown": shown,
        "count_cap": COUNT_CAP,
        "total": status.head_seq,
        "all_url": f"?{filters.switched(custody=False)}",
        "custody_url": f"?{filters.switched(custody=True)}",
        "type_names": ", ".join(filters.types),
        "status": status,
        "open_breaks": [break_row(b, None, seen) for b in status.breaks],
        "acknowledged_breaks": acknowledged,
        "can_acknowledge": request.membership.role_enum == Role.OWNER,  # type: ignore[attr-defined]
        "ack_form": ack_form,
        "ack_pk": ack_pk,
        "checkpoint": Checkpoint.objects.for_tenant(tenant).order_by("-seq").first(),
        "public_key": signing.public_key_b64(),
        "key_id": signing.current_key_id(),
        "event_types": list(EventType),
        "query": filters.querystring(),
    }
    return render(request, "audit/index.html", ctx, status=400 if filters.errors else code)


def _export_filters(request: HttpRequest) -> AuditFilters | HttpResponse:
    filters = AuditFilters.from_query(request.GET)
    if filters.errors:
        return HttpResponse(" ".join(filters.errors), status=400, content_type="text/plain; charset=utf-8")
    return filters


def _stamp() -> str:
    return timezone.now().strftime("%Y%m%dT%H%M%SZ")


def _export_rows(request: HttpRequest, export_format: str) -> QuerySet[AuditEvent] | HttpResponse:
    """The events a CSV or JSONL export streams, pinned before the export's own event is recorded."""
    tenant = request.tenant  # type: ignore[attr-defined]
    filters = _export_filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    events = filters.apply(AuditEvent.objects.for_tenant(tenant))
    span = export.bundle_range(events) or (0, 0)
    # Pin the range before streaming, so the export's own event is not part of it.
    events = events.filter(seq__lte=span[1])
    payload = payloads.audit_exported(
        export_format=export_format, first_seq=span[0], last_seq=span[1], filters=filters.querystring()
    )
    services.record(tenant, EventType.AUDIT_EXPORTED, actor=request.user, payload=payload, request=request)
    return events


def _download(chunks: Iterator[str] | Iterator[bytes], content_type: str, name: str) -> HttpResponse:
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return cast(HttpResponse, response)  # streamed; the access decorators are typed for HttpResponse


@require_GET
@tenant_required(*MANAGERS)
def export_csv(request: HttpRequest) -> HttpResponse:
    events = _export_rows(request, "csv")
    if isinstance(events, HttpResponse):
        return events
    name = f"kodori-audit-{request.tenant.slug}-{_stamp()}.csv"  # type: ignore[attr-defined]
    return _download(export.csv_rows(events), "text/csv; charset=utf-8", name)


@require_GET
@tenant_required(*MANAGERS)
def export_jsonl(request: HttpRequest) -> HttpResponse:
    """The same events as the CSV, one JSON object a line, with the fields that recompute each hash."""
    events = _export_rows(request, "jsonl")
    if isinstance(events, HttpResponse):
        return events
    name = f"kodori-audit-{request.tenant.slug}-{_stamp()}.jsonl"  # type: ignore[attr-defined]
    return _download(export.jsonl_lines(events), "application/jsonl; charset=utf-8", name)


@require_GET
@tenant_required(*MANAGERS)
def export_bundle(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant  # type: ignore[attr-defined]
    filters = _export_filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    span = export.bundle_range(filters.apply(AuditEvent.objects.for_tenant(tenant)))
    if span is None:
        messages.info(request, "No events match these filters: there is nothing to export.")
        return redirect(f"{reverse('audit:index')}?{filters.querystring()}")
    first, last = span
    status = chain.verify(tenant)
    # The export signs its last event, so a bundle cut short fails offline verification.
    chunks = export.signed_bundle(
        tenant, first, last, exported_by=request.user.get_username(), filters=filters, status=status
    )
    payload = payloads.audit_exported(
        export_format="bundle", first_seq=first, last_seq=last, filters=filters.querystring()
    )
    services.record(tenant, EventType.AUDIT_EXPORTED, actor=request.user, payload=payload, request=request)
    response = StreamingHttpResponse(chunks, content_type="application/zip")
    name = f"kodori-audit-{tenant.slug}-{first}-{last}-{_stamp()}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return cast(HttpResponse, response)


@require_POST
@tenant_required(Role.OWNER)
def acknowledge_break(request: HttpRequest, pk: int) -> HttpResponse:
    """An owner acknowledges a break with a reason: recorded as an ``audit.break-acknowledged`` event."""
    tenant = request.tenant  # type: ignore[attr-defined]
    brk = get_object_or_404(ChainBreak.objects.for_tenant(tenant), pk=pk)
    form = AcknowledgeForm(request.POST)
    if not form.is_valid():
        return _index(request, ack_form=form, ack_pk=brk.pk, code=400)
    try:
        reason = form.cleaned_data["reason"]
        services.acknowledge_break(
            brk, reason=reason, via=AcknowledgedVia.OWNER, actor=request.user, request=request
        )
    except services.AcknowledgementError as exc:
        messages.error(request, str(exc))
        return redirect("audit:index")
    messages.success(
        request,
        f"The break at {brk.span} is acknowledged, with your reason, in the audit log. Kodori verifies the "
        "rest of the chain past it; any other break is reported again.",
    )
    return redirect("audit:index")


@require_POST
@tenant_required(*MANAGERS)
def verify_now(request: HttpRequest) -> HttpResponse:
    """Re-verify the whole chain from genesis (a page view only checks what is new)."""
    tenant = request.tenant  # type: ignore[attr-defined]
    status = chain.verify(tenant, full=True, found_by="full verification")
    if status.broken is None:
        past = f", past {len(status.acknowledged)} acknowledged break(s)" if status.acknowledged else ""
        messages.success(request, f"The whole chain verifies: events #1 to #{status.verified_seq}{past}.")
    else:
        messages.error(request, f"The audit chain is broken at #{status.broken.seq}: {status.broken.reason}")
    return redirect("audit:index")
