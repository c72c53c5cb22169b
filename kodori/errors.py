"""Kodori's answers to requests it refuses or fails: JSON on API routes, Kodori's own pages everywhere else.

One rule decides the form of every error answer, wherever it comes from (a view, Django's error handlers, the
CSRF check, a middleware, or gunicorn refusing a request Django never sees): a path under ``/api/`` gets the
API's error shape ``{"error": {"code": ..., "message": ...}}`` (docs/api.md, "Errors"), any other path gets
the page ``templates/<status>.html`` (400, 403, 404, 413, 500; other statuses use the 400 or 500 page with
their own title). Nothing here echoes what the client sent, and no traceback ever reaches a client.

Refusals say *why* through :func:`note_refusal`; ``kodori.middleware.RefusalLogMiddleware`` writes that
reason on the one log line each refusal gets.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.views.decorators.csrf import csrf_exempt

API_PREFIX = "/api/"

# The stable ``code`` of each status that has no more specific one (the blob endpoints name their own).
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    416: "range_not_satisfiable",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "server_error",
    501: "not_implemented",
    503: "unavailable",
}
# What a person reads for each of them, when the refusal has nothing more specific to say.
MESSAGES: dict[int, str] = {
    400: "Kodori could not understand this request. Nothing was changed.",
    401: "Sign in, or send an API token: Authorization: Bearer kdr_...",
    403: "You are not allowed to do this.",
    404: "There is nothing here, or it belongs to another tenant.",
    405: "This method is not allowed here.",
    411: "Send a Content-Length with the request body.",
    413: "The request is larger than Kodori accepts. Nothing was changed.",
    414: "The address (with its query string) is longer than Kodori accepts.",
    417: "Kodori does not support this Expect header.",
    431: "The request's headers are larger, or more, than Kodori accepts.",
    500: "Something went wrong on Kodori's side. Try again in a moment.",
    501: "Kodori does not support this.",
    503: "This is unavailable for a moment. Try again shortly. Nothing was changed.",
}
TITLES: dict[int, str] = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    413: "Too large",
    414: "Address too long",
    431: "Headers too large",
    500: "Server error",
}
# Pages with a template of their own; other statuses borrow the 400 (4xx) or 500 (5xx) page.
PAGES = frozenset({400, 403, 404, 413, 500})
_REASON_LIMIT = 200


def is_api(path: str) -> bool:
    """Whether ``path`` is one of the API's (``/api/...``): those answer JSON, always."""
    return path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)


def code_for(status: int) -> str:
    return CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def message_for(status: int) -> str:
    return MESSAGES.get(status) or f"{HTTPStatus(status).phrase}."


def title_for(status: int) -> str:
    return TITLES.get(status) or HTTPStatus(status).phrase


def template_for(status: int) -> str:
    if status in PAGES:
        return f"{status}.html"
    return "500.html" if status >= 500 else "400.html"


def page_message(status: int, message: str | None) -> str:
    """What a page says: ``message``, else its own template's words, else (a status that borrows the 400 or
    500 page) the status's message."""
    return message or ("" if status in PAGES else message_for(status))


def json_body(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code or code_for(status), "message": message or message_for(status)}}


def json_bytes(status: int, message: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(json_body(status, message, code), ensure_ascii=False).encode()


def printable(text: str, limit: int = _REASON_LIMIT) -> str:
    """``text`` safe for one log line: control characters escaped, cut to ``limit`` characters."""
    escaped = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def note_refusal(request: HttpRequest, reason: str) -> None:
    """Remember why ``request`` is refused, for its log line (never shown to the client)."""
    request.kodori_refusal = printable(reason)  # type: ignore[attr-defined]


def refusal_of(request: HttpRequest) -> str:
    return str(getattr(request, "kodori_refusal", ""))


def respond(
    request: HttpRequest,
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    title: str | None = None,
) -> HttpResponse:
    """The answer for a refused (or failed) request: JSON on API routes, Kodori's page otherwise."""
    if is_api(request.path):
        return JsonResponse(json_body(status, message, code), status=status)
    context = {
        "status": status,
        "title": title or title_for(status),
        "message": page_message(status, message),
        "request_id": getattr(request, "request_id", ""),
    }
    return render(request, template_for(status), context, status=status)


def render_page(status: int, message: str | None = None, request_id: str = "") -> str:
    """A page rendered with no request at all (no context processors, no database): for the 500 page and for
    gunicorn's refusals, which come before any Django request exists."""
    context = {
        "status": status,
        "title": title_for(status),
        "message": page_message(status, message),
        "request_id": request_id,
    }
    return loader.render_to_string(template_for(status), context)


# --- Django's error handlers (kodori/urls.py) ---------------------------------------------------------------


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler400``: every SuspiciousOperation (Django's own body limits among them) and BadRequest."""
    note_refusal(request, f"{type(exception).__name__}: {exception}")
    if isinstance(exception, RequestDataTooBig):
        message = "The form is larger than Kodori accepts. Nothing was changed."
        return respond(request, 413, message, code="too_large", title=title_for(413))
    if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
        return respond(request, 400, "The form has more fields than Kodori accepts. Nothing was changed.")
    return respond(request, 400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler403``: PermissionDenied (a role that may not do this)."""
    note_refusal(request, str(exception) or "permission denied")
    return respond(request, 403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: Http404, and page URLs that match nothing (``/api/`` URLs reach ``api_not_found``)."""
    first = exception.args[0] if exception.args else None
    note_refusal(request, first if isinstance(first, str) else "no such page")  # Resolver404's is a dict
    return respond(request, 404)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: Django has logged the traceback with the request id; the client gets none of it.

    The page renders without a request (no context processors): whatever failed may be the database.
    """
    request_id = str(getattr(request, "request_id", ""))
    if is_api(request.path):
        message = message_for(500)
        if request_id:
            message += f" If it keeps happening, give support the request id {request_id}."
        return JsonResponse(json_body(500, message), status=500)
    return HttpResponse(render_page(500, request_id=request_id), status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: Kodori's 403 page, saying what to do (the reason goes to the log only)."""
    note_refusal(request, f"CSRF: {reason}")
    message = (
        "The form's CSRF check failed: its security token is missing or expired. Reload the page and try "
        "again. Nothing was changed."
    )
    return respond(request, 403, message, title="Form expired")


@csrf_exempt
def api_not_found(request: HttpRequest) -> HttpResponse:
    """Every ``/api/`` URL no API route matches: JSON 404, in every environment (DEBUG's page is HTML)."""
    note_refusal(request, "no such API route")
    return JsonResponse(json_body(404, "No such API route. See /api/v1/openapi.json."), status=404)
