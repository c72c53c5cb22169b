"""The tenant export over real HTTP, from a real ``gunicorn kodori.wsgi`` (one worker, gthread, as
``make run`` starts it) on the test database and this test's blob directory.

* 100 MiB (and two small files) uploaded as streamed request bodies come back byte for byte in a zip part
  made and downloaded through the API; Info-ZIP's ``unzip -t`` checks the archive too.
* A client that hangs up mid-part leaves the part ``interrupted`` (gunicorn closes the body's iterator);
  downloading it again completes, read as a tar stream straight off the socket.
* Constant memory (slow): a 1 GiB file exported as a tar part grows the worker's peak RSS by less than
  100 MiB, and the client receives the file byte for byte. Printed: MiB/s of that export download and of a
  plain download of the same file in the same run.

``test_export_*.py`` prove the rules in process.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from django.conf import settings

from offboarding.models import ExportPart, PartStatus
from tests.blobs.support import LiveApi, make_token, random_stream
from tests.conftest import stop_process, subprocess_env, wait_for_listener
from tests.encryption.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
READ = MIB


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def worker(self) -> int:
        (worker,) = psutil.Process(self.process.pid).children()
        return int(worker.pid)


@pytest.fixture
def server(blob_root: Path, tmp_path: Path) -> Iterator[Server]:
    from kodori.devtools.servers import free_port

    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {**subprocess_env(), "BLOB_ROOT": str(blob_root)}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "kodori.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    command += ["--threads", "4", "--timeout", "300"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_listener(proc, port, log_path, within=30)
        yield Server(f"http://127.0.0.1:{port}", proc, log_path)
    finally:
        stop_process(proc)


@pytest.fixture
def api(server: Server, owner: Any, tenant: Any) -> LiveApi:
    return LiveApi(server.url, make_token(owner, tenant))


def send(api: LiveApi, name: str, size: int) -> tuple[str, str]:
    """Upload ``size`` random bytes as a streamed body; (blob id, SHA-256 of what was sent)."""
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for piece in random_stream(size):
            digest.update(piece)
            yield piece

    status, created = api.upload(name, body(), size)
    assert status == 201, created
    return created["id"], digest.hexdigest()


def call(api: LiveApi, method: str, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = api.connection()
    conn.request(method, path, headers={"Authorization": f"Bearer {api.secret}"})
    return conn, conn.getresponse()


def new_export(api: LiveApi, fmt: str) -> dict[str, Any]:
    conn, response = call(api, "POST", f"/api/v1/exports?format={fmt}")
    body: dict[str, Any] = json.loads(response.read())
    conn.close()
    assert response.status == 201, body
    return body


def status(api: LiveApi, export: dict[str, Any]) -> dict[str, Any]:
    conn, response = call(api, "GET", export["url"])
    body: dict[str, Any] = json.loads(response.read())
    conn.close()
    return body


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while piece := stream.read(READ):
        digest.update(piece)
    return digest.hexdigest()


def drain(response: http.client.HTTPResponse) -> int:
    """Read a body to its end into one reused buffer (the cheapest client); its length."""
    buffer = memoryview(bytearray(READ))
    total = 0
    while got := response.readinto(buffer):
        total += got
    return total


def tar_files(response: IO[bytes]) -> dict[str, str]:
    """A tar read as a stream off the socket: the SHA-256 of each member under files/, and the manifest."""
    found: dict[str, str] = {}
    with tarfile.open(fileobj=response, mode="r|") as archive:
        for info in archive:
            member = archive.extractfile(info)
            assert member is not None
            if info.name == "manifest.jsonl":
                found[info.name] = member.read().decode()
            elif info.name.startswith("files/"):
                found[info.name] = sha256_of(member)
    return found


@pytest.mark.slow
def test_a_100_mib_file_round_trips_through_a_zip_export_over_http(api: LiveApi, tmp_path: Path) -> None:
    started = time.monotonic()
    sent = {name: send(api, name, size) for name, size in [("empty", 0), ("odd", 16385), ("big", 100 * MIB)]}
    uploaded = time.monotonic()
    export = new_export(api, "zip")
    (part,) = export["parts"]
    assert (part["files"], part["bytes"]) == (3, 100 * MIB + 16385)
    conn, response = call(api, "GET", part["url"])
    assert response.status == 200 and response.getheader("Content-Type") == "application/zip"
    assert response.getheader("X-Export-Files") == "3"
    path = tmp_path / "part1.zip"
    with path.open("wb") as out:
        shutil.copyfileobj(response, out, READ)
    conn.close()
    downloaded = time.monotonic()

    with zipfile.ZipFile(path) as archive:
        lines = [json.loads(line) for line in archive.read("manifest.jsonl").splitlines()]
        files = [line for line in lines if line["record"] == "file"]
        assert {line["name"]: (line["blob_id"], line["sha256"]) for line in files} == sent
        for line in files:
            with archive.open(line["path"]) as member:
                assert sha256_of(member) == sent[line["name"]][1]
        assert {"README.txt", "audit-evidence.zip"} <= set(archive.namelist())
    unzip = shutil.which("unzip")
    if unzip is not None:
        checked = subprocess.run([unzip, "-tq", str(path)], capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    after = status(api, export)
    assert after["complete"] and after["parts"][0]["bytes_sent"] == 100 * MIB + 16385
    took = downloaded - uploaded
    print(
        f"\nlive 100 MiB: upload {uploaded - started:.1f} s, zip export download {took:.1f} s "
        f"({path.stat().st_size / MIB / took:.0f} MiB/s), check {time.monotonic() - downloaded:.1f} s"
    )


def test_a_client_that_hangs_up_leaves_the_part_interrupted_and_it_downloads_again(api: LiveApi) -> None:
    blob_id, sha = send(api, "big.bin", 64 * MIB)
    export = new_export(api, "tar")
    (part,) = export["parts"]
    conn, response = call(api, "GET", part["url"])
    assert response.status == 200
    assert len(response.read(MIB)) == MIB
    conn.close()  # the client goes away mid-body: the socket closes (and the response with it)
    row = wait_for(
        "the part to be marked interrupted",
        lambda: ExportPart.objects.filter(export_id=export["id"], status=PartStatus.INTERRUPTED).first(),
        timeout=30,
    )
    assert "the connection closed" in row.error and row.bytes_sent < 64 * MIB
    assert status(api, export)["parts"][0]["status"] == "interrupted"

    conn, response = call(api, "GET", part["url"])
    found = tar_files(response)
    conn.close()
    assert found["files/big.bin"] == sha
    assert f'"blob_id":"{blob_id}"' in found["manifest.jsonl"]
    row = wait_for(
        "the part to be complete",
        lambda: ExportPart.objects.filter(export_id=export["id"], status=PartStatus.COMPLETE).first(),
        timeout=30,
    )
    assert (row.downloads, row.files_sent, row.bytes_sent, row.error) == (2, 1, 64 * MIB, "")


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


@pytest.mark.slow
def test_a_1_gib_export_streams_in_constant_memory(api: LiveApi, server: Server) -> None:
    size = 1024 * MIB
    # Warm-up: every code path once (upload, plain download, export made and downloaded), on small files.
    warm_id, _ = send(api, "warm.bin", 4 * MIB)
    conn, response = call(api, "GET", f"/api/v1/blobs/{warm_id}")
    drain(response)
    conn.close()
    warm_export = new_export(api, "tar")
    conn, response = call(api, "GET", warm_export["parts"][0]["url"])
    drain(response)
    conn.close()

    started = time.monotonic()
    big_id, sha = send(api, "big.bin", size)
    upload_s = time.monotonic() - started
    export = new_export(api, "tar")
    assert export["bytes"] == size + 4 * MIB

    worker = server.worker()
    baseline = _status_mib(worker, "VmRSS")
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here

    def timed(path: str) -> tuple[int, float]:
        conn, response = call(api, "GET", path)
        assert response.status == 200
        began = time.perf_counter()
        total = drain(response)
        took = time.perf_counter() - began
        conn.close()
        return total, took

    plain_bytes, plain_s = timed(f"/api/v1/blobs/{big_id}")
    export_bytes, export_s = timed(export["parts"][0]["url"])
    assert plain_bytes == size and export_bytes > size
    # Byte for byte: the export once more, read as a tar stream straight off the socket and hashed.
    conn, response = call(api, "GET", export["parts"][0]["url"])
    found = tar_files(response)
    conn.close()
    assert found["files/big.bin"] == sha

    growth = _status_mib(worker, "VmHWM") - baseline
    print(
        f"\n1 GiB: upload {upload_s:.1f} s; plain download {size / MIB / plain_s:.0f} MiB/s; "
        f"export download {export_bytes / MIB / export_s:.0f} MiB/s "
        f"(ratio {plain_s / export_s:.2f}); worker RSS {baseline:.0f} MiB, peak growth {growth:.1f} MiB"
    )
    assert growth < 100, f"the worker's peak RSS grew by {growth:.0f} MiB"
    part = ExportPart.objects.get(export_id=export["id"], number=1)
    # The server records the end of a download after its last byte left; on a busy machine this test can
    # read the row before that commit lands (seen once, at load average 4+).
    deadline = time.monotonic() + 30
    while part.status == PartStatus.STREAMING and time.monotonic() < deadline:
        time.sleep(0.1)
        part.refresh_from_db()
    assert (part.status, part.downloads, part.bytes_sent) == (PartStatus.COMPLETE, 2, size + 4 * MIB)
