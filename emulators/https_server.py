"""A small threaded HTTPS/1.1 JSON server that the local emulators build on.

Why the stdlib and not a framework: the emulators must start in milliseconds inside a test process, with no
dependency beyond pyca/cryptography. Two details matter for speed and for the real SDK clients:

- keep-alive (HTTP/1.1) with ``disable_nagle_algorithm``; without it every call on a kept-alive connection
  waits ~40 ms for the peer's delayed ACK;
- the TLS handshake runs in the connection's own thread (``do_handshake_on_connect=False``), so one slow or
  broken client cannot stall the accept loop.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_log = logging.getLogger(__name__)


class HttpsServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 that speaks TLS with the given context."""

    daemon_threads = True
    # stop() must not wait for idle keep-alive connections held open by SDK connection pools.
    block_on_close = False

    def __init__(
        self,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext,
        host: str = "127.0.0.1",
    ) -> None:
        self.ssl_context = context
        super().__init__((host, port), handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, address = self.socket.accept()
        wrapped = self.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping a connection mid-handshake are normal here (probes, pools closing): log quietly.
        _log.debug("connection from %s failed", client_address, exc_info=True)


class BackgroundServer:
    """Runs an :class:`HttpsServer` in a daemon thread; ``start()`` returns once it accepts connections."""

    def __init__(self, server: HttpsServer, name: str) -> None:
        self.server = server
        # A short poll interval makes stop() take ~50 ms instead of up to 0.5 s: tests start and stop often.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """Request handler base: HTTP/1.1 keep-alive, JSON in and out, no access log on stderr."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle keep-alive connections end after this, so their threads do not outlive a test for long.
    timeout = 30
    server_version = "KodoriEmulator/1"
    sys_version = ""

    # Filled by parse_target() so handlers read attributes instead of re-parsing the URL.
    path_only: str = ""
    query: dict[str, list[str]]

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    def parse_target(self) -> None:
        parts = urlsplit(self.path)
        self.path_only = parts.path
        self.query = parse_qs(parts.query)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def read_json(self) -> dict[str, Any]:
        """The request body as a JSON object; an empty body is ``{}``. Raises ValueError on anything else."""
        body = self.read_body()
        if not body.strip():
            return {}
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        return data

    def read_form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body; repeated fields keep their first value."""
        fields = parse_qs(self.read_body().decode("utf-8"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}

    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
