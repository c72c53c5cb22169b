"""A guard for emulator tests: the SDKs under test may resolve and connect to loopback addresses only.

Cloud SDKs reach for the network on their own (metadata servers, regional endpoint lookups, discovery); a test
that passes only because such a call failed quietly would hide a real dependency. The guard refuses every DNS
lookup and TCP connection beyond 127.0.0.0/8 and ``::1`` and records it, so the fixture can fail the test.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def _is_loopback(host: Any) -> bool:
    return host in LOOPBACK_NAMES or str(host).startswith("127.")


def refuse_non_loopback(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Install the guard for the current test; returns the (live) list of refused attempts."""
    attempts: list[Any] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            attempts.append(host)
            raise socket.gaierror(f"test guard: no lookups of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            attempts.append(address)
            raise OSError(f"test guard: no connections to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts
