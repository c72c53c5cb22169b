"""A damaged chunk in a large download over real HTTP: a real ``gunicorn`` closes the connection short of the
Content-Length it sent, so every HTTP client sees a failed transfer holding only authentic bytes.

``test_damage.py`` proves the rules in process (Django's test client sees ``DownloadAborted``); this file
shows what that exception becomes on the wire. The server is ``gunicorn kodori.wsgi`` in a subprocess on the
test database and this test's blob directory, with its sync worker and with threads (``--threads 4``, as
``make run`` starts it: the gthread worker); answers over 64 KiB stream, like a blob over
``BLOB_VERIFY_BEFORE_SEND_BYTES`` (8 MiB) in production.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from audit.models import AuditEvent, EventType
from blobs.models import Blob, Damage
from encryption.format import envelope
from encryption.format.cobblestone import CHUNK_SIZE, SEALED_CHUNK_SIZE
from kodori.devtools.servers import free_port
from tests.blobs.support import LiveApi, make_blob, make_token, pattern
from tests.conftest import stop_process, subprocess_env, wait_for_listener

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = 64 * CHUNK_SIZE + 100  # ~1 MiB: chunks 0..63 full, a 100-byte final chunk 64
DAMAGED = 40


@pytest.fixture(params=["sync", "gthread"])
def server(request: Any, blob_root: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``gunicorn kodori.wsgi`` on a free loopback port, on the test database and ``blob_root``: its URL and
    the file its output goes to."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {
        **subprocess_env(),
        "BLOB_ROOT": str(blob_root),
        "BLOB_VERIFY_BEFORE_SEND_BYTES": str(64 * 1024),
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [
        str(gunicorn),
        "kodori.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--timeout",
        "60",
    ]
    command += ["--threads", "4"] if request.param == "gthread" else []
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_listener(proc, port, log_path, within=30)
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        stop_process(proc)


def damaged_blob(member: Any, root: Path, data: bytes, name: str) -> Blob:
    blob = make_blob(member, data, name=name)
    path = root / blob.storage_key
    stored = bytearray(path.read_bytes())
    stored[envelope.HEADER_SIZE + DAMAGED * SEALED_CHUNK_SIZE + 10] ^= 1
    path.write_bytes(bytes(stored))
    return blob


def get(api: LiveApi, blob: Blob) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = api.connection()
    conn.request("GET", f"/api/v1/blobs/{blob.pk}", headers={"Authorization": f"Bearer {api.secret}"})
    return conn, conn.getresponse()


def test_a_damaged_chunk_ends_a_large_download_short_for_every_client(
    server: tuple[str, Path], member: Any, blob_root: Path, tmp_path: Path
) -> None:
    url, log = server
    data = pattern(SIZE)
    read_whole, read_pieces, with_curl = (
        damaged_blob(member, blob_root, data, f"big-{n}.bin") for n in range(3)
    )
    api = LiveApi(url, make_token(member))
    authentic = DAMAGED * CHUNK_SIZE  # chunks 0..39 authenticate, chunk 40 does not

    # http.client's read(): IncompleteRead, holding only the authentic prefix.
    conn, response = get(api, read_whole)
    assert response.status == 200 and response.getheader("Content-Length") == str(SIZE)
    with pytest.raises(http.client.IncompleteRead) as failed:
        response.read()
    conn.close()
    assert failed.value.partial == data[:authentic] and failed.value.expected == SIZE - authentic

    # read(n) in pieces: the body ends (b"") short of Content-Length; a client must compare, as curl does.
    conn, response = get(api, read_pieces)
    assert response.status == 200
    received = bytearray()
    while piece := response.read(1 << 16):
        received += piece
    conn.close()
    assert len(received) < SIZE and bytes(received) == data[: len(received)]

    # curl: exit 18, "transfer closed with N bytes remaining to read"; what it wrote is the authentic prefix.
    curl = shutil.which("curl")
    if curl is not None:
        out = tmp_path / "curl.out"
        auth = f"Authorization: Bearer {api.secret}"
        done = subprocess.run(
            [curl, "-sS", "-o", str(out), "-H", auth, f"{url}/api/v1/blobs/{with_curl.pk}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 18, done.stderr
        assert f"transfer closed with {SIZE - authentic} bytes remaining to read" in done.stderr
        assert out.read_bytes() == data[:authentic]

    # Each damage was recorded once by the server; the next download is refused before any byte.
    for blob in (read_whole, read_pieces, with_curl):
        events = AuditEvent.objects.filter(tenant_id=blob.tenant_id, type=EventType.BLOB_CORRUPT)
        mine = [e.payload for e in events if e.payload["blobId"] == str(blob.pk)]
        assert [(p["damage"], p["chunk"]) for p in mine] == [(Damage.CHUNK.value, DAMAGED)]
    conn, response = get(api, read_whole)
    assert response.status == 500 and response.getheader("Content-Type") == "application/json"
    assert b'"code": "blob_corrupt"' in response.read()
    conn.close()
    # The operator's side: the damage and each aborted answer are in the server's log.
    output = log.read_text()
    assert (
        f"blob {read_whole.pk} of tenant {read_whole.tenant_id} is damaged: chunk at chunk {DAMAGED}"
        in output
    )
    assert output.count("DownloadAborted") >= 3
