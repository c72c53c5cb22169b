"""Starts a private PostgreSQL and Redis before Django reads its settings, and stops them at the end.

Loaded with ``-p kodori.testing.pytest_plugin`` (pyproject's ``addopts``). Its hook is a wrapper around
``pytest_load_initial_conftests`` so it runs before pytest-django imports the settings. Set
``KODORI_TEST_DATABASE_URL`` and ``KODORI_TEST_REDIS_URL`` to use servers of your own instead; SQLite is never
used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from kodori.devtools.servers import PostgresServer, RedisServer, ServerUnavailable, free_port, new_password
from kodori.testing import network


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: Any, args: list[str]
) -> Generator[None]:
    os.environ["DJANGO_ENV"] = "test"
    # No test may reach beyond this machine (issue 5: enforce it, not just promise it).
    network.install()
    database_url = os.environ.get("KODORI_TEST_DATABASE_URL")
    redis_url = os.environ.get("KODORI_TEST_REDIS_URL")
    if not (database_url and redis_url):
        root = Path(tempfile.mkdtemp(prefix="kodori-test-"))
        early_config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
        try:
            if not database_url:
                pg = PostgresServer(root / "pg", free_port(), new_password(), fast_unsafe=True).start()
                early_config.add_cleanup(pg.stop)
                database_url = pg.url
            if not redis_url:
                rd = RedisServer(root / "redis", free_port(), new_password()).start()
                early_config.add_cleanup(rd.stop)
                redis_url = rd.url
        except ServerUnavailable as exc:
            raise pytest.UsageError(f"Cannot start the test servers: {exc}") from exc
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    # Blobs written by tests land in a throwaway directory, never in the developer's .kodori/.
    state = Path(tempfile.mkdtemp(prefix="kodori-test-state-"))
    early_config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))
    os.environ["KODORI_STATE_DIR"] = str(state)
    return (yield)
