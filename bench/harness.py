"""What the Django-side benchmarks share: their PostgreSQL and Redis, Django set up on them, and tearing down
what they started."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


def start_servers(
    root: Path, cleanups: list[Callable[[], None]], *, fast_unsafe: bool = False
) -> tuple[str, str]:
    """The database and Redis URLs: the environment's when both are set, else private servers in ``root``.

    ``fast_unsafe`` runs PostgreSQL without fsync: for benchmarks that do not measure the database's writes.
    """
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if database_url and redis_url:
        return database_url, redis_url
    from kodori.devtools.servers import PostgresServer, RedisServer, free_port, new_password

    if not database_url:
        pg = PostgresServer(root / "pg", free_port(), new_password(), fast_unsafe=fast_unsafe)
        cleanups.append(pg.stop)
        database_url = pg.start().url
    if not redis_url:
        redis = RedisServer(root / "redis", free_port(), new_password())
        cleanups.append(redis.stop)
        redis_url = redis.start().url
    return database_url, redis_url


def django_environment(root: Path, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment Django is set up from: the test settings, on these servers, with state in ``root``."""
    return {
        "DJANGO_ENV": "test",
        "DJANGO_SETTINGS_MODULE": "kodori.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "KODORI_STATE_DIR": str(root / "state"),
    }


def start_django() -> None:
    """``django.setup()`` from the environment, then ``migrate``."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run_cleanups(cleanups: list[Callable[[], None]]) -> None:
    """Undo in reverse order of setup; one failing cleanup does not stop the others."""
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except Exception as exc:  # keep cleaning up the rest
            print(f"cleanup: {exc}", file=sys.stderr)
