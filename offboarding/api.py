"""The export and deletion-status API under ``/api/v1/`` (docs/api.md): same tokens, same JSON errors as the
blobs API. Exports are for owners' tokens; another tenant's export is 404."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpResponseBase, JsonResponse
from django.urls import reverse

from audit.encoding import format_time
from blobs.api import api_view
from blobs.errors import BadRequest, Forbidden, NotFound
from tenants.access import TenantRequest
from tenants.models import Role

from . import exports, services
from .models import Export, ExportFormat, ExportPart
from .views import archive_response


def _owner(request: TenantRequest) -> None:
    if request.membership.role_enum != Role.OWNER:
        raise Forbidden(f"Only an owner can export {request.tenant.name}.")


def _load(request: TenantRequest, export_id: str) -> Export:
    try:
        pk = UUID(export_id)
    except ValueError:
        raise NotFound("No such export.") from None
    export_row = Export.objects.for_tenant(request.tenant).select_related("tenant").filter(pk=pk).first()
    if export_row is None:
        raise NotFound("No such export.")
    return export_row


def _json(export_row: Export) -> dict[str, Any]:
    body = exports.status_json(export_row)
    for part in body["parts"]:
        part["url"] = reverse("offboarding:api_export_part", args=[body["id"], part["number"]])
    body["url"] = reverse("offboarding:api_export", args=[body["id"]])
    return body


@api_view("GET", "POST")
def export_list(request: TenantRequest) -> HttpResponseBase:
    _owner(request)
    if request.method == "POST":
        fmt = request.GET.get("format") or request.POST.get("format") or ExportFormat.ZIP
        if fmt not in ExportFormat.values:
            raise BadRequest("format must be zip or tar.")
        export_row = exports.create_export(request.tenant, fmt, actor=request.user)
        return JsonResponse(_json(export_row), status=201)
    recent = Export.objects.for_tenant(request.tenant).select_related("tenant")[:50]
    return JsonResponse({"exports": [_json(e) for e in recent]})


@api_view("GET")
def export_status(request: TenantRequest, export_id: str) -> HttpResponseBase:
    _owner(request)
    return JsonResponse(_json(_load(request, export_id)))


@api_view("GET")
def export_part(request: TenantRequest, export_id: str, number: int) -> HttpResponseBase:
    _owner(request)
    export_row = _load(request, export_id)
    part = (
        ExportPart.objects.select_related("export__tenant").filter(export=export_row, number=number).first()
    )
    if part is None:
        raise NotFound("No such part.")
    return archive_response(export_row, part, exports.begin_download(request, part))


@api_view("GET")
def deletion_status(request: TenantRequest) -> HttpResponseBase:
    """Any member's token: whether the tenant is scheduled for deletion, and when."""
    tenant = request.tenant
    deletion = services.open_request(tenant)
    return JsonResponse(
        {
            "state": tenant.state,
            "read_only": tenant.is_read_only,
            "deletion_due_at": format_time(tenant.deletion_due_at) if tenant.deletion_due_at else None,
            "scheduled_at": format_time(deletion.requested_at) if deletion else None,
            "scheduled_via": deletion.via if deletion else None,
        }
    )
