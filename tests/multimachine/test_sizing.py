"""What each process of the cluster holds in PostgreSQL and Redis, measured from outside while the cluster's
tests run (``support.Sampler``) and under 2 x threads concurrent downloads; docs/operations.md, "Deployment",
quotes these figures (``pytest -s`` prints them)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from kodori.devtools import cluster
from tenants.models import Tenant
from tests.blobs.support import LiveApi, make_token, pattern
from tests.encryption.support import wait_for
from tests.multimachine.conftest import Cluster
from tests.multimachine.support import MIB, api, fetch, redis_inventory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_each_process_holds_at_most_one_database_connection_per_thread(
    whole: Cluster, tenant: Tenant, member: Any
) -> None:
    token = make_token(member)
    servers = [api(whole.web_a, whole.port, token), api(whole.web_b, whole.port, token)]
    data = pattern(4 * MIB)
    status, created = servers[0].upload("load.bin", data, len(data))
    assert status == 201
    # Both workers' pool processes open their connection; the web servers serve 2 x threads downloads at once.
    results = [whole.celery.send_task("blobs.tasks.sweep_stale_uploads") for _ in cluster.WORKER_NAMES * 2]
    errors: list[str] = []

    def download_for(seconds: float, server: LiveApi) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            code, body = fetch(server, created["id"])
            if code != 200 or body != data:
                errors.append(f"{server.host}: {code}")

    start = whole.sampler.snapshot().samples
    threads = [
        threading.Thread(target=download_for, args=(4.0, servers[i % 2]))
        for i in range(2 * cluster.WEB_THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for result in results:
        result.get(timeout=60)
    wait_for("samples under load", lambda: whole.sampler.snapshot().samples >= start + 4, timeout=30)
    assert errors == []

    f = whole.sampler.snapshot()
    for web in (whole.web_a, whole.web_b):
        assert 1 <= f.pg_by_process[f"{web.name} child"] <= cluster.WEB_THREADS, f.pg_by_process
        assert f.pg_by_process.get(f"{web.name} main", 0) == 0  # gunicorn's arbiter never connects
    for name in cluster.WORKER_NAMES:
        assert f.pg_by_process.get(f"{name} child", 0) <= cluster.WORKER_CONCURRENCY, f.pg_by_process
    assert f.pg_by_process.get("beat main", 0) == 0
    print(  # the figures docs/operations.md quotes (pytest -s shows them)
        "\nmultimachine figures:",
        json.dumps(
            {
                "samples": f.samples,
                "pg_connections_per_os_process": dict(sorted(f.pg_by_process.items())),
                "pg_connections_per_application_name": dict(sorted(f.pg_by_app_name.items())),
                "redis_connections_per_os_process": dict(sorted(f.redis_by_process.items())),
                "advisory_locks_max": f.advisory_locks,
                **whole.notes,
                "redis_keys_now": redis_inventory(whole.env["REDIS_URL"]),
            },
            indent=1,
        ),
    )
