"""gunicorn's configuration for Kodori: ``gunicorn kodori.wsgi --config python:kodori.gunicorn_conf ...``.

gunicorn refuses some requests itself, before Django sees them: a request line longer than
``limit_request_line`` (414), more header fields than ``limit_request_fields`` or one longer than
``limit_request_field_size`` (431), a malformed request line, method, version or header (400), an
unsupported transfer coding (501). Its own answer is a bare HTML page. gunicorn has no setting for that page;
what it offers is the worker class (``worker_class``), whose ``handle_error`` classifies the error, logs it
(one warning line for a client's error, a traceback for its own) and writes the answer. :class:`KodoriWorker`
keeps all of that and replaces only the answer's body: JSON in the API's error shape on ``/api/`` routes,
Kodori's page (``templates/400.html`` for 4xx, ``500.html`` for 5xx) everywhere else, exactly as Django's
own refusals answer (kodori/errors.py).

Settings given on the command line (``--workers``, ``--threads``, ``--timeout``, ``--bind``) override this
module's; the worker class is a thread worker, so ``--threads`` applies as with gunicorn's ``gthread``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

from gunicorn import util
from gunicorn.http.message import Request
from gunicorn.workers.gthread import ThreadWorker

# --- Settings (gunicorn reads the module's names that match its settings) --------------------------------

worker_class = "kodori.gunicorn_conf.KodoriWorker"
# Capacity. A download or upload keeps its thread busy on the CPU (AES-GCM, which pyca runs holding the GIL,
# and the copies around it), so one process moves at most about one core's worth of bytes whatever its thread
# count: the cores are used by processes. Two per core, so that a second transfer finds an idle process even
# while one is busy (gunicorn's gthread workers accept whoever wakes first), and four threads each for the
# requests that mostly wait (KMS calls, the database). $WEB_CONCURRENCY (gunicorn's own variable) or
# --workers / --threads on the command line override these. docs/benchmarks.md ("Blobs") has the measurements.
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * _cores)
threads = 4
# Limits, explicit rather than implied: the longest request line (method, path with query string, version),
# and the number and size of header fields. A blob's name travels in ?name= (at most 255 characters, 2.3 KB
# percent-encoded); session and CSRF cookies and a bearer token are well under a kilobyte.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# The pure-Python parser, whose errors KodoriWorker reads the request's path from (the optional C parser,
# gunicorn_h1c, would be chosen by "auto" whenever it happens to be installed).
http_parser = "python"

# --- The worker --------------------------------------------------------------------------------------------

log = logging.getLogger(__name__)
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")
# The start of a request line: a method (valid or not), then the request target.
_REQUEST_LINE = re.compile(rb"^(?:\r\n)?[^ \r\n]{1,32} +([^ \r\n]+)")
# Locals of gunicorn's parser that hold the raw request line while it is read (Request.read_line,
# Request.parse_request_line): the path of a request whose line itself is refused is read from them.
_RAW_LOCALS = ("line_bytes", "line", "data", "buf")


class _Answer:
    """Stands in for the client's socket while gunicorn writes its own error answer, which is kept here."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, _flag: bool) -> None:
        return None

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> tuple[int, str] | None:
        match = _STATUS_LINE.match(self.data)
        return (int(match.group(1)), match.group(2).decode("latin-1")) if match else None


def _frames(traceback: TracebackType | None) -> list[FrameType]:
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    return frames[::-1]  # innermost first


def _path_of(target: str) -> str:
    return urlsplit(target).path if "://" in target else target.partition("?")[0]


def request_path(req: Any, exc: BaseException) -> str | None:
    """The path of the refused request, as far as gunicorn read it (None when it never got that far).

    A request refused for its headers has a parsed request line: the request (``req``, the exception's
    ``req``, or the half-built ``Request`` on the traceback) knows its path. A request line refused itself
    (too long, malformed) is read from the bytes gunicorn's parser held when it refused it.
    """
    for candidate in (req, getattr(exc, "req", None)):
        path = getattr(candidate, "path", None)
        if isinstance(path, str) and path:
            return path
    frames = _frames(exc.__traceback__)
    for frame in frames:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Request) and isinstance(candidate.path, str) and candidate.path:
            return candidate.path
    for frame in frames:
        for name in _RAW_LOCALS:
            raw = frame.f_locals.get(name)
            if isinstance(raw, bytes | bytearray) and (match := _REQUEST_LINE.match(bytes(raw))):
                return _path_of(match.group(1).decode("latin-1"))
    return None


def kodori_answer(status: int, reason: str, path: str | None) -> bytes:
    """The whole HTTP answer for a request gunicorn refused: JSON for the API, Kodori's page otherwise."""
    from kodori import errors  # Django is set up by then: the worker loaded the application first

    if path is not None and errors.is_api(path):
        body, content_type = errors.json_bytes(status), "application/json"
    else:
        body, content_type = errors.render_page(status).encode(), "text/html; charset=utf-8"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


# How long a worker that is serving a request waits before it accepts a new connection (KodoriWorker.accept);
# $KODORI_ACCEPT_GRACE_MS overrides it.
ACCEPT_GRACE_SECONDS = float(os.environ.get("KODORI_ACCEPT_GRACE_MS") or 2) / 1000


class KodoriWorker(ThreadWorker):
    """gunicorn's thread worker, answering the requests gunicorn refuses in Kodori's forms, and leaving new
    connections to idle sibling processes while it is serving."""

    def accept(self, listener: Any) -> None:
        """Accept a connection; while serving a request, only after idle siblings had a head start.

        Every worker polls the shared listening socket and the first to call ``accept`` gets the connection.
        A process busy with a download (whose thread holds the GIL through AES-GCM) won that race often
        enough that a second download shared its core while another process sat idle. Waiting
        ``ACCEPT_GRACE_SECONDS`` first lets an idle sibling take it; if one did, ``accept`` finds nothing
        (EAGAIN, which gunicorn ignores). Kept-alive and not-yet-readable connections are idle, not serving.
        """
        serving = self.nr_conns - len(self.keepalived_conns) - len(self.pending_conns)
        if serving > 0:
            time.sleep(ACCEPT_GRACE_SECONDS)
        super().accept(listener)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        answer = _Answer()
        # gunicorn classifies, logs and access-logs the error as always; its answer is caught, not sent.
        super().handle_error(req, answer, addr, exc)
        status = answer.status()
        if status is None:
            return
        try:
            data = kodori_answer(*status, request_path(req, exc))
        except Exception:  # never leave the client without an answer: gunicorn's own, then
            log.exception("Could not render Kodori's answer for a refused request")
            data = answer.data
        try:
            util.write_nonblock(client, data)
        except Exception:
            self.log.debug("Failed to send error message.")


# No gunicornc control socket: Kodori does not use it, and its default path (~/.gunicorn/gunicorn.ctl) is
# shared by every gunicorn of the user, so two servers on one machine would fight over it.
control_socket_disable = True
