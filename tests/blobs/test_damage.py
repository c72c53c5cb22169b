"""Damaged blobs (issue 14 §1): no byte of a chunk is sent before it authenticates, and damage is recorded.

Every structural position of a stored blob (header, first, middle and final chunk) gets every mutation (flip a
byte, truncate inside it, add bytes after it, delete it, swap it with the same bytes of a twin blob), for full
and ranged downloads, on the filesystem and on S3 (moto's server over HTTP):

* an answer of at most ``BLOB_VERIFY_BEFORE_SEND_BYTES`` that meets damage is 500 ``blob_corrupt`` before any
  byte: JSON in the API, Kodori's error page for the page download, the same status and headers for HEAD;
* a wrong stored length (truncated, extended, a chunk deleted) is refused before a 206 too, even for a range
  at the start that never reaches the damage;
* every damage is logged, recorded once as ``blob.corrupt`` (blob id, chunk, kind) and shown on the blob's
  page and in the API list, never to another tenant.

Larger answers (the threshold made 64 KiB here) stream: damage in the header, the final chunk, the answer's
first chunk or a chunk recorded damaged before is still refused before the status line; a damaged chunk
further on ends the body short of its Content-Length with ``DownloadAborted`` after exactly the authenticated
prefix.
``test_damage_live.py`` shows what a real WSGI server and real HTTP clients make of that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.storage import storages as django_storages
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent, EventType
from blobs.downloads import DownloadAborted
from blobs.models import Blob, Damage
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE
from encryption.models import DataKey, KeyStatus, TenantKey
from tests.blobs.support import FileStore, S3Store, Store, bearer, make_blob, make_token, pattern
from tests.conftest import client_for
from tests.s3 import delete_bucket, s3_client, storage_options

pytestmark = pytest.mark.django_db

SIZE = 3 * CHUNK_SIZE + 100  # chunks 0, 1 and 2 full, a 100-byte final chunk 3
FINAL = SIZE // CHUNK_SIZE
BUCKET = "kodori-test-damage"


# --- where the bytes are: the filesystem or S3 --------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(moto_s3: str) -> tuple[Any, Any]:
    """A boto3 client and one ``S3Storage`` for the module: each costs more than most of these tests."""
    from storages.backends.s3 import S3Storage

    return s3_client(moto_s3), S3Storage(**storage_options(moto_s3, BUCKET))


@pytest.fixture(params=["filesystem", "s3"])
def store(request: Any, settings: Any, blob_root: Any) -> Iterator[Store]:
    if request.param == "filesystem":
        yield FileStore(blob_root)
        return
    client, storage = request.getfixturevalue("s3")
    request.getfixturevalue("caplog").set_level(logging.WARNING, logger="werkzeug")  # moto: a line a request
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "blobs": {"BACKEND": "storages.backends.s3.S3Storage"}}
    # The alias serves the module's instance, as a web process serves one instance for all its requests
    # (changing STORAGES empties the handler's cache, and restoring it afterwards empties it again).
    django_storages._storages["blobs"] = storage  # type: ignore[attr-defined]  # the handler's cache
    try:
        yield S3Store(client, BUCKET)
    finally:
        delete_bucket(client, BUCKET)


# --- positions, mutations, and the damage each must be found as --------------------------------------------


def region(position: str, size: int) -> tuple[int, int]:
    """Where ``position`` is in the stored object of a ``size``-byte blob: [lo, hi)."""
    if position == "header":
        return 0, envelope.HEADER_SIZE
    chunks = size // CHUNK_SIZE + 1
    index = {"first": 0, "middle": chunks // 2, "last": chunks - 1}[position]
    lo = envelope.HEADER_SIZE + index * SEALED_CHUNK_SIZE
    return lo, min(lo + SEALED_CHUNK_SIZE, envelope.ciphertext_size(size))


def chunk_at(position: str, size: int) -> int | None:
    if position == "header":
        return None
    return (region(position, size)[0] - envelope.HEADER_SIZE) // SEALED_CHUNK_SIZE


def flipped(stored: bytes, at: int) -> bytes:
    """``stored`` with the lowest bit of byte ``at`` flipped (negative: from the end)."""
    at %= len(stored)
    return stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1 :]


Mutation = Callable[[bytes, int, int, bytes], bytes]

MUTATIONS: dict[str, Mutation] = {
    # One bit of the byte in the middle of the region (for the header: a byte of the key commitment).
    "flip": lambda b, lo, hi, _t: flipped(b, (lo + hi) // 2),
    # The object ends in the middle of the region.
    "truncate": lambda b, lo, hi, _t: b[: (lo + hi) // 2],
    # 16 bytes (one GCM tag's worth) after the region; after the final chunk that is appending to the object.
    "append": lambda b, lo, hi, _t: b[:hi] + bytes(16) + b[hi:],
    # The region is cut out (a whole chunk: what is left is a valid length for a smaller blob, not this one).
    "delete": lambda b, lo, hi, _t: b[:lo] + b[hi:],
    # The region comes from a twin blob (same tenant, same size, its own key and salt).
    "swap": lambda b, lo, hi, twin: b[:lo] + twin[lo:hi] + b[hi:],
}
LENGTH_CHANGING = {"truncate", "append", "delete"}
POSITIONS = ["header", "first", "middle", "last"]


def expected_damage(position: str, mutation: str, size: int) -> tuple[Damage, int | None]:
    if mutation in LENGTH_CHANGING:
        return Damage.LENGTH, None
    if position == "header":
        return Damage.HEADER, None
    return Damage.CHUNK, chunk_at(position, size)


def range_over(position: str, size: int) -> tuple[int, int]:
    """A small range inside the plaintext of the damaged chunk (the first chunk for the header)."""
    chunk = chunk_at(position, size) or 0
    start = chunk * CHUNK_SIZE + 1
    return start, min(start + 50, size)


# --- requests -----------------------------------------------------------------------------------------------


@dataclass
class Api:
    client: Client
    auth: dict[str, Any]

    def url(self, blob: Blob) -> str:
        return reverse("blobs:api_blob", args=[blob.pk])

    def get(self, blob: Blob, **headers: Any) -> Any:
        return self.client.get(self.url(blob), **self.auth, **headers)

    def head(self, blob: Blob, **headers: Any) -> Any:
        return self.client.head(self.url(blob), **self.auth, **headers)

    def listing(self) -> dict[str, Any]:
        items = self.client.get(reverse("blobs:api_blobs"), **self.auth).json()["items"]
        return {item["id"]: item for item in items}


@pytest.fixture
def api(member: Any) -> Api:
    return Api(Client(), bearer(make_token(member)))


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


def received_until_abort(response: Any) -> bytes:
    """What a streaming body yields before it ends with DownloadAborted (which it must)."""
    got = bytearray()
    with pytest.raises(DownloadAborted):
        for piece in response.streaming_content:
            got += piece
    return bytes(got)


def corrupt_events(blob: Blob) -> list[dict[str, Any]]:
    events = AuditEvent.objects.filter(tenant_id=blob.tenant_id, type=EventType.BLOB_CORRUPT).order_by("seq")
    return [e.payload for e in events if e.payload["blobId"] == str(blob.pk)]


def without_volatile(headers: Any, *also: str) -> dict[str, str]:
    """Response headers that must be the same for GET and HEAD (not the per-request id or the date)."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in {"x-request-id", "date", *also}}


def assert_refused(
    api: Api,
    page: Client,
    blob: Blob,
    data: bytes,
    kind: Damage,
    chunk: int | None,
    caplog: Any,
    *,
    thorough: bool = True,
    **headers: Any,
) -> None:
    """500 blob_corrupt before any byte (API, page, HEAD); recorded once; shown on the page and the list.

    Not ``thorough``: the API's answer and the record only (what the storage backend can change)."""
    response = api.get(blob, **headers)
    assert response.status_code == 500
    assert not response.streaming and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "blob_corrupt"
    assert "damaged" in error["message"] and kind.label.lower() in error["message"]
    assert data[:64] not in response.content
    payload = {"blobId": str(blob.pk), "name": blob.name, "chunk": chunk, "damage": kind.value}
    assert corrupt_events(blob) == [{**payload, "foundBy": "download"}]
    blob.refresh_from_db()
    assert (blob.damage, blob.damaged_chunk, blob.is_damaged) == (kind.value, chunk, True)
    if not thorough:
        return
    # HEAD: the same status and headers, without the body (Content-Length: see test_head_content_length...).
    head = api.head(blob, **headers)
    assert (head.status_code, head.content) == (500, b"")
    assert without_volatile(head.headers, "content-length") == without_volatile(
        response.headers, "content-length"
    )
    # The page download is Kodori's error page, not an attachment and not a server's default page.
    download = page.get(reverse("blobs:download", args=[blob.pk]), **headers)
    assert download.status_code == 500
    assert download["Content-Type"].startswith("text/html") and "Content-Disposition" not in download
    html = download.content.decode()
    assert "This file is damaged in storage" in html and 'href="/blobs"' in html and "<html" in html
    assert data[:64] not in download.content
    # Recorded once for three meetings with the same damage; logged every time.
    assert corrupt_events(blob) == [{**payload, "foundBy": "download"}]
    lines = [r for r in caplog.records if r.name == "blobs.damage" and r.levelno == logging.ERROR]
    assert len(lines) == 3 and all(str(blob.pk) in r.getMessage() for r in lines)
    assert all(kind.value in r.getMessage() for r in lines)
    listed = api.listing()[str(blob.pk)]["damage"]
    assert listed["kind"] == kind.value and listed["chunk"] == chunk and listed["message"] == blob.damage_text
    detail = page.get(reverse("blobs:detail", args=[blob.pk])).content.decode()
    assert "This file is damaged in storage." in detail and blob.damage_text in detail


def assert_whole(api: Api, blob: Blob) -> None:
    blob.refresh_from_db()
    assert not blob.is_damaged and corrupt_events(blob) == []
    assert api.listing()[str(blob.pk)]["damage"] is None


# --- small answers: everything authenticated before the first byte -----------------------------------------


@pytest.mark.parametrize("mode", ["full", "ranged"])
@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("position", POSITIONS)
def test_damage_anywhere_is_500_blob_corrupt_before_any_byte(
    store: Store, api: Api, member: Any, caplog: Any, position: str, mutation: str, mode: str
) -> None:
    """Ranged: a range over the damaged chunk, or, for a wrong length, the first 100 bytes (a range that never
    reaches the damage or the end is refused too)."""
    data = pattern(SIZE)
    blob = make_blob(member, data, name="data.bin")
    twin = store.read(make_blob(member, data, name="twin.bin")) if mutation == "swap" else b""
    lo, hi = region(position, SIZE)
    store.write(blob, MUTATIONS[mutation](store.read(blob), lo, hi, twin))
    start, stop = range_over(position, SIZE) if mutation not in LENGTH_CHANGING else (0, 100)
    headers: dict[str, Any] = {} if mode == "full" else {"HTTP_RANGE": f"bytes={start}-{stop - 1}"}
    kind, chunk = expected_damage(position, mutation, SIZE)
    # Pages, HEAD, the list and the log are checked on the filesystem; S3 changes only how bytes are read.
    thorough = isinstance(store, FileStore)
    assert_refused(api, client_for(member), blob, data, kind, chunk, caplog, thorough=thorough, **headers)


@pytest.mark.parametrize(("position", "served"), [("middle", True), ("last", False)])
def test_a_small_range_authenticates_its_own_chunks_and_the_final_one(
    store: Store, api: Api, member: Any, caplog: Any, position: str, served: bool
) -> None:
    """Current behaviour: a small range is authenticated whole, with the final chunk (which fixes the length
    that Content-Range states) and nothing else. A damaged middle chunk it does not cover is neither read nor
    noticed; a damaged final chunk refuses every range."""
    data = pattern(SIZE)
    blob = make_blob(member, data)
    lo, hi = region(position, SIZE)
    store.write(blob, MUTATIONS["flip"](store.read(blob), lo, hi, b""))
    if served:
        response = api.get(blob, HTTP_RANGE="bytes=0-99")
        assert response.status_code == 206 and body(response) == data[:100]
        assert_whole(api, blob)
    else:
        assert_refused(
            api, client_for(member), blob, data, Damage.CHUNK, FINAL, caplog, HTTP_RANGE="bytes=0-99"
        )


@pytest.mark.parametrize("offset", [0, 4, 10, 40], ids=["magic", "version", "salt", "commitment"])
def test_every_field_of_the_header_is_checked(
    store: Store, api: Api, member: Any, caplog: Any, offset: int
) -> None:
    data = pattern(SIZE)
    blob = make_blob(member, data)
    store.write(blob, flipped(store.read(blob), offset))
    assert_refused(api, client_for(member), blob, data, Damage.HEADER, None, caplog, HTTP_RANGE="bytes=0-9")


def test_a_missing_object_is_500_blob_corrupt(store: Store, api: Api, member: Any, caplog: Any) -> None:
    data = pattern(SIZE)
    blob = make_blob(member, data)
    store.remove(blob)
    assert_refused(api, client_for(member), blob, data, Damage.MISSING, None, caplog, HTTP_RANGE="bytes=0-9")


def test_two_blobs_with_swapped_objects_fail_their_headers(
    store: Store, api: Api, member: Any, caplog: Any
) -> None:
    """Same size, same tenant, both objects intact: the context binds each to its own blob id."""
    data, other = pattern(SIZE, seed=1), pattern(SIZE, seed=2)
    first, second = make_blob(member, data, name="first.bin"), make_blob(member, other, name="second.bin")
    first_bytes, second_bytes = store.read(first), store.read(second)
    store.write(first, second_bytes)
    store.write(second, first_bytes)
    assert_refused(api, client_for(member), first, data, Damage.HEADER, None, caplog)
    caplog.clear()
    assert_refused(api, client_for(member), second, other, Damage.HEADER, None, caplog)


def test_another_tenants_object_fails_the_header(
    store: Store, api: Api, member: Any, outsider: Any, caplog: Any
) -> None:
    """An object copied from another tenant's blob fails too: the context binds the tenant id."""
    data = pattern(SIZE)
    blob = make_blob(member, data)
    store.write(blob, store.read(make_blob(outsider, data, name="globex.bin")))
    assert_refused(api, client_for(member), blob, data, Damage.HEADER, None, caplog)


@pytest.mark.parametrize(("a", "b"), [(0, 1), (1, 2)])
def test_two_chunks_swapped_within_a_blob_fail_at_the_first_of_them(
    store: Store, api: Api, member: Any, caplog: Any, a: int, b: int
) -> None:
    data = pattern(SIZE)
    blob = make_blob(member, data)
    stored = bytearray(store.read(blob))
    at = [envelope.HEADER_SIZE + i * SEALED_CHUNK_SIZE for i in (a, b)]
    first, second = (bytes(stored[p : p + SEALED_CHUNK_SIZE]) for p in at)
    stored[at[0] : at[0] + SEALED_CHUNK_SIZE], stored[at[1] : at[1] + SEALED_CHUNK_SIZE] = second, first
    store.write(blob, bytes(stored))
    assert_refused(api, client_for(member), blob, data, Damage.CHUNK, a, caplog)


def test_a_data_key_that_does_not_match_is_500_data_key(api: Api, member: Any, caplog: Any) -> None:
    data = pattern(SIZE)
    blob = make_blob(member, data)
    row = DataKey.objects.get(blob_id=blob.pk)
    DataKey.objects.filter(pk=row.pk).update(wrapped_dek=flipped(bytes(row.wrapped_dek), -1))
    assert_refused(api, client_for(member), blob, data, Damage.DATA_KEY, None, caplog)


def test_new_damage_is_recorded_again_and_the_same_damage_is_not(store: Store, api: Api, member: Any) -> None:
    data = pattern(SIZE)
    blob = make_blob(member, data)
    intact = store.read(blob)
    lo, hi = region("middle", SIZE)
    store.write(blob, MUTATIONS["flip"](intact, lo, hi, b""))
    for _ in range(3):
        assert api.get(blob).status_code == 500
    store.write(blob, intact + b"x")
    for _ in range(3):
        assert api.get(blob, HTTP_RANGE="bytes=0-0").status_code == 500
    found = [(e["damage"], e["chunk"]) for e in corrupt_events(blob)]
    assert found == [("chunk", chunk_at("middle", SIZE)), ("length", None)]


def test_another_tenant_sees_nothing_of_the_damage(
    store: Store, api: Api, member: Any, outsider: Any
) -> None:
    data = pattern(SIZE)
    blob = make_blob(member, data)
    store.write(blob, store.read(blob)[:-1])
    assert api.get(blob).status_code == 500
    theirs = Api(Client(), bearer(make_token(outsider)))
    assert theirs.get(blob).status_code == theirs.head(blob).status_code == 404
    assert theirs.get(blob).json()["error"]["code"] == "not_found"
    assert str(blob.pk) not in theirs.listing()
    page = client_for(outsider)
    for name in ("blobs:detail", "blobs:download"):
        response = page.get(reverse(name, args=[blob.pk]))
        assert response.status_code == 404 and b"damaged" not in response.content
    # The event is in this tenant's audit log only.
    assert len(corrupt_events(blob)) == 1
    assert (
        not AuditEvent.objects.exclude(tenant_id=blob.tenant_id).filter(type=EventType.BLOB_CORRUPT).exists()
    )
    assert str(blob.pk) not in page.get(reverse("audit:index")).content.decode()


@pytest.mark.parametrize("cause", ["sealed", "disabled"])
def test_head_answers_what_get_answers_when_the_key_cannot_be_used(
    api: Api, member: Any, tenant: Any, cause: str
) -> None:
    from django.utils import timezone

    from encryption import keyring

    blob = make_blob(member, pattern(SIZE))
    if cause == "sealed":
        tenant.sealed_at, tenant.seal_reason = timezone.now(), "Your AWS KMS key denied Decrypt."
        tenant.save()
    else:
        TenantKey.objects.for_tenant(tenant).update(status=KeyStatus.DISABLED)
        keyring.cache.clear()
    for headers in ({}, {"HTTP_RANGE": "bytes=0-9"}):
        get, head = api.get(blob, **headers), api.head(blob, **headers)
        assert get.status_code == head.status_code == 503
        assert get.json()["error"]["code"] == ("tenant_sealed" if cause == "sealed" else "key_unavailable")
        assert without_volatile(head.headers, "content-length") == without_volatile(
            get.headers, "content-length"
        )
    assert_whole(api, blob)


def test_answers_that_send_no_bytes_do_not_read_the_file(store: Store, api: Api, member: Any) -> None:
    """304 (the client's copy is the uploaded file) and 416 are decided before the file is read."""
    blob = make_blob(member, pattern(SIZE))
    store.write(blob, store.read(blob)[:-1])
    assert api.get(blob, HTTP_IF_NONE_MATCH=blob.etag).status_code == 304
    unsatisfiable = api.get(blob, HTTP_RANGE=f"bytes={SIZE}-")
    assert unsatisfiable.status_code == 416 and unsatisfiable["Content-Range"] == f"bytes */{SIZE}"
    assert_whole(api, blob)
    assert api.get(blob).status_code == 500


@pytest.mark.parametrize("cause", ["damaged", "sealed"])
def test_head_content_length_of_an_error_is_the_get_s(api: Api, member: Any, tenant: Any, cause: str) -> None:
    from django.utils import timezone

    blob = make_blob(member, pattern(SIZE))
    if cause == "damaged":
        row = DataKey.objects.get(blob_id=blob.pk)
        DataKey.objects.filter(pk=row.pk).update(wrapped_dek=flipped(bytes(row.wrapped_dek), 0))
    else:
        tenant.sealed_at, tenant.seal_reason = timezone.now(), "Your AWS KMS key denied Decrypt."
        tenant.save()
    get, head = api.get(blob), api.head(blob)
    assert get.status_code == head.status_code
    assert head["Content-Length"] == get["Content-Length"] == str(len(get.content))


# --- large answers: streamed, aborted at a damaged chunk ---------------------------------------------------

BIG = 64 * CHUNK_SIZE + 100  # chunks 0..63 full, a 100-byte final chunk 64
DAMAGED = 40


@pytest.fixture
def big(settings: Any) -> bytes:
    """Answers over 64 KiB stream (the default threshold is 8 MiB); a ~1 MiB blob's plaintext."""
    settings.BLOB_VERIFY_BEFORE_SEND_BYTES = 64 * 1024
    return pattern(BIG)


def damage_chunk(store: Store, blob: Blob, chunk: int) -> bytes:
    """Flip one byte of ``chunk``; returns the intact object."""
    intact = store.read(blob)
    store.write(blob, flipped(intact, envelope.HEADER_SIZE + chunk * SEALED_CHUNK_SIZE + 10))
    return intact


@pytest.mark.parametrize(
    ("via", "start", "stop"),
    [("api", 0, BIG), ("page", 0, BIG), ("api", 2 * CHUNK_SIZE + 5, 50 * CHUNK_SIZE)],
    ids=["api-full", "page-full", "api-ranged"],
)
def test_a_large_download_ends_short_at_a_damaged_chunk_after_only_authentic_bytes(
    store: Store, api: Api, member: Any, big: bytes, caplog: Any, via: str, start: int, stop: int
) -> None:
    blob = make_blob(member, big, name="big.bin")
    damage_chunk(store, blob, DAMAGED)
    page = client_for(member)
    headers: dict[str, Any] = {} if stop - start == BIG else {"HTTP_RANGE": f"bytes={start}-{stop - 1}"}
    url = api.url(blob) if via == "api" else reverse("blobs:download", args=[blob.pk])
    client, auth = (api.client, api.auth) if via == "api" else (page, {})

    # What decides the status line authenticates (length, header, the answer's first chunk): HEAD agrees.
    head = api.head(blob, **headers)
    response = client.get(url, **headers, **auth)
    assert head.status_code == response.status_code == (200 if not headers else 206)
    assert response.streaming and head["Content-Length"] == response["Content-Length"] == str(stop - start)
    received = received_until_abort(response)
    # Everything up to the damaged chunk, which authenticated, and not one byte of it or after it.
    assert received == big[start : DAMAGED * CHUNK_SIZE]
    assert len(received) < int(response["Content-Length"])
    assert corrupt_events(blob) == [
        {
            "blobId": str(blob.pk),
            "name": "big.bin",
            "chunk": DAMAGED,
            "damage": "chunk",
            "foundBy": "download",
        }
    ]
    assert any(f"blob {blob.pk}" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)

    # Known now: every answer that covers the chunk is refused before the status line, not aborted again.
    caplog.clear()
    assert_refused(api, page, blob, big, Damage.CHUNK, DAMAGED, caplog, **headers)


def test_a_large_range_is_checked_for_recorded_damage_only_where_it_reaches(
    store: Store, api: Api, member: Any, big: bytes
) -> None:
    """What a large range authenticates before its status line: the length (final chunk), the header, its
    first chunk, and a chunk recorded damaged earlier if the range covers it. Damage elsewhere does not stop
    it; unrecorded damage inside it aborts the body when the stream reaches it."""
    blob = make_blob(member, big, name="big.bin")
    damage_chunk(store, blob, 60)
    intact = (0, 20 * CHUNK_SIZE)  # chunks 0..19, far from chunk 60
    reaching = (10 * CHUNK_SIZE, 62 * CHUNK_SIZE)  # chunks 10..61, chunk 60 not its first

    def ranged(span: tuple[int, int]) -> Any:
        return api.get(blob, HTTP_RANGE=f"bytes={span[0]}-{span[1] - 1}")

    served = ranged(intact)  # damage not known yet, and not in the range
    assert served.status_code == 206 and body(served) == big[slice(*intact)]
    assert corrupt_events(blob) == []
    aborted = ranged(reaching)  # not known yet, in the range: found on the way, the body ends short
    assert aborted.status_code == 206
    assert received_until_abort(aborted) == big[reaching[0] : 60 * CHUNK_SIZE]
    assert len(corrupt_events(blob)) == 1
    refused = ranged(reaching)  # known now, in the range: refused before the status line
    assert refused.status_code == 500 and refused.json()["error"]["code"] == "blob_corrupt"
    still = ranged(intact)  # known, but not in the range: still served, every byte authentic
    assert still.status_code == 206 and body(still) == big[slice(*intact)]
    assert len(corrupt_events(blob)) == 1


@pytest.mark.parametrize("mode", ["full", "ranged"])
@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("header", Damage.HEADER),
        ("first", Damage.CHUNK),
        ("final", Damage.CHUNK),
        ("truncate", Damage.LENGTH),
    ],
)
def test_a_large_answer_is_refused_before_the_status_line_for_what_decides_it(
    store: Store, api: Api, member: Any, big: bytes, caplog: Any, damage: str, kind: Damage, mode: str
) -> None:
    """Header, stored length, final chunk (the length every header states), the answer's first chunk."""
    blob = make_blob(member, big, name="big.bin")
    start, stop = (0, BIG) if mode == "full" else (2 * CHUNK_SIZE + 5, 50 * CHUNK_SIZE)
    chunk = {"first": start // CHUNK_SIZE, "final": BIG // CHUNK_SIZE}.get(damage)
    if chunk is not None:
        damage_chunk(store, blob, chunk)
    elif damage == "header":
        store.write(blob, flipped(store.read(blob), 40))
    else:
        store.write(blob, store.read(blob)[:-1])
    headers: dict[str, Any] = {} if mode == "full" else {"HTTP_RANGE": f"bytes={start}-{stop - 1}"}
    assert_refused(api, client_for(member), blob, big, kind, chunk, caplog, **headers)


def test_a_full_download_that_authenticates_every_chunk_lifts_the_mark(
    store: Store, api: Api, member: Any, big: bytes
) -> None:
    """The object restored (from a backup, an object version): the next full download clears the damage."""
    blob = make_blob(member, big, name="big.bin")
    intact = damage_chunk(store, blob, DAMAGED)
    received_until_abort(api.get(blob))  # the first download finds the damage on its way and ends short
    assert api.get(blob).status_code == 500  # the next ones are refused up front
    store.write(blob, intact)
    assert body(api.get(blob)) == big
    blob.refresh_from_db()
    assert not blob.is_damaged and blob.verified_at is not None
    repaired = AuditEvent.objects.filter(tenant_id=blob.tenant_id, type=EventType.BLOB_REPAIRED)
    assert [e.payload["blobId"] for e in repaired] == [str(blob.pk)]
    assert api.listing()[str(blob.pk)]["damage"] is None


def test_a_restored_small_file_is_served_again_and_its_full_download_lifts_the_mark(
    store: Store, api: Api, member: Any
) -> None:
    """A full answer authenticated whole before sending proves every chunk, as the scrub does: the mark goes
    and ``blob.repaired`` is recorded; a ranged answer proves only part and lifts nothing."""
    data = pattern(SIZE)
    blob = make_blob(member, data)
    intact = store.read(blob)
    store.write(blob, intact[:-1])
    assert api.get(blob).status_code == 500
    store.write(blob, intact)
    ranged = api.get(blob, HTTP_RANGE="bytes=0-9")
    assert ranged.status_code == 206 and body(ranged) == data[:10]
    blob.refresh_from_db()
    assert blob.is_damaged and api.listing()[str(blob.pk)]["damage"]["kind"] == "length"
    response = api.get(blob)
    assert response.status_code == 200 and body(response) == data
    blob.refresh_from_db()
    assert not blob.is_damaged and api.listing()[str(blob.pk)]["damage"] is None
