"""Streamed downloads go out a reader piece at a time (``RANGE_PIECE_CHUNKS`` chunks, each read and opened
``RANGE_READ_CHUNKS`` at a time): exact bytes for whole files and ranges that cross pieces, and at a damaged
chunk on either side of a piece or step boundary the body ends after exactly the authentic bytes before it,
none of the forged chunk's and none of the rest of its piece."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from blobs.downloads import DownloadAborted
from blobs.models import Blob, Damage
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE
from encryption.format.cobblestone_read import RANGE_PIECE_CHUNKS, RANGE_READ_CHUNKS
from tests.blobs.support import FileStore, bearer, make_blob, make_token, pattern

pytestmark = pytest.mark.django_db

B = RANGE_PIECE_CHUNKS
R = RANGE_READ_CHUNKS
SIZE = (3 * B + 2) * CHUNK_SIZE + 100


@pytest.fixture
def data(settings: Any) -> bytes:
    """Answers over 64 KiB stream (the default threshold is 8 MiB)."""
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * 1024
    return pattern(SIZE)


def get(member: Any, blob: Blob, **headers: Any) -> Any:
    return Client().get(reverse("blobs:api_blob", args=[blob.pk]), **bearer(make_token(member)), **headers)


@pytest.mark.parametrize(
    ("start", "stop"),
    [(0, SIZE), (B * CHUNK_SIZE - 3, 2 * B * CHUNK_SIZE + 3), (5, SIZE - 1), (2 * B * CHUNK_SIZE, SIZE)],
)
def test_a_streamed_answer_is_exact_and_sent_a_piece_at_a_time(
    member: Any, data: bytes, start: int, stop: int
) -> None:
    blob = make_blob(member, data, name="big.bin")
    headers = {} if (start, stop) == (0, SIZE) else {"HTTP_RANGE": f"bytes={start}-{stop - 1}"}
    response = get(member, blob, **headers)
    assert response.status_code == (200 if not headers else 206) and response.streaming
    pieces = list(response.streaming_content)
    assert b"".join(pieces) == data[start:stop] and response["Content-Length"] == str(stop - start)
    assert all(0 < len(piece) <= B * CHUNK_SIZE for piece in pieces)


@pytest.mark.parametrize("bad", [2 * B - 1, 2 * B, 2 * B + R - 1, 2 * B + R])
@pytest.mark.parametrize("start", [0, B * CHUNK_SIZE + 7])
def test_a_damaged_chunk_at_a_piece_or_step_boundary_ends_the_body_after_only_authentic_bytes(
    member: Any, data: bytes, blob_root: Path, bad: int, start: int
) -> None:
    blob = make_blob(member, data, name="big.bin")
    store = FileStore(blob_root)
    stored = store.read(blob)
    at = envelope.HEADER_SIZE + bad * SEALED_CHUNK_SIZE + CHUNK_SIZE  # a byte of the chunk's tag
    store.write(blob, stored[:at] + bytes([stored[at] ^ 0x80]) + stored[at + 1 :])
    response = get(member, blob, **({"HTTP_RANGE": f"bytes={start}-"} if start else {}))
    assert response.status_code == (206 if start else 200)
    received = bytearray()
    with pytest.raises(DownloadAborted):
        for piece in response.streaming_content:
            received += piece
    assert bytes(received) == data[start : bad * CHUNK_SIZE]
    blob.refresh_from_db()
    assert (blob.damage, blob.damaged_chunk) == (Damage.CHUNK, bad)
