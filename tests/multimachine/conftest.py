"""One cluster for the package's tests: ``kodori.devtools.cluster``'s layout (two gunicorn servers on
127.0.0.2 and 127.0.0.3, two Celery workers, beat) with its production settings, on the test suite's
PostgreSQL (the test database), a Redis of its own, moto's S3 server as a process, and the KMS emulators in
this process.

Differences from the script, on purpose: the test database is migrated by pytest-django; the test process
shares ``AUTH_SECRET`` with the cluster (it seeds data keys under kodori-managed keys and checks them); the
re-wrap and sweeper settings are short so that a walk can be interrupted and a cut-off upload swept in
seconds. The Redis is the cluster's own (not the suite's) so that a test can restart it empty; the tests
reach the workers through ``Cluster.celery``, a Celery app on that Redis.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from celery import Celery
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import override_settings

from kodori.devtools import cluster
from kodori.devtools.run import BASE_DIR
from kodori.devtools.servers import RedisServer, free_port, new_password
from tests.conftest import PASSWORD, subprocess_env
from tests.multimachine.support import Processes, Sampler, address_of
from tests.s3 import s3_client

# The walk in small batches and short slices (so a kill lands mid-walk and the survivor takes over within a
# second), a watchdog that notices a dead worker's walk within ~3 s, and uploads stale after 3 s (the sweeper
# runs only when a test sends its task). Parts of 5 MiB (S3's minimum) reach S3 early in an upload. No
# scheduled key probe while the tests run: they count the calls each server makes to AWS KMS.
TEST_SETTINGS = {
    "KODORI_REVERIFY_INTERVAL_SECONDS": "86400",
    "KODORI_REWRAP_BATCH_SIZE": "500",
    "KODORI_REWRAP_SLICE_SECONDS": "1",
    "KODORI_REWRAP_STALL_SECONDS": "3",
    "KODORI_REWRAP_WATCHDOG_SECONDS": "1",
    "BLOB_STALE_UPLOAD_SECONDS": "3",
    "BLOB_S3_PART_SIZE": str(5 * 1024 * 1024),
}


@dataclass
class Cluster:
    processes: Processes
    port: int
    env: dict[str, str]
    s3: Any  # boto3 client of moto's S3
    bucket: str
    sampler: Sampler
    redis: RedisServer
    celery: Celery  # on the cluster's Redis: send tasks to its workers, get their results, ping them
    notes: dict[str, Any] = field(default_factory=dict)  # figures a test measured, for test_sizing to print

    @property
    def web_a(self) -> cluster.Process:
        return self.processes.specs[f"web-{cluster.WEB_ADDRESSES[0]}"]

    @property
    def web_b(self) -> cluster.Process:
        return self.processes.specs[f"web-{cluster.WEB_ADDRESSES[1]}"]

    def url(self, web: cluster.Process) -> str:
        return f"http://{address_of(web)}:{self.port}"

    def restart_redis(self) -> None:
        """Kill Redis and start it again on its port, empty (no persistence): every queued and unacknowledged
        message, every result and every Kodori key in it is gone."""
        assert self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait()
        self.redis.start()

    def object_keys(self) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])]


@pytest.fixture(scope="package")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The AWS, Azure and GCP KMS emulators, with this process's settings pointed at them too."""
    from emulators.dev import start_all
    from encryption import keyring
    from encryption.providers import aws as aws_provider

    running = start_all(tmp_path_factory.mktemp("emulators"), fixed_ports=False)
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_CONFIG_FILE", os.devnull)
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in running.env.items():
        patch.setenv(name, value)
    overrides = override_settings(**{k: v for k, v in running.env.items() if k.startswith("KODORI_")})
    overrides.enable()
    keyring.cache.clear()
    aws_provider.reset_clients()
    try:
        yield running
    finally:
        overrides.disable()
        patch.undo()
        keyring.cache.clear()
        aws_provider.reset_clients()
        running.stop()


@pytest.fixture(scope="package")
def running_cluster(
    django_db_setup: None, kms: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster")
    port = cluster.free_web_port()
    s3_port = free_port()
    redis = RedisServer(state / "redis", free_port(), new_password()).start()
    # Not the current app: Kodori's code in this process, and the tests after these, keep the suite's own.
    app = Celery("kodori-cluster-client", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=redis.url, result_backend=redis.url)
    base = {**subprocess_env(), **kms.env, **TEST_SETTINGS}
    env = cluster.cluster_env(
        base,
        database_url=base["DATABASE_URL"],
        redis_url=redis.url,
        s3_endpoint=f"http://127.0.0.1:{s3_port}",
        static_root=state / "static",
        secrets=cluster.Secrets(
            secret_key=settings.SECRET_KEY,
            auth_secret=settings.AUTH_SECRET,
            audit_signing_key=cluster.Secrets.new().audit_signing_key,
        ),
    )
    specs = [cluster.s3_server(s3_port), *cluster.layout(port, state / "celerybeat-schedule")]
    processes = Processes(specs, env, state)
    db = urlsplit(env["DATABASE_URL"])
    sampler = Sampler(processes, env["DATABASE_URL"], db.port or 5432, redis.port)
    try:
        for spec in specs:
            if spec.role != "web":
                processes.start(spec.name)
        cluster.wait_for_http(f"http://127.0.0.1:{s3_port}/moto-api/", 60)
        cluster.create_bucket(env)
        # The release step before the web servers start: WhiteNoise indexes STATIC_ROOT when it starts.
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            env=env,
            cwd=BASE_DIR,
            check=True,
        )
        for spec in specs:
            if spec.role == "web":
                processes.start(spec.name)
        processes.wait_ready(list(processes.specs), port, app)
        sampler.start()
        s3 = s3_client(env["BLOB_S3_ENDPOINT_URL"])
        yield Cluster(processes, port, env, s3, cluster.BUCKET, sampler, redis, app)
    finally:
        sampler.stopping.set()
        if sampler.is_alive():
            sampler.join(timeout=10)
        processes.stop_all()
        app.close()
        redis.stop()


@pytest.fixture
def whole(running_cluster: Cluster, transactional_db: None) -> Cluster:
    """The cluster with every process running (a test that killed one started it again; if it failed first,
    this does)."""
    dead = [n for n, p in running_cluster.processes.running.items() if p.poll() is not None]
    for name in dead:
        running_cluster.processes.start(name)
    if dead:
        running_cluster.processes.wait_ready(dead, running_cluster.port, running_cluster.celery)
    return running_cluster


@functools.cache
def _production_hash() -> str:
    return PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())


def cluster_password(user: Any) -> Any:
    """Give ``user`` a password hash the cluster can check: the test settings hash with MD5, which production
    settings do not accept. (One hash for every user: PBKDF2 at full strength takes half a second.)"""
    user.password = _production_hash()
    user.save(update_fields=["password"])
    return user
