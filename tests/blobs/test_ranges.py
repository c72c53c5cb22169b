"""Range downloads: RFC 9110 single ranges, 416s, chunk boundaries, zero-length blobs, validators."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from blobs.downloads import ByteRange, Unsatisfiable, parse_range
from encryption.format.cobblestone import CHUNK_SIZE
from tests.blobs.support import bearer, make_blob, make_token, pattern

SIZE = 3 * CHUNK_SIZE + 100


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, ByteRange(0, 1)),
        ("bytes=9-9", 10, ByteRange(9, 10)),
        ("bytes=0-", 10, ByteRange(0, 10)),
        ("bytes=4-", 10, ByteRange(4, 10)),
        ("bytes=-1", 10, ByteRange(9, 10)),
        ("bytes=-3", 10, ByteRange(7, 10)),
        ("bytes=-100", 10, ByteRange(0, 10)),
        ("bytes=2-1000", 10, ByteRange(2, 10)),
        ("bytes = 1-2", 10, ByteRange(1, 3)),
        # Ignored: several ranges, other units, malformed, last < first.
        ("bytes=0-1,4-5", 10, None),
        ("items=0-1", 10, None),
        ("bytes=a-b", 10, None),
        ("bytes=-", 10, None),
        ("bytes=5-2", 10, None),
        # A suffix of an empty blob is the whole (empty) blob.
        ("bytes=-5", 0, None),
    ],
)
def test_it_parses_single_ranges(header: str, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=0-0", 0)],
)
def test_it_refuses_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@pytest.fixture
def data() -> bytes:
    return pattern(SIZE)


@pytest.fixture
def api(member: Any) -> tuple[Client, dict[str, Any]]:
    return Client(), bearer(make_token(member))


def _get(api: tuple[Client, dict[str, Any]], blob_id: Any, **headers: Any) -> Any:
    client, auth = api
    return client.get(reverse("blobs:api_blob", args=[blob_id]), **auth, **headers)


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),  # first byte
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE),  # last byte
        ("bytes=-1", SIZE - 1, SIZE),  # suffix: last byte
        ("bytes=-20000", SIZE - 20000, SIZE),  # suffix across a chunk boundary
        ("bytes=5000-", 5000, SIZE),  # open-ended
        (f"bytes={CHUNK_SIZE - 1}-{CHUNK_SIZE}", CHUNK_SIZE - 1, CHUNK_SIZE + 1),  # straddles chunks 0|1
        (f"bytes={CHUNK_SIZE}-{2 * CHUNK_SIZE - 1}", CHUNK_SIZE, 2 * CHUNK_SIZE),  # exactly chunk 1
        (f"bytes={CHUNK_SIZE}-", CHUNK_SIZE, SIZE),  # from a chunk boundary to the end
        (f"bytes=0-{CHUNK_SIZE - 1}", 0, CHUNK_SIZE),  # exactly chunk 0
        (f"bytes={3 * CHUNK_SIZE}-", 3 * CHUNK_SIZE, SIZE),  # only the short final chunk
        ("bytes=100-999999999", 100, SIZE),  # end clipped
    ],
)
def test_it_serves_the_bytes_of_a_range(
    api: Any, member: Any, data: bytes, header: str, start: int, stop: int
) -> None:
    blob = make_blob(member, data, name="data.bin")
    response = _get(api, blob.pk, HTTP_RANGE=header)
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert response["Content-Length"] == str(stop - start)
    assert _body(response) == data[start:stop]


@pytest.mark.django_db
@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_it_answers_416_beyond_the_end(api: Any, member: Any, data: bytes, header: str) -> None:
    blob = make_blob(member, data)
    response = _get(api, blob.pk, HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{SIZE}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.django_db
def test_it_serves_everything_for_several_ranges(api: Any, member: Any, data: bytes) -> None:
    blob = make_blob(member, data)
    response = _get(api, blob.pk, HTTP_RANGE="bytes=0-1,5-6")
    assert response.status_code == 200
    assert _body(response) == data


@pytest.mark.django_db
def test_it_handles_a_zero_length_blob(api: Any, member: Any) -> None:
    blob = make_blob(member, b"", name="empty")
    whole = _get(api, blob.pk)
    assert (whole.status_code, whole["Content-Length"], _body(whole)) == (200, "0", b"")
    first = _get(api, blob.pk, HTTP_RANGE="bytes=0-")
    assert (first.status_code, first["Content-Range"]) == (416, "bytes */0")
    suffix = _get(api, blob.pk, HTTP_RANGE="bytes=-10")
    assert (suffix.status_code, _body(suffix)) == (200, b"")


@pytest.mark.django_db
def test_it_keeps_the_range_only_if_if_range_matches(api: Any, member: Any, data: bytes) -> None:
    blob = make_blob(member, data)
    kept = _get(api, blob.pk, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=blob.etag)
    assert (kept.status_code, _body(kept)) == (206, data[:10])
    stale = _get(api, blob.pk, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"something-else"')
    assert (stale.status_code, _body(stale)) == (200, data)
    by_date = _get(api, blob.pk, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=kept["Last-Modified"])
    assert by_date.status_code == 206


@pytest.mark.django_db
def test_it_answers_304_to_a_matching_etag(api: Any, member: Any) -> None:
    blob = make_blob(member)
    first = _get(api, blob.pk)
    assert first["ETag"] == f'"{blob.pk.hex}"'
    again = _get(api, blob.pk, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert _body(again) == b""
    since = _get(api, blob.pk, HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
    assert since.status_code == 304


@pytest.mark.django_db
def test_head_gives_the_headers_of_get_without_a_body(api: Any, member: Any, data: bytes) -> None:
    blob = make_blob(member, data)
    client, auth = api
    url = reverse("blobs:api_blob", args=[blob.pk])
    head = client.head(url, **auth)
    assert head.status_code == 200
    assert head["Content-Length"] == str(SIZE)
    assert head["ETag"] == blob.etag
    assert head.content == b""
    ranged = client.head(url, HTTP_RANGE="bytes=-10", **auth)
    assert (ranged.status_code, ranged["Content-Range"]) == (206, f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}")


@pytest.mark.django_db
def test_a_range_decrypts_only_the_chunks_it_covers(
    api: Any, member: Any, data: bytes, monkeypatch: Any
) -> None:
    from encryption.format.cobblestone import ChunkCipher

    blob = make_blob(member, data)
    opened: list[int] = []
    original = ChunkCipher.open_full

    def counting(self: ChunkCipher, first: int, src: Any, count: int, dst: Any) -> int:
        opened.extend(range(first, first + count))
        return original(self, first, src, count, dst)

    monkeypatch.setattr(ChunkCipher, "open_full", counting)
    response = _get(api, blob.pk, HTTP_RANGE=f"bytes={CHUNK_SIZE + 5}-{CHUNK_SIZE + 10}")
    assert _body(response) == data[CHUNK_SIZE + 5 : CHUNK_SIZE + 11]
    assert opened == [1]
