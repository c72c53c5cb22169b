"""Requests gunicorn refuses before Django sees them (oversized or malformed) get Kodori's answers: JSON in
the API's error shape on /api/ routes, Kodori's page elsewhere (kodori/gunicorn_conf.py).

A real gunicorn, started with ``--config python:kodori.gunicorn_conf`` on a free loopback port, is sent raw
bytes over a socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kodori import gunicorn_conf
from kodori.devtools.servers import free_port
from tests.conftest import stop_process, wait_for_listener

HOST = "Host: localhost\r\n"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, dict[str, str]]:
        assert self.headers["content-type"] == "application/json", self.headers
        body: dict[str, dict[str, str]] = json.loads(self.body)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
        return body

    def page(self) -> str:
        assert self.headers["content-type"].startswith("text/html"), self.headers
        text = self.body.decode()
        assert "Kodori" in text and "<h1><p>" not in text  # Kodori's page, not gunicorn's
        return text


@dataclass
class Server:
    port: int
    log: Path

    def send(self, raw: bytes) -> Answer:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers and not raw.startswith(b"HEAD "):
            assert len(body) == int(headers["content-length"])
        return Answer(int(status_line.split(" ")[1]), headers, body)


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    gunicorn_bin = Path(sys.executable).parent / "gunicorn"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(gunicorn_bin), "kodori.wsgi", "--config", "python:kodori.gunicorn_conf",
                "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2", "--no-control-socket",
            ],
            env={**os.environ, "DJANGO_ENV": "test"},
            cwd=Path(__file__).resolve().parents[2],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_listener(proc, port, log, within=60)
        server = Server(port, log)
        # The worker is up once it answers.
        assert server.send(b"GET /api/v1/ready HTTP/1.1\r\n" + HOST.encode() + b"\r\n").status == 404
        yield server
    finally:
        stop_process(proc)


def _request(line: str, *headers: str, body: str = "") -> bytes:
    return (line + "\r\n" + HOST + "".join(h + "\r\n" for h in headers) + "\r\n" + body).encode("latin-1")


BIG_HEADER = "X-Padding: " + "a" * (gunicorn_conf.limit_request_field_size + 10)
MANY_HEADERS = [f"X-Header-{i}: {i}" for i in range(gunicorn_conf.limit_request_fields + 1)]
LONG_QUERY = "?q=" + "a" * gunicorn_conf.limit_request_line


API = "GET /api/v1/blobs HTTP/1.1"
API_CASES = {
    "big-header": (_request(API, BIG_HEADER), 431, "headers_too_large"),
    "many-headers": (_request(API, *MANY_HEADERS), 431, "headers_too_large"),
    "long-line": (_request(f"GET /api/v1/blobs{LONG_QUERY} HTTP/1.1"), 414, "uri_too_long"),
    "version": (_request("GET /api/v1/blobs HTTP/9.9"), 400, "bad_request"),
    "method": (_request("G(T /api/v1/blobs HTTP/1.1"), 400, "bad_request"),
    "header-name": (_request(API, "Bad Header: x"), 400, "bad_request"),
    "nul-in-header": (_request(API, "X-Nul: a\x00b"), 400, "bad_request"),
    "content-length": (_request("POST /api/v1/blobs HTTP/1.1", "Content-Length: ten"), 400, "bad_request"),
    "coding": (_request("POST /api/v1/blobs HTTP/1.1", "Transfer-Encoding: br"), 501, "not_implemented"),
    "absolute-form": (
        _request("GET http://localhost/api/v1/blobs HTTP/1.1", BIG_HEADER),
        431,
        "headers_too_large",
    ),
}


@pytest.mark.parametrize(("raw", "status", "code"), API_CASES.values(), ids=API_CASES.keys())
def test_api_routes_answer_json(gunicorn: Server, raw: bytes, status: int, code: str) -> None:
    answer = gunicorn.send(raw)
    assert answer.status == status
    assert answer.json()["error"]["code"] == code
    assert answer.headers["connection"] == "close"
    assert answer.headers["cache-control"] == "no-store"


PAGE_CASES = {
    "big-header": (_request("GET /blobs HTTP/1.1", BIG_HEADER), 431, "Headers too large"),
    "many-headers": (_request("GET /encryption HTTP/1.1", *MANY_HEADERS), 431, "Headers too large"),
    "long-line": (_request(f"GET /blobs{LONG_QUERY} HTTP/1.1"), 414, "Address too long"),
    "version": (_request("GET /blobs HTTP/9.9"), 400, "Bad request"),
    "method": (_request("G(T /audit HTTP/1.1"), 400, "Bad request"),
    "header-name": (_request("GET /audit HTTP/1.1", "Bad Header: x"), 400, "Bad request"),
    "not-the-api": (_request("GET /apixyz HTTP/1.1", "Bad Header: x"), 400, "Bad request"),
    "not-http": (b"\x16\x03\x01\x02\x00\xfc\x03\x03\r\n\r\n", 400, "Bad request"),
}


@pytest.mark.parametrize(("raw", "status", "title"), PAGE_CASES.values(), ids=PAGE_CASES.keys())
def test_pages_answer_kodoris_page(gunicorn: Server, raw: bytes, status: int, title: str) -> None:
    answer = gunicorn.send(raw)
    assert answer.status == status
    page = answer.page()
    assert f"<h1>{title}</h1>" in page
    assert (status == 400) == ("Kodori could not understand this request" in page)


def test_client_errors_are_logged_without_traceback(gunicorn: Server) -> None:
    gunicorn.send(_request("GET /api/v1/blobs HTTP/1.1", BIG_HEADER))
    time.sleep(0.2)
    log = gunicorn.log.read_text()
    assert "Invalid request from ip=127.0.0.1" in log
    assert "Traceback" not in log


def test_what_django_answers_still_passes_through(gunicorn: Server) -> None:
    answer = gunicorn.send(_request("GET /api/v1/nothing HTTP/1.1", "Connection: close"))
    assert answer.status == 404 and answer.json()["error"]["code"] == "not_found"
    assert answer.headers["x-request-id"]
    got = gunicorn.send(_request("GET /api/v1/openapi.json HTTP/1.1", "Connection: close"))
    headed = gunicorn.send(_request("HEAD /api/v1/openapi.json HTTP/1.1", "Connection: close"))
    assert got.status == headed.status == 200
    assert headed.body == b""
    assert int(got.headers["content-length"]) == len(got.body) > 0
    assert headed.headers["content-length"] == got.headers["content-length"]
