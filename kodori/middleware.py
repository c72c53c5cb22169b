"""Kodori's request rules: each is one middleware and holds for every route (settings MIDDLEWARE orders them).

- ``RequestIdMiddleware``: one id per request, echoed in ``X-Request-ID`` and carried into every log line.
- ``RefusalLogMiddleware``: every refusal (4xx, 503) is logged as one line, never a traceback; 500s keep
  Django's traceback (``ExpectedRefusalFilter`` drops Django's own lines for the refusals).
- ``HeadMiddleware`` and ``HeadAsGetMiddleware``: a HEAD answers the status and headers the GET would, without
  a body.
- ``ApiErrorMiddleware``: an error on an ``/api/`` route is JSON in the API's error shape, whoever made it.
- ``NoStoreMiddleware``: pages for a signed-in user (keys, tokens, tenant data) are never stored by a cache.
- ``ControlCharacterMiddleware``: NUL and other control characters in a query string or a form are refused
  with 400 before any view sees them.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.utils.cache import patch_cache_control

# The context variables live in an app, so that audit reads them without importing the project package.
from tenants.request_context import client_ip_var, request_id_var

from . import errors

GetResponse = Callable[[HttpRequest], HttpResponseBase]

# Accept an upstream proxy's id only when it looks like one, so logs cannot be injected through it.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
refusals = logging.getLogger("kodori.refusals")


class RequestIdMiddleware:
    """Sets ``request.request_id`` from a sane ``X-Request-ID`` header or a fresh UUID."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        ip_token = client_ip_var.set(request.META.get("REMOTE_ADDR", ""))
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
            client_ip_var.reset(ip_token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    """Adds ``record.request_id`` so every log line names the request it belongs to (also the lines Django
    writes about a request after the middleware has finished with it, from the request they carry)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id == "-":
            request_id = str(getattr(getattr(record, "request", None), "request_id", "-"))
        record.request_id = request_id
        return True


# --- Refusals: one line each --------------------------------------------------------------------------------


def is_refusal(status: int) -> bool:
    """An expected refusal (the client's request, a missing right, a sealed tenant): 4xx and 503."""
    return 400 <= status < 500 or status == 503


class RefusalLogMiddleware:
    """One line per refusal: method, path, status, request id, and the reason when Kodori knows it."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if is_refusal(response.status_code):
            reason = errors.refusal_of(request)
            refusals.warning(
                "%s %s %d request_id=%s%s",
                errors.printable(request.method or "", 16),
                errors.printable(request.path),
                response.status_code,
                getattr(request, "request_id", "-"),
                f": {reason}" if reason else "",
            )
        return response


class ExpectedRefusalFilter(logging.Filter):
    """For the log handlers: drops the lines Django writes for refusals (``Not Found: /x`` with the Http404's
    traceback, ``Forbidden (Permission denied)``, a SuspiciousOperation's traceback on ``django.security.*``),
    because :class:`RefusalLogMiddleware` writes one line for each, reason included. Server errors (500 and
    the other 5xx but 503) pass untouched, traceback and all."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if not isinstance(status, int) or not is_refusal(status):
            return True
        return not (record.name == "django.request" or record.name.startswith("django.security."))


# --- HEAD ---------------------------------------------------------------------------------------------------


def _methods(response: HttpResponseBase) -> set[str]:
    return {method.strip().upper() for method in response.get("Allow", "").split(",") if method.strip()}


class _ViewMiddleware:
    """A middleware that acts in ``process_view`` only (after URL resolution, before the view): the request
    itself passes through."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)


class HeadMiddleware:
    """A HEAD answers exactly what the GET would, without the body (with ``HeadAsGetMiddleware``).

    The body is dropped here, outside everything that sets headers, and its ``Content-Length`` kept: WSGI
    servers send whatever body the application returns, even to a HEAD.
    """

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "HEAD":
            return self.get_response(request)
        try:
            response = self.get_response(request)
        finally:
            request.method = "HEAD"  # HeadAsGetMiddleware may have asked the view as a GET
        if response.streaming:
            response.streaming_content = []  # type: ignore[attr-defined]
        elif isinstance(response, HttpResponse) and response.content:
            response["Content-Length"] = str(len(response.content))
            response.content = b""
        return response


class HeadAsGetMiddleware(_ViewMiddleware):
    """Views that answer HEAD themselves (downloads, the API) do; a view that refuses HEAD with 405 while it
    allows GET (``require_GET``, ``require_http_methods(["GET", ...])``: the refusal comes before the view
    does anything) is asked as a GET instead. Last in MIDDLEWARE, so every other check saw the HEAD first."""

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Iterable[Any], kwargs: dict[str, Any]
    ) -> HttpResponseBase | None:
        if request.method != "HEAD":
            return None
        response: HttpResponseBase = view(request, *args, **kwargs)
        allowed = _methods(response)
        if response.status_code == 405 and "GET" in allowed and "HEAD" not in allowed:
            request.method = "GET"  # HeadMiddleware turns it back and drops the body
            return None
        return response


# --- JSON errors on the API ---------------------------------------------------------------------------------

# Headers of an error response that still mean something once its body is JSON.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Content-Range", "X-Request-ID")


class ApiErrorMiddleware:
    """An error answer on an ``/api/`` route that is not JSON (Django's DEBUG pages, a bare 405 of
    ``require_http_methods``, a page rendered by mistake) becomes JSON in the API's error shape; a server
    error's traceback never reaches the client."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and errors.is_api(request.path)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            body = errors.json_bytes(response.status_code)
            replacement = HttpResponse(body, status=response.status_code, content_type="application/json")
            replacement["Content-Length"] = str(len(body))
            for name in _KEPT_HEADERS:
                if name in response:
                    replacement[name] = response[name]
            # Django marks a response it has logged (a server error's traceback) so it is not logged again.
            logged = getattr(response, "_has_been_logged", False)
            replacement._has_been_logged = logged  # type: ignore[attr-defined]
            return replacement
        return response


# --- Cache-Control: no-store --------------------------------------------------------------------------------


class NoStoreMiddleware:
    """Every page shown to a signed-in user carries ``Cache-Control: no-store``: its key identifiers, its
    ExternalId, a freshly created API token, its tenant's files and audit log are never written to a
    browser's or a proxy's cache. (Downloads and exports set their own caching headers and are not pages.)"""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if (
            response.get("Content-Type", "").startswith("text/html")
            and user is not None
            and user.is_authenticated
        ):
            patch_cache_control(response, no_store=True)
        return response


# --- Control characters -------------------------------------------------------------------------------------

# C0 controls but tab, LF and CR (which text fields may hold, and forms strip or keep as they like).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _control_character_in(fields: QueryDict) -> tuple[str, str] | None:
    """(where, character) of the first control character in ``fields``' names or values."""
    for name, values in fields.lists():
        if found := _CONTROL.search(name):
            return "a field name", found.group()
        for value in values:
            if found := _CONTROL.search(value):
                return f"the field “{errors.printable(name, 64)}”", found.group()
    return None


class ControlCharacterMiddleware(_ViewMiddleware):
    """Refuses (400) a request whose path, query string or form holds NUL or another C0 control character
    (tab, LF and CR excepted): no view, form or database query ever sees one.

    Form bodies are read only for views whose CSRF check has already parsed them (POSTs to CSRF-protected
    views, whichever encoding): a ``csrf_exempt`` view (blob uploads, the API) owns its body and streams it,
    so this middleware never makes Django read a multipart upload. It must come after ``CsrfViewMiddleware``.
    """

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Iterable[Any], kwargs: dict[str, Any]
    ) -> HttpResponseBase | None:
        found: tuple[str, str] | None = None
        if match := _CONTROL.search(request.path):
            found = ("the address", match.group())
        found = found or _control_character_in(request.GET)
        if (
            found is None
            and request.method == "POST"
            and request.content_type in _FORM_TYPES
            and not getattr(view, "csrf_exempt", False)
        ):
            found = _control_character_in(request.POST)
        if found is None:
            return None
        where, character = found
        errors.note_refusal(request, f"control character U+{ord(character):04X} in {where}")
        return errors.respond(
            request,
            400,
            f"{where[0].upper()}{where[1:]} contains a control character (U+{ord(character):04X}), which "
            "Kodori does not accept. Nothing was changed.",
        )
