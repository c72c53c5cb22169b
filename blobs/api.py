"""The JSON API for programs, under ``/api/v1/`` (docs/api.md; the OpenAPI document is ``openapi.json``).

Authentication is ``Authorization: Bearer kdr_...`` only: no session cookies, hence no CSRF. A token acts for
its user in its tenant with the user's *current* role. Every error is JSON::

    {"error": {"code": "quota_exceeded", "message": "This file would take the tenant past ..."}}

Another tenant's blob id is 404, exactly like an id that never existed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache, wraps
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from tenants.access import UPLOADERS, TenantRequest
from tenants.models import Role

from . import downloads, listing, services, uploads
from .errors import (
    BadRequest,
    BlobError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    check_writable,
)
from .models import Blob
from .upload_handler import EncryptingUploadHandler, parse_multipart

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
ApiView = Callable[..., HttpResponseBase]


def error_response(request: HttpRequest, exc: BlobError) -> HttpResponse:
    response = JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="kodori"'
    return response  # HEAD: kodori.middleware.HeadMiddleware drops the body and keeps its Content-Length


def api_view(*methods: str) -> Callable[[ApiView], ApiView]:
    """Bearer-token authentication, allowed methods, and JSON for every error."""

    def decorator(view: ApiView) -> ApiView:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise MethodNotAllowed(
                        f"{request.method} is not allowed here.", headers={"Allow": ", ".join(methods)}
                    )
                _authenticate(request)
                return view(request, *args, **kwargs)
            except BlobError as exc:
                return error_response(request, exc)

        return wrapper

    return decorator


def _authenticate(request: HttpRequest) -> None:
    scheme, _, secret = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized(
            "Send an API token: Authorization: Bearer kdr_... (create one on the API tokens page)."
        )
    identity = services.authenticate_token(secret.strip())
    if identity is None:
        raise Unauthorized(
            "This API token is not valid: it is unknown, revoked, or its user left the tenant."
        )
    request.user = identity.membership.user
    request.membership = identity.membership  # type: ignore[attr-defined]
    request.tenant = identity.membership.tenant  # type: ignore[attr-defined]
    request.api_token = identity.token  # type: ignore[attr-defined]


def _require(request: TenantRequest, roles: tuple[Role, ...]) -> None:
    if request.membership.role_enum not in roles:
        raise Forbidden(
            f"A {request.membership.role_enum.label.lower()} cannot do this in {request.tenant.name}."
        )


def _load(request: TenantRequest, blob_id: str) -> Blob:
    try:
        pk = UUID(blob_id)
    except ValueError:
        raise NotFound("No such blob.") from None
    blob = Blob.objects.visible_in(request.tenant).select_related("tenant").filter(pk=pk).first()
    if blob is None:
        raise NotFound("No such blob.")
    return blob


def blob_json(blob: Blob) -> dict[str, Any]:
    return {
        "id": str(blob.pk),
        "name": blob.name,
        "content_type": blob.content_type,
        "size": blob.size,
        "created_at": (blob.completed_at or blob.created_at).isoformat().replace("+00:00", "Z"),
        "created_by": blob.created_by_email or None,
        "etag": blob.etag,
        "url": reverse("blobs:api_blob", args=[blob.pk]),
        "damage": _damage_json(blob),
    }


def _damage_json(blob: Blob) -> dict[str, Any] | None:
    """None for a whole file; else what was found (the file is not served until it is whole again)."""
    if blob.damaged_at is None:
        return None
    return {
        "kind": blob.damage,
        "chunk": blob.damaged_chunk,
        "found_at": blob.damaged_at.isoformat().replace("+00:00", "Z"),
        "message": blob.damage_text,
    }


# --- /api/v1/blobs -----------------------------------------------------------------------------------------


@api_view("GET", "POST")
def blobs(request: TenantRequest) -> HttpResponse:
    if request.method == "POST":
        return _upload(request)
    return _list(request)


def _list(request: TenantRequest) -> HttpResponse:
    """Newest first, keyset pagination: ``next_cursor`` stays correct while blobs are added or deleted."""
    try:
        limit = int(request.GET.get("limit", settings.BLOB_API_PAGE_SIZE))
    except ValueError:
        raise BadRequest("limit must be a whole number from 1 to 200.") from None
    if not 1 <= limit <= 200:
        raise BadRequest("limit must be a whole number from 1 to 200.")
    blobs, query = Blob.objects.visible_in(request.tenant), request.GET.get("q", "").strip()
    try:
        page = listing.page(blobs, listing.DEFAULT_SORT, limit, after=request.GET.get("cursor"), query=query)
    except ValueError:
        raise BadRequest("The cursor is not one this API gave out.") from None
    return JsonResponse({"items": [blob_json(b) for b in page.rows], "next_cursor": page.next_cursor})


def _upload(request: TenantRequest) -> HttpResponse:
    """Raw body (``?name=``, Content-Type is the file's) or multipart with one ``file`` part."""
    _require(request, UPLOADERS)
    check_writable(request.tenant)
    name = request.GET.get("name")
    if request.content_type == "multipart/form-data":
        handler = EncryptingUploadHandler(request.tenant, request.user, max_files=1, name=name)
        parse_multipart(request, handler)
        if not handler.uploads:
            raise BadRequest("The multipart body has no file part (send it as the field “file”).")
        try:
            blob = handler.uploads[0].finish(request=request)
        finally:
            handler.abort_all()
    else:
        blob = uploads.receive_raw(
            request, request.tenant, request.user, name or "", request.META.get("CONTENT_TYPE")
        )
    response = JsonResponse(blob_json(blob), status=201)
    response["Location"] = blob_json(blob)["url"]
    return response


# --- /api/v1/blobs/<id> ------------------------------------------------------------------------------------


@api_view("GET", "HEAD", "DELETE")
def blob(request: TenantRequest, blob_id: str) -> HttpResponseBase:
    found = _load(request, blob_id)
    if request.method == "DELETE":
        _require(request, UPLOADERS)
        if not services.can_delete(request.membership, found):
            raise Forbidden("Members can delete only the files they uploaded.")
        services.delete_blob(found, actor=request.user, request=request)
        return HttpResponse(status=204)
    return downloads.blob_response(request, found)


# --- /api/v1/openapi.json ----------------------------------------------------------------------------------


@cache
def _openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return document


@csrf_exempt
def openapi(request: HttpRequest) -> HttpResponse:
    """The hand-written OpenAPI 3.1 document, with this deployment's address as its server."""
    if request.method not in ("GET", "HEAD"):
        return error_response(request, MethodNotAllowed("Use GET.", headers={"Allow": "GET, HEAD"}))
    document = dict(_openapi_document())
    document["servers"] = [{"url": request.build_absolute_uri("/api/v1")}]
    return JsonResponse(document, json_dumps_params={"indent": 2})
