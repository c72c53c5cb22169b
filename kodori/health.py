"""Liveness of the parts Kodori needs: the database, Redis, and the Celery worker and scheduler, and the
``/healthz`` view that reports it.

Heartbeats live in Redis (not the database) so that a health check never writes to PostgreSQL.
"""

from __future__ import annotations

import time
from functools import cache

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

HEARTBEAT_KEY = "kodori:heartbeat:{component}"
HEARTBEAT_TTL_SECONDS = 24 * 3600


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def record_heartbeat(component: str) -> None:
    _redis().set(HEARTBEAT_KEY.format(component=component), str(time.time()), ex=HEARTBEAT_TTL_SECONDS)


def heartbeat_age(component: str) -> float | None:
    """Seconds since ``component`` last reported, or None when it never did."""
    raw = _redis().get(HEARTBEAT_KEY.format(component=component))
    return None if raw is None else max(0.0, time.time() - float(raw))


def check() -> dict[str, object]:
    """One line per dependency: ``ok`` or what is wrong. Never raises."""
    report: dict[str, object] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = "ok"
    except Exception as exc:
        report["database"] = f"unavailable: {type(exc).__name__}"
    try:
        _redis().ping()
        report["redis"] = "ok"
        for component in ("worker", "beat"):
            age = heartbeat_age(component)
            report[component] = "never seen" if age is None else f"seen {age:.0f}s ago"
    except Exception as exc:
        report["redis"] = f"unavailable: {type(exc).__name__}"
    return report


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Unauthenticated liveness for load balancers: database and Redis, plus worker and beat heartbeats."""
    report = check()
    healthy = report.get("database") == "ok" and report.get("redis") == "ok"
    return JsonResponse(report, status=200 if healthy else 503)
