"""Kodori on "two machines" of one: two web servers and two Celery workers as separate processes, on separate
loopback addresses, sharing one PostgreSQL, one Redis and one S3. Run it from a clone with the venv::

    .venv/bin/python -m kodori.devtools.cluster            # Ctrl-C stops everything

It starts a private PostgreSQL and Redis (or uses ``DATABASE_URL`` / ``REDIS_URL`` from the environment),
moto's S3 server as a process of its own, and the local AWS, Azure and GCP KMS emulators (``emulators.dev``);
runs the release steps (``migrate``, ``collectstatic``) and seeds the demo tenants; then starts the processes
of :func:`layout` with production settings (``DJANGO_ENV=production``, ``DEBUG`` off, blobs on S3): gunicorn
on 127.0.0.2 and 127.0.0.3 (same port, as two machines would have), two Celery workers and the one beat.
Every process is supervised as under `make run` (``run.Runner``): one that dies is restarted. Nothing is kept:
all state lives in a temporary directory that goes when the cluster stops.

``tests/multimachine`` starts the very same :func:`layout` with the same :func:`cluster_env` against the test
suite's servers and proves the processes share nothing but PostgreSQL, Redis and S3 (docs/operations.md,
"Deployment", has the figures it measured). A development tool: production never imports it.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .run import BASE_DIR, Runner
from .servers import PostgresServer, RedisServer, ServerUnavailable, free_port, new_password

BIN = Path(sys.executable).parent
# Each address stands for one machine; they are all on the loopback interface (127.0.0.0/8).
WEB_ADDRESSES = ("127.0.0.2", "127.0.0.3")
WORKER_NAMES = ("worker-1", "worker-2")
# Per web server: gunicorn worker processes, and threads in each (at most one PostgreSQL connection a thread).
WEB_WORKERS = 1
WEB_THREADS = 4
# Per Celery worker: pool processes (one PostgreSQL connection each). One each: two workers share two cores.
WORKER_CONCURRENCY = 1
BUCKET = "kodori-cluster-blobs"
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class Process:
    """One long-running process of the deployment: ``role`` is web, worker or beat."""

    name: str
    role: str
    cmd: tuple[str, ...]

    @property
    def app_name(self) -> str:
        """Its ``application_name`` in PostgreSQL (``PGAPPNAME``): pg_stat_activity names each connection's
        process."""
        return f"kodori-{self.name}"


def layout(port: int, schedule: Path, bin_dir: Path = BIN) -> list[Process]:
    """The processes of the cluster: two web servers on their own addresses, two workers, one beat."""
    gunicorn, celery = str(bin_dir / "gunicorn"), str(bin_dir / "celery")
    web = (
        "kodori.wsgi --config python:kodori.gunicorn_conf --bind {address}:{port} "
        f"--workers {WEB_WORKERS} --threads {WEB_THREADS} --timeout 300 --access-logfile -"
    )
    worker = (
        f"-A kodori worker --loglevel INFO --concurrency {WORKER_CONCURRENCY} -n {{name}}@%h "
        "--without-gossip --without-mingle"
    )
    return [
        *(
            Process(f"web-{address}", "web", (gunicorn, *web.format(address=address, port=port).split()))
            for address in WEB_ADDRESSES
        ),
        *(Process(name, "worker", (celery, *worker.format(name=name).split())) for name in WORKER_NAMES),
        Process(
            "beat",
            "beat",
            (celery, "-A", "kodori", "beat", "--loglevel", "INFO", "--schedule", str(schedule)),
        ),
    ]


def s3_server(port: int, bin_dir: Path = BIN) -> Process:
    """moto's S3 (and everything else moto serves) as a process of its own on loopback ``port``."""
    return Process("s3", "s3", (str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)))


def describe(port: int = 8000, schedule: Path = Path("<state>/celerybeat-schedule")) -> list[str]:
    """The layout's command lines as docs/operations.md shows them (no venv path): one line per process."""
    return [" ".join([Path(p.cmd[0]).name, *p.cmd[1:]]) for p in layout(port, schedule)]


@dataclass(frozen=True)
class Secrets:
    secret_key: str
    auth_secret: str
    audit_signing_key: str

    @classmethod
    def new(cls) -> Secrets:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        signing = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(
            secret_key=secrets.token_urlsafe(50),
            auth_secret=secrets.token_urlsafe(48),
            audit_signing_key=base64.b64encode(signing).decode(),
        )


def cluster_env(
    base: Mapping[str, str],
    *,
    database_url: str,
    redis_url: str,
    s3_endpoint: str,
    static_root: Path,
    secrets: Secrets,
    bucket: str = BUCKET,
) -> dict[str, str]:
    """Production settings for every process of the cluster, over ``base`` (the emulators' settings, PATH).

    Plain HTTP on loopback: no TLS proxy in front, so no redirect to HTTPS. Blobs go to moto's S3 with the
    standard AWS credential chain (the emulators' identity, which moto's S3 does not check).
    """
    return {
        **base,
        "DJANGO_ENV": "production",
        "DEBUG": "false",
        "ALLOWED_HOSTS": ",".join(WEB_ADDRESSES),
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.secret_key,
        "AUTH_SECRET": secrets.auth_secret,
        "AUDIT_SIGNING_KEY": secrets.audit_signing_key,
        "STATIC_ROOT": str(static_root),
        "BLOB_STORAGE": "s3",
        "BLOB_S3_BUCKET": bucket,
        "BLOB_S3_ENDPOINT_URL": s3_endpoint,
        "BLOB_S3_REGION": S3_REGION,
        # No mail server on this machine: mails (welcome, deletion notices) go to the processes' output.
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
        # Never the user's real AWS configuration.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def env_for(env: Mapping[str, str], process: Process) -> dict[str, str]:
    return {**env, "PGAPPNAME": process.app_name}


def port_free_on_all(port: int, addresses: tuple[str, ...] = WEB_ADDRESSES) -> bool:
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def free_web_port(preferred: int = 0) -> int:
    """A port free on every web address (``preferred`` if it is)."""
    if preferred and port_free_on_all(preferred):
        return preferred
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((WEB_ADDRESSES[0], 0))
            port = int(s.getsockname()[1])
        if port_free_on_all(port):
            return port
    raise RuntimeError(f"no port is free on all of {', '.join(WEB_ADDRESSES)}")


def wait_for_http(url: str, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.1)


def create_bucket(env: Mapping[str, str], bucket: str = BUCKET) -> None:
    """Create the blob bucket in moto's S3, with the credentials the cluster's processes use."""
    import boto3

    s3: Any = boto3.client(
        "s3",
        endpoint_url=env["BLOB_S3_ENDPOINT_URL"],
        region_name=S3_REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=bucket)


def manage(env: Mapping[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], env=dict(env), cwd=BASE_DIR, check=True)


class Cluster(Runner):
    """`make run`'s runner with the cluster's servers, release steps and processes."""

    def __init__(self, state: Path, port: int) -> None:
        super().__init__()
        self.state = state
        self.port = port

    def start(self) -> None:
        from emulators.dev import start_all

        database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
        if not database_url:
            pg = PostgresServer(self.state / "pg", free_port(), new_password())
            self.servers.append(pg)
            database_url = pg.start().url
        if not redis_url:
            redis = RedisServer(self.state / "redis", free_port(), new_password())
            self.servers.append(redis)
            redis_url = redis.start().url
        print("Starting the AWS, Azure and GCP KMS emulators and moto's S3 ...")
        self.emulators = start_all(self.state / "emulators", fixed_ports=False)
        s3_port = free_port()
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        env = cluster_env(
            {**os.environ, **self.emulators.env},
            database_url=database_url,
            redis_url=redis_url,
            s3_endpoint=s3_endpoint,
            static_root=self.state / "static",
            secrets=Secrets.new(),
        )
        self.spawn("moto's S3 server", list(s3_server(s3_port).cmd), env)
        wait_for_http(f"{s3_endpoint}/moto-api/", 60)
        create_bucket(env)
        password = "demo-" + secrets.token_urlsafe(9)
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput", "--verbosity", "0")
        manage(env, "seed_demo", "--password", password)
        # The demo tenants' AWS keys and roles in the emulator: a development command (emulators app).
        dev_env = {**env, "DJANGO_ENV": "development", "KODORI_STATE_DIR": str(self.state)}
        manage(dev_env, "emulator_demo", "--state-dir", str(self.state / "emulators"))
        for process in layout(self.port, self.state / "celerybeat-schedule"):
            self.spawn(process.name, list(process.cmd), env_for(env, process))
        urls = "  ".join(f"http://{address}:{self.port}/" for address in WEB_ADDRESSES)
        print(
            f"\nKodori runs on {urls}\n  sign in as owner@acme.test (or any demo user) with {password}\n"
            f"  PostgreSQL {database_url.rsplit('@', 1)[-1]}, Redis {redis_url.rsplit('@', 1)[-1]}, "
            f"S3 {s3_endpoint} (bucket {BUCKET})\n  Ctrl-C stops everything.\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kodori.devtools.cluster", description="Kodori on two machines"
    )
    parser.add_argument("--port", type=int, default=8000, help="the web servers' port on both addresses")
    parser.add_argument("--print-layout", action="store_true", help="print the processes' commands and exit")
    args = parser.parse_args(argv)
    if args.print_layout:
        print("\n".join(describe(args.port)))
        return 0
    state = Path(tempfile.mkdtemp(prefix="kodori-cluster-"))
    cluster = Cluster(state, free_web_port(args.port))
    # While it starts, Ctrl-C interrupts; once everything runs, it only asks the supervising loop to stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster.start()
        signal.signal(signal.SIGINT, cluster._request_stop)
        signal.signal(signal.SIGTERM, cluster._request_stop)
        while not cluster.stop_requested:
            cluster.supervise(time.monotonic())
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    except (ServerUnavailable, OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"The cluster did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
