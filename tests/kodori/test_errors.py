"""Errors answer in one form per kind of route: JSON in the API's error shape under /api/, Kodori's own pages
elsewhere; refusals are logged as one line each, server errors with their traceback (kodori/errors.py,
kodori/middleware.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from tests.blobs.support import bearer, make_blob, make_token
from tests.kodori.conftest import LogLines

pytestmark = pytest.mark.django_db

ERROR_URLS = "tests.kodori.error_urls"


def assert_api_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


def assert_kodori_page(response: Any, status: int, *phrases: str) -> str:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "Kodori" in text
    for phrase in phrases:
        assert phrase in text
    assert "Traceback" not in text
    return text


# --- Unknown routes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
@pytest.mark.parametrize("method", ["get", "post", "put", "delete", "head"])
@pytest.mark.parametrize(
    "url", ["/api", "/api/", "/api/v2/blobs", "/api/v1/blobs/", "/api/v1/nothing/here", "/api/v1/blobs/x/y"]
)
def test_unknown_api_routes_answer_json_404_in_every_environment(url: str, method: str, debug: bool) -> None:
    with override_settings(DEBUG=debug):
        response = getattr(Client(), method)(url)
    if method == "head":
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert response.content == b""
    else:
        assert_api_error(response, 404, "not_found")


def test_an_unknown_page_is_kodoris_404_page() -> None:
    response = Client().get("/no/such/page")
    assert_kodori_page(response, 404, "Not found")


def test_another_tenants_object_is_kodoris_404_page(as_user: Any, owner: Any, outsider: Any) -> None:
    blob = make_blob(owner)
    response = as_user(outsider).get(f"/blobs/{blob.pk}")
    assert_kodori_page(response, 404, "Not found")


def test_a_role_that_may_not_is_kodoris_403_page(as_user: Any, viewer: Any) -> None:
    response = as_user(viewer).get("/encryption")
    assert_kodori_page(response, 403, "You can't do that here")


# --- Server errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_server_error_on_the_api_is_json_500_without_traceback(debug: bool, log_lines: LogLines) -> None:
    with override_settings(ROOT_URLCONF=ERROR_URLS, DEBUG=debug):
        response = Client(raise_request_exception=False).get("/api/v1/boom")
    body = assert_api_error(response, 500, "server_error")
    request_id = response["X-Request-ID"]
    assert request_id in body["error"]["message"] or debug
    assert b"secret-internal-detail" not in response.content and b"Traceback" not in response.content
    # The log has the traceback, under the request's id.
    text = log_lines.text()
    assert "Traceback" in text and "secret-internal-detail" in text
    (line,) = log_lines.about("ERROR", "/api/v1/boom")
    assert f"[{request_id}]" in line


def test_a_server_error_on_a_page_is_kodoris_500_page(log_lines: LogLines) -> None:
    with override_settings(ROOT_URLCONF=ERROR_URLS):
        response = Client(raise_request_exception=False).get("/boom")
    request_id = response["X-Request-ID"]
    text = assert_kodori_page(response, 500, "Something went wrong on our side", request_id)
    assert "secret-internal-detail" not in text
    assert "Traceback" in log_lines.text()
    (line,) = log_lines.about("ERROR", "/boom")
    assert f"[{request_id}]" in line


def test_a_500_answered_without_an_exception_is_logged_with_the_request_id(log_lines: LogLines) -> None:
    with override_settings(ROOT_URLCONF=ERROR_URLS):
        response = Client().get("/answers-500")
    (line,) = log_lines.about("ERROR", "/answers-500")
    assert f"[{response['X-Request-ID']}]" in line


# --- Django's own refusals: body limits, CSRF, methods ----------------------------------------------------


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
def test_a_form_too_large_is_kodoris_413_page_and_changes_nothing(
    as_user: Any, owner: Any, log_lines: LogLines
) -> None:
    response = as_user(owner).post("/tenants/switch", {"tenant": "acme", "padding": "x" * 500})
    assert_kodori_page(response, 413, "larger than Kodori accepts")
    (line,) = log_lines.about("/tenants/switch")
    assert " 413 " in line and "RequestDataTooBig" in line
    assert "Traceback" not in log_lines.text()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100, ROOT_URLCONF=ERROR_URLS)
def test_a_form_too_large_on_the_api_is_json_413() -> None:
    response = Client().post("/api/v1/form", {"padding": "x" * 500})
    assert_api_error(response, 413, "too_large")


@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=5)
def test_a_form_with_too_many_fields_is_kodoris_400_page(
    as_user: Any, owner: Any, log_lines: LogLines
) -> None:
    response = as_user(owner).post("/tenants/switch", {f"f{i}": "x" for i in range(20)})
    assert_kodori_page(response, 400, "more fields than Kodori accepts")
    (line,) = log_lines.about("/tenants/switch")
    assert " 400 " in line and "TooManyFieldsSent" in line
    assert "Traceback" not in log_lines.text()


@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=5, ROOT_URLCONF=ERROR_URLS)
def test_a_form_with_too_many_fields_on_the_api_is_json_400() -> None:
    response = Client().post("/api/v1/form", {f"f{i}": "x" for i in range(20)})
    assert_api_error(response, 400, "bad_request")


def test_a_csrf_refusal_is_kodoris_403_page(as_user: Any, owner: Any, log_lines: LogLines) -> None:
    response = as_user(owner, csrf=True).post("/tenants/switch", {"tenant": "acme"})
    assert_kodori_page(response, 403, "CSRF")
    (line,) = log_lines.about("/tenants/switch")
    assert " 403 " in line and "CSRF" in line


@override_settings(ROOT_URLCONF=ERROR_URLS)
def test_a_bare_405_on_the_api_becomes_json_and_keeps_its_allow_header() -> None:
    response = Client().post("/api/v1/get-only")
    assert_api_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET"


def test_api_errors_keep_their_own_codes_and_headers() -> None:
    response = Client().get("/api/v1/blobs")
    assert_api_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


# --- One line per refusal ---------------------------------------------------------------------------------


def _one_refusal_line(log_lines: LogLines, method: str, path: str, status: int, request_id: str) -> str:
    lines = log_lines.about(path)
    assert len(lines) == 1, lines
    (line,) = lines
    assert f"{method} {path} {status} request_id={request_id}" in line
    assert "Traceback" not in log_lines.text()
    return line


def test_a_403_is_one_log_line(as_user: Any, viewer: Any, log_lines: LogLines) -> None:
    response = as_user(viewer).get("/encryption")
    assert response.status_code == 403
    _one_refusal_line(log_lines, "GET", "/encryption", 403, response["X-Request-ID"])


def test_a_404_is_one_log_line(as_user: Any, owner: Any, log_lines: LogLines) -> None:
    response = as_user(owner).get("/encryption/keys/999999")
    assert response.status_code == 404
    _one_refusal_line(log_lines, "GET", "/encryption/keys/999999", 404, response["X-Request-ID"])


def test_an_api_404_is_one_log_line(log_lines: LogLines) -> None:
    response = Client().get("/api/v1/nothing")
    _one_refusal_line(log_lines, "GET", "/api/v1/nothing", 404, response["X-Request-ID"])


def test_an_api_413_is_one_log_line(member: Any, log_lines: LogLines, blob_root: Any, settings: Any) -> None:
    settings.BLOB_MAX_SIZE = 10
    response = Client().post(
        "/api/v1/blobs?name=big.bin",
        b"x" * 100,
        content_type="application/octet-stream",
        **bearer(make_token(member)),
    )
    assert response.status_code == 413
    _one_refusal_line(log_lines, "POST", "/api/v1/blobs", 413, response["X-Request-ID"])


def test_a_503_is_one_log_line(member: Any, tenant: Any, log_lines: LogLines, blob_root: Any) -> None:
    blob = make_blob(member)
    token = make_token(member)
    tenant.sealed_at = timezone.now()
    tenant.seal_reason = "Your AWS KMS key denied Decrypt to Kodori's role."
    tenant.save()
    response = Client().get(f"/api/v1/blobs/{blob.pk}", **bearer(token))
    assert response.status_code == 503
    _one_refusal_line(log_lines, "GET", f"/api/v1/blobs/{blob.pk}", 503, response["X-Request-ID"])


def test_a_refusal_line_escapes_control_characters_of_the_path(log_lines: LogLines) -> None:
    Client().get("/no/such/page%0Aforged line")
    (line,) = log_lines.about("/no/such/page")
    assert "\\nforged line" in line
    assert not [other for other in log_lines.text().splitlines() if other.startswith("forged line")]
