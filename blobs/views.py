"""Pages of the blobs app: list, upload, detail, download, delete. API tokens are in ``token_views``; several
files as one archive in ``offboarding.selection`` (the archive writer's app).

Each view reads "load, check access, act, redirect". Blobs are loaded only through
``Blob.objects.visible_in(request.tenant)``, so another tenant's blob, or an unfinished upload, is a 404.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast
from urllib.parse import urlencode
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from tenants.access import UPLOADERS, TenantRequest, tenant_required

from . import downloads, listing, scrub, selection, services, uploads
from .errors import BlobError, check_writable
from .forms import SORT_LABELS, BlobListForm
from .models import Blob, TenantBlobStats
from .upload_handler import EncryptingUploadHandler, parse_multipart


def error_page(request: HttpRequest, exc: BlobError) -> HttpResponse:
    response = render(request, "blobs/error.html", {"error": exc}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _blob(request: TenantRequest, pk: UUID) -> Blob:
    return get_object_or_404(Blob.objects.visible_in(request.tenant).select_related("tenant"), pk=pk)


# The time column shows ``created_at``, the time the list sorts by (an upload's start; its end is on the
# file's page), so its heading says "Added" rather than "Uploaded".
COLUMN_LABELS = {**SORT_LABELS, "created": "Added"}


def _sort_links(form: BlobListForm) -> list[dict[str, Any]]:
    current = form.sort_key()
    links = []
    for key, label in COLUMN_LABELS.items():
        state = "ascending" if current == key else "descending" if current == f"-{key}" else ""
        target = f"-{key}" if current == key else key
        params = {"sort": target, **({"q": form.query()} if form.query() else {})}
        links.append({"key": key, "label": label, "state": state, "url": "?" + urlencode(params)})
    return links


# A search shows how many files match up to this many ("1,000+ matches"), never counting a million rows.
SEARCH_COUNT_CAP = 1000


@require_GET
@tenant_required()
def blob_list(request: TenantRequest) -> HttpResponse:
    form = BlobListForm(request.GET)
    blobs = Blob.objects.visible_in(request.tenant)
    first = partial(listing.page, blobs, form.sort_order(), settings.BLOB_PAGE_SIZE, query=form.query())
    cursor_error = ""
    try:
        page = first(
            after=request.GET.get("after"),
            before=None if "after" in request.GET else request.GET.get("before"),
            last="after" not in request.GET and "before" not in request.GET and "last" in request.GET,
        )
    except ValueError:
        cursor_error = "That page link is out of date or damaged; here is the first page."
        page = first()
    if not page.rows and not cursor_error and {"after", "before", "last"} & set(request.GET):
        page = first()  # the files beyond it are gone
    # Scheduled for deletion: no delete buttons (the service would refuse them).
    writable = not request.tenant.is_read_only
    rows = [
        {"blob": b, "can_delete": writable and services.can_delete(request.membership, b)} for b in page.rows
    ]
    keep = {k: v for k, v in (("q", form.query()), ("sort", form.sort_key())) if v and v != "-created"}
    stats = TenantBlobStats.of(request.tenant.pk)
    # Damage found by the scrub or a download: every member sees which files no longer authenticate (the
    # banner lists the first 50 by name and says how many there are).
    damaged = Blob.objects.visible_in(request.tenant).damaged()
    damaged_count = damaged.count()
    ctx = {
        "form": form,
        "page": page,
        "pager": _pager(page, keep),
        "rows": rows,
        "sort_links": _sort_links(form),
        "cursor_error": cursor_error,
        "file_count": stats.ready_count,
        "matches": (
            listing.count_up_to(listing.search(blobs, form.query()), SEARCH_COUNT_CAP + 1)
            if form.query()
            else None
        ),
        "match_cap": SEARCH_COUNT_CAP,
        "can_upload": writable and request.membership.role_enum.can_upload,
        "archive_max": selection.MAX_FILES,
        "usage": stats.total_bytes,
        "quota": settings.BLOB_TENANT_QUOTA,
        "damaged_count": damaged_count,
        "damaged": list(damaged.order_by("name", "pk")[:50]) if damaged_count else [],
        "last_scrub": scrub.last_finished(request.tenant) if damaged_count else None,
    }
    return render(request, "blobs/list.html", ctx)


def _pager(page: listing.Page, keep: dict[str, str]) -> dict[str, str]:
    """First / previous / next / last links of a keyset page ("" where there is nowhere to go)."""

    def link(**extra: str) -> str:
        params = {**keep, **extra}
        return reverse("blobs:list") + ("?" + urlencode(params) if params else "")

    return {
        "first": link() if page.has_previous else "",
        "previous": link(before=page.previous_cursor) if page.previous_cursor else "",
        "next": link(after=page.next_cursor) if page.next_cursor else "",
        "last": link(last="1") if page.has_next else "",
    }


@csrf_exempt  # CSRF is checked below, after the upload handlers are in place (Django's documented way)
@require_http_methods(["GET", "POST"])
@tenant_required(*UPLOADERS)
def upload(request: TenantRequest) -> HttpResponse:
    if request.method == "GET":
        ctx = {"max_size": settings.BLOB_MAX_SIZE, "limits": uploads.limits_for(request.tenant)}
        return render(request, "blobs/upload.html", ctx)
    try:
        check_writable(request.tenant)
    except BlobError as exc:
        return _upload_error(request, exc)
    if request.content_type == "multipart/form-data":
        return _form_upload(request)
    if request.content_type == "application/x-www-form-urlencoded":
        return _upload_error(request, BlobError("Send the file as the request body or as multipart."))
    return csrf_protect(_raw_upload)(request)


def _upload_error(request: HttpRequest, exc: BlobError) -> HttpResponse:
    if request.content_type == "multipart/form-data":
        return error_page(request, exc)
    response = JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _raw_upload(request: TenantRequest) -> HttpResponse:
    """The page's script sends each file as a raw body: ``POST /blobs/upload?name=...&type=...``."""
    try:
        blob = uploads.receive_raw(
            request, request.tenant, request.user, request.GET.get("name", ""), request.GET.get("type")
        )
    except BlobError as exc:
        return _upload_error(request, exc)
    body = {
        "id": str(blob.pk),
        "name": blob.name,
        "size": blob.size,
        "url": reverse("blobs:detail", args=[blob.pk]),
    }
    return JsonResponse(body, status=201)


def _form_upload(request: TenantRequest) -> HttpResponse:
    """Without JavaScript the form posts multipart: encrypted as it arrives, then CSRF is checked."""
    handler = EncryptingUploadHandler(request.tenant, request.user)
    try:
        post, _files = parse_multipart(request, handler)
    except BlobError as exc:
        return error_page(request, exc)
    request.POST = post  # type: ignore[assignment]  # the CSRF check reads the token from here; the body is consumed

    def finish(request: TenantRequest) -> HttpResponse:
        if not handler.uploads:
            return error_page(request, BlobError("Choose at least one file to upload."))
        try:
            names = [upload.finish(request=request).name for upload in handler.uploads]
        except BlobError as exc:
            return error_page(request, exc)
        messages.success(request, f"Uploaded {', '.join(names)}.")
        return redirect("blobs:list")

    try:
        return csrf_protect(finish)(request)
    finally:
        handler.abort_all()  # no-op for finished uploads; throws away the rest (e.g. CSRF refused)


@require_GET
@tenant_required()
def detail(request: TenantRequest, pk: UUID) -> HttpResponse:
    blob = get_object_or_404(
        Blob.objects.visible_in(request.tenant).select_related("data_key__tkv__kek"), pk=pk
    )
    ctx = {"blob": blob, "tkv": blob.data_key.tkv, "kek": blob.data_key.tkv.kek}
    ctx["can_delete"] = not request.tenant.is_read_only and services.can_delete(request.membership, blob)
    return render(request, "blobs/detail.html", ctx)


@require_http_methods(["GET", "HEAD"])
@tenant_required()
def download(request: TenantRequest, pk: UUID) -> HttpResponse:
    blob = _blob(request, pk)
    try:
        # A StreamingHttpResponse; tenant_required's typing names HttpResponse for every view.
        return cast(HttpResponse, downloads.blob_response(request, blob))
    except BlobError as exc:
        return error_page(request, exc)


@require_http_methods(["GET", "POST"])
@tenant_required()
def delete(request: TenantRequest, pk: UUID) -> HttpResponse:
    blob = _blob(request, pk)  # first: another tenant's blob is 404 for every role, never 403
    if not services.can_delete(request.membership, blob):
        return render(request, "403.html", status=403)
    if request.method == "GET":
        return render(request, "blobs/delete.html", {"blob": blob})
    try:
        services.delete_blob(blob, actor=request.user, request=request)
    except BlobError as exc:
        return error_page(request, exc)
    messages.success(request, f"Deleted {blob.name}.")
    return redirect("blobs:list")
