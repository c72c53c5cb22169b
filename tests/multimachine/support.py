"""The cluster of ``kodori.devtools.cluster`` as the tests run it: its processes, a browser-like client, and
what the processes hold in PostgreSQL and Redis, sampled from outside while the tests run."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import psutil
import psycopg

from encryption import services
from encryption.models import RewrapJob
from kodori.devtools import cluster
from kodori.devtools.run import BASE_DIR
from tenants.models import Tenant
from tests.blobs.support import LiveApi

MIB = 1024 * 1024
# A loaded 2-core machine starts five Django processes in ~10 s; allow far more, but not forever.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


class Processes:
    """The cluster's processes, each in a session (so a process group) of its own, with its output in a log.

    ``kill`` is a machine lost at once: SIGKILL to the whole group (gunicorn's or Celery's own workers too).
    """

    def __init__(self, specs: list[cluster.Process], env: Mapping[str, str], logs: Path) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.env = dict(env)
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[BinaryIO] = []

    def start(self, name: str) -> None:
        spec = self.specs[name]
        log = (self.logs / f"{name}.log").open("ab")
        self._files.append(log)
        self.running[name] = subprocess.Popen(
            spec.cmd,
            env=cluster.env_for(self.env, spec),
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, names: list[str], port: int, app: Any, *, timeout: float = START_TIMEOUT) -> None:
        """Return once every web server answers /healthz and every worker answers a ping (through ``app``, a
        Celery app on the cluster's broker)."""
        deadline = time.monotonic() + timeout
        waiting = [n for n in names if self.specs[n].role in ("web", "worker")]
        while waiting:
            for name in list(waiting):
                proc = self.running[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
                if self._answers(name, port, app):
                    waiting.remove(name)
            if waiting and time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.log(n)[-2000:]}" for n in waiting)
                raise RuntimeError(f"not ready within {timeout:.0f} s: {waiting}\n{tails}")

    def _answers(self, name: str, port: int, app: Any) -> bool:
        spec = self.specs[name]
        if spec.role == "worker":
            return bool(app.control.ping(destination=[f"{name}@{socket.gethostname()}"], timeout=0.5))
        try:
            conn = http.client.HTTPConnection(address_of(spec), port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            time.sleep(0.1)
            return False

    def kill(self, name: str) -> None:
        proc = self.running[name]
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)

    def members(self, name: str) -> list[psutil.Process]:
        """The process and its children (gunicorn's workers, Celery's pool), while it runs."""
        proc = self.running.get(name)
        if proc is None or proc.poll() is not None:
            return []
        try:
            leader = psutil.Process(proc.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        """SIGTERM every process (a warm shutdown), then SIGKILL what is left of every group."""
        for proc in self.running.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.running.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.running.values():
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for log in self._files:
            log.close()


def address_of(spec: cluster.Process) -> str:
    return spec.name.removeprefix("web-")


def api(spec: cluster.Process, port: int, token: str) -> LiveApi:
    return LiveApi(f"http://{address_of(spec)}:{port}", token)


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for piece in chunks:
        digest.update(piece)
    return digest.hexdigest()


def listed(server: LiveApi) -> set[str]:
    """The ids the API lists (first page: the tests' tenants hold a handful of files)."""
    conn = server.connection()
    try:
        conn.request("GET", "/api/v1/blobs", headers={"Authorization": f"Bearer {server.secret}"})
        response = conn.getresponse()
        assert response.status == 200
        return {item["id"] for item in json.loads(response.read())["items"]}
    finally:
        conn.close()


def fetch(server: LiveApi, blob_id: str) -> tuple[int, bytes]:
    code, _headers, chunks = server.download(blob_id)
    return code, b"".join(chunks)


def delete(server: LiveApi, blob_id: str) -> int:
    conn = server.connection()
    try:
        auth = {"Authorization": f"Bearer {server.secret}"}
        conn.request("DELETE", f"/api/v1/blobs/{blob_id}", headers=auth)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def aws_key_for(kms: Any, tenant: Tenant) -> tuple[str, str]:
    """A customer's AWS KMS key and the role Kodori assumes for ``tenant`` (with its ExternalId)."""
    key_arn = kms.aws.create_key(alias=f"alias/cluster-{tenant.pk}")
    role_arn = kms.aws.create_tenant_role(f"cluster-{tenant.pk}", services.external_id_for(tenant), key_arn)
    return key_arn, role_arn


def decrypts(kms: Any) -> int:
    """Decrypt calls the AWS KMS emulator has answered so far."""
    return int(kms.aws.counts().get("Decrypt", 0))


def refreshed(job: RewrapJob) -> RewrapJob:
    job.refresh_from_db()
    return job


def parts_in_s3(s3: Any, bucket: str, key: str) -> int:
    """Parts S3 holds for unfinished multipart uploads of ``key``."""
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    return sum(
        len(s3.list_parts(Bucket=bucket, Key=key, UploadId=u["UploadId"]).get("Parts", [])) for u in uploads
    )


class Browser:
    """Cookies over plain HTTP, enough to sign in and post forms the way a browser does (CSRF included).

    One jar for every server: behind a load balancer all of them are one site, so a session made by one web
    server must be good on the others.
    """

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def request(
        self, base: str, method: str, path: str, form: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode({**form, "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")})
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key.strip()] = rest.split(";", 1)[0]
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def sign_in(self, base: str, email: str, password: str) -> None:
        self.request(base, "GET", "/accounts/login/")  # the CSRF cookie
        status, _headers, body = self.request(
            base, "POST", "/accounts/login/", {"username": email, "password": password}
        )
        assert status == 302, body[-2000:]


# --- What the processes hold: PostgreSQL connections and Redis --------------------------------------------


@dataclass
class Figures:
    """Most seen at once while sampling: connections per OS process (by cluster process and main/child), per
    ``application_name`` in pg_stat_activity, and advisory locks held."""

    pg_by_process: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    redis_by_process: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    pg_by_app_name: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    advisory_locks: int = 0
    samples: int = 0


class Sampler(threading.Thread):
    """Counts, every ``every`` seconds, each cluster process's TCP connections to PostgreSQL and Redis (from
    the processes' side, with psutil) and pg_stat_activity per application_name."""

    def __init__(
        self, processes: Processes, dsn: str, pg_port: int, redis_port: int, every: float = 0.5
    ) -> None:
        super().__init__(name="cluster-sampler", daemon=True)
        self.processes = processes
        self.dsn = dsn
        self.ports = {"pg": pg_port, "redis": redis_port}
        self.every = every
        self.figures = Figures()
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stopping.wait(self.every):
                self.sample(conn)

    def sample(self, conn: psycopg.Connection[Any]) -> None:
        counted: dict[str, dict[str, int]] = {"pg": defaultdict(int), "redis": defaultdict(int)}
        for name in list(self.processes.running):
            members = self.processes.members(name)
            for member in members:
                kind = "main" if member is members[0] else "child"
                # psutil < 6 names it connections().
                connections = getattr(member, "net_connections", None) or member.connections
                with suppress(psutil.Error):
                    for c in connections(kind="tcp"):
                        for target, port in self.ports.items():
                            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED:
                                counted[target][f"{name} {kind} {member.pid}"] += 1
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'kodori-%%' GROUP BY 1"
        ).fetchall()
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        with self.lock:
            f = self.figures
            f.samples += 1
            for key, n in counted["pg"].items():
                per = _without_pid(key)
                f.pg_by_process[per] = max(f.pg_by_process[per], n)
            for key, n in counted["redis"].items():
                per = _without_pid(key)
                f.redis_by_process[per] = max(f.redis_by_process[per], n)
            for app_name, n in rows:
                f.pg_by_app_name[app_name] = max(f.pg_by_app_name[app_name], n)
            f.advisory_locks = max(f.advisory_locks, row[0] if row else 0)

    def snapshot(self) -> Figures:
        with self.lock:
            f = self.figures
            return Figures(
                dict(f.pg_by_process),
                dict(f.redis_by_process),
                dict(f.pg_by_app_name),
                f.advisory_locks,
                f.samples,
            )


def _without_pid(key: str) -> str:
    return key.rsplit(" ", 1)[0]


def redis_inventory(url: str) -> dict[str, int]:
    """Redis's keys, by what they are (Celery's queue, unacknowledged messages, results; Kodori's own)."""
    import redis

    client = redis.Redis.from_url(url)
    kinds: dict[str, int] = defaultdict(int)
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        if key.startswith("celery-task-meta-"):
            kinds["celery-task-meta-* (results)"] += 1
        elif key.startswith("_kombu.binding."):
            kinds["_kombu.binding.* (routing)"] += 1
        elif key.startswith("kodori:"):
            kinds[":".join(key.split(":")[:2]) + ":*"] += 1
        else:
            kinds[key] += 1
    kinds["unacked messages"] = int(client.hlen("unacked"))
    kinds["queued messages"] = int(client.llen("celery"))
    client.close()
    return dict(kinds)
