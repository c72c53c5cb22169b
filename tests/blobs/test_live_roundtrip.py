"""Round trips through a live server over real HTTP with an API token, 0 B to 100 MiB, hashed both ends."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from blobs.models import Blob, BlobStatus
from encryption.format import envelope
from tests.blobs.support import LiveApi, make_token, random_stream, stored_files

pytestmark = pytest.mark.django_db(transaction=True)

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def live_api(live_server: Any, member: Any) -> LiveApi:
    return LiveApi(live_server.url, make_token(member))


def _roundtrip(api: LiveApi, size: int) -> tuple[str, str, str]:
    sent = hashlib.sha256()

    def body() -> Any:
        for piece in random_stream(size):
            sent.update(piece)
            yield piece

    status, created = api.upload(f"file-{size}.bin", body(), size)
    assert status == 201, created
    assert created["size"] == size
    code, headers, chunks = api.download(created["id"])
    assert code == 200
    assert headers["content-length"] == str(size)
    received = hashlib.sha256()
    for piece in chunks:
        received.update(piece)
    return created["id"], sent.hexdigest(), received.hexdigest()


@pytest.mark.parametrize("size", [0, 1, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, MIB])
def test_it_round_trips_small_and_boundary_sizes(live_api: LiveApi, blob_root: Any, size: int) -> None:
    blob_id, sent, received = _roundtrip(live_api, size)
    assert sent == received
    blob = Blob.objects.get(pk=blob_id)
    assert blob.status == BlobStatus.READY
    # What storage holds is the ciphertext, of exactly the format's size.
    (stored,) = stored_files(blob_root)
    assert stored.stat().st_size == envelope.ciphertext_size(size)
    assert stored.read_bytes()[:4] == envelope.MAGIC


@pytest.mark.slow
def test_it_round_trips_100_mib(live_api: LiveApi) -> None:
    started = time.monotonic()
    _blob_id, sent, received = _roundtrip(live_api, 100 * MIB)
    assert sent == received
    assert time.monotonic() - started < 60


def test_a_range_over_http_returns_exactly_those_bytes(live_api: LiveApi) -> None:
    data = b"".join(random_stream(100_000))
    status, created = live_api.upload("r.bin", data, len(data))
    assert status == 201
    code, headers, chunks = live_api.download(created["id"], {"Range": "bytes=16383-16385"})
    assert (code, headers["content-range"]) == (206, f"bytes 16383-16385/{len(data)}")
    assert b"".join(chunks) == data[16383:16386]
    code, headers, chunks = live_api.download(created["id"], {"Range": f"bytes={len(data)}-"})
    assert (code, headers["content-range"]) == (416, f"bytes */{len(data)}")
    b"".join(chunks)
