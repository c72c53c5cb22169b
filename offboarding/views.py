"""Owner pages: export the tenant's files, schedule or cancel its deletion.

Every view loads through the current tenant (another tenant's export is a 404) and is for owners only.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

from django.contrib import messages
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from blobs.errors import BlobError
from blobs.views import error_page
from tenants.access import TenantRequest, tenant_required
from tenants.lifecycle import TenantStateError
from tenants.models import Role

from . import exports, services
from .archive import archive_format
from .forms import ExportForm, ScheduleDeletionForm
from .models import DeletionRequest, Export, ExportPart, PartStatus, Via

OWNERS = (Role.OWNER,)


@require_GET
@tenant_required(*OWNERS)
def deletion(request: TenantRequest) -> HttpResponse:
    form = ScheduleDeletionForm(tenant=request.tenant, user=request.user)
    return _deletion_page(request, form)


def _deletion_page(request: TenantRequest, form: ScheduleDeletionForm, status: int = 200) -> HttpResponse:
    tenant = request.tenant
    context = {
        "form": form,
        "tenant": tenant,
        "open_request": services.open_request(tenant),
        "history": list(DeletionRequest.objects.for_tenant(tenant)[:10]),
        "min_days": services.MIN_DAYS,
        "max_days": services.MAX_DAYS,
    }
    return render(request, "offboarding/deletion.html", context, status=status)


@sensitive_post_parameters("password")  # never in an error report
@require_POST
@tenant_required(*OWNERS)
def schedule(request: TenantRequest) -> HttpResponse:
    form = ScheduleDeletionForm(request.POST, tenant=request.tenant, user=request.user)
    if not form.is_valid():
        return _deletion_page(request, form, status=400)
    try:
        services.schedule_deletion(
            request.tenant, actor=request.user, via=Via.OWNER, days=form.cleaned_data["days"], request=request
        )
    except TenantStateError as exc:
        messages.error(request, str(exc))
        return redirect("offboarding:deletion")
    messages.warning(
        request,
        "Deletion scheduled. The owners are being e-mailed; any owner can cancel until the date.",
    )
    return redirect("offboarding:deletion")


@require_POST
@tenant_required(*OWNERS)
def cancel(request: TenantRequest) -> HttpResponse:
    try:
        services.cancel_deletion(request.tenant, actor=request.user, via=Via.OWNER, request=request)
    except TenantStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The deletion is cancelled. {request.tenant.name} is active again.")
    return redirect("offboarding:deletion")


@require_http_methods(["GET", "POST"])
@tenant_required(*OWNERS)
def export_index(request: TenantRequest) -> HttpResponse:
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            export_row = exports.create_export(
                request.tenant, form.cleaned_data["format"], actor=request.user
            )
        except BlobError as exc:
            return error_page(request, exc)
        return redirect("offboarding:export_detail", pk=export_row.pk)
    recent = Export.objects.for_tenant(request.tenant).prefetch_related("parts")[:10]
    return render(request, "offboarding/export.html", {"form": form, "exports": recent})


def _export(request: TenantRequest, pk: UUID) -> Export:
    return get_object_or_404(Export.objects.for_tenant(request.tenant).select_related("tenant"), pk=pk)


@require_GET
@tenant_required(*OWNERS)
def export_detail(request: TenantRequest, pk: UUID) -> HttpResponse:
    export_row = _export(request, pk)
    parts = list(export_row.parts.all())
    context = {
        "export": export_row,
        "parts": parts,
        "streaming": any(p.shown_status == PartStatus.STREAMING for p in parts),
        "format": archive_format(export_row.format),
    }
    template = (
        "offboarding/_export_parts.html"
        if request.headers.get("HX-Request")
        else "offboarding/export_detail.html"
    )
    return render(request, template, context)


@require_GET
@tenant_required(*OWNERS)
def export_part(request: TenantRequest, pk: UUID, number: int) -> HttpResponse:
    export_row = _export(request, pk)
    part = get_object_or_404(
        ExportPart.objects.select_related("export__tenant"), export=export_row, number=number
    )
    try:
        body = exports.begin_download(request, part)
    except BlobError as exc:
        return error_page(request, exc)
    return archive_response(export_row, part, body)  # type: ignore[return-value]


def archive_response(export_row: Export, part: ExportPart, body: Iterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type=archive_format(export_row.format).content_type)
    response["Content-Disposition"] = exports.content_disposition(export_row, part)
    response["X-Export-Files"] = str(part.files)
    response["X-Export-Bytes"] = str(part.bytes)
    return response
