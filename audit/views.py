"""``/audit`` and its exports, for owners and admins of the current tenant; acknowledging breaks, owners."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from tenants.access import MANAGERS, tenant_required
from tenants.roles import Role

from . import chain, export, payloads, services, signing
from .filters import AuditFilters
from .forms import AcknowledgeForm
from .models import AcknowledgedVia, AuditEvent, ChainBreak, Checkpoint, EventType
from .presenters import break_row, row


def _positive_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and 0 < int(value) < 2**63 else None


def _page(
    events: Any, before: int | None, after: int | None, size: int
) -> tuple[list[AuditEvent], bool, bool]:
    """Keyset pagination on ``seq``, newest first: (rows, has_newer, has_older). No COUNT(*)."""
    if after is not None:
        rows = list(events.filter(seq__gt=after).order_by("seq")[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        return rows, has_newer, bool(rows) and events.filter(seq__lt=rows[-1].seq).exists()
    if before is not None:
        events = events.filter(seq__lt=before)
    rows = list(events.order_by("-seq")[: size + 1])
    has_older = len(rows) > size
    return rows[:size], before is not None and bool(rows[:size]), has_older


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
    filters = AuditFilters.from_query(request.GET)
    rows: list[AuditEvent] = []
    has_newer = has_older = False
    if not filters.errors:
        events = filters.apply(AuditEvent.objects.for_tenant(tenant))
        before, after = _positive_int(request.GET.get("before")), _positive_int(request.GET.get("after"))
        rows, has_newer, has_older = _page(events, before, after, settings.AUDIT_PAGE_SIZE)
    status = chain.verify(tenant, limit=settings.AUDIT_PAGE_VERIFY_LIMIT)
    seen = status.full_verified_at
    ctx = {
        "filters": filters,
        "rows": [row(e) for e in rows],
        "newer_url": f"?{filters.querystring(after=str(rows[0].seq))}" if has_newer and rows else "",
        "older_url": f"?{filters.querystring(before=str(rows[-1].seq))}" if has_older and rows else "",
        "status": status,
        "open_breaks": [break_row(b, None, seen) for b in status.breaks],
        "acknowledged_breaks": [break_row(b, status.proofs.get(b.pk), seen) for b in status.acknowledged],
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


@require_GET
@tenant_required(*MANAGERS)
def export_csv(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant  # type: ignore[attr-defined]
    filters = _export_filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    events = filters.apply(AuditEvent.objects.for_tenant(tenant))
    span = export.bundle_range(events) or (0, 0)
    # Pin the range before streaming, so the export's own event is not part of it.
    events = events.filter(seq__lte=span[1])
    payload = payloads.audit_exported(
        export_format="csv", first_seq=span[0], last_seq=span[1], filters=filters.querystring()
    )
    services.record(tenant, EventType.AUDIT_EXPORTED, actor=request.user, payload=payload, request=request)
    response = StreamingHttpResponse(export.csv_rows(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="kodori-audit-{tenant.slug}-{_stamp()}.csv"'
    return cast(HttpResponse, response)  # streamed; the access decorators are typed for HttpResponse


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
