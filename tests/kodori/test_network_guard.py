"""The suite cannot reach beyond loopback: connections and lookups elsewhere fail at once."""

from __future__ import annotations

import socket

import pytest

from kodori.testing.network import NetworkAccessRefused


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.1", "8.8.8.8", "2001:4860:4860::8888"])
def test_it_refuses_connections_beyond_loopback(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s, pytest.raises(NetworkAccessRefused):
        s.connect((host, 443))


@pytest.mark.parametrize(
    "name", ["kms.us-east-1.amazonaws.com", "metadata.google.internal", "vault.azure.net"]
)
def test_it_refuses_name_lookups_beyond_loopback(name: str) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(name, 443)


def test_loopback_still_works() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
    assert socket.getaddrinfo("localhost", 80)
