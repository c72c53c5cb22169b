"""Deployment-wide tasks: the health ping that proves a worker is alive, and component heartbeats."""

from __future__ import annotations

import socket

from celery import shared_task
from django.utils import timezone

from kodori import health


@shared_task(name="kodori.tasks.ping", acks_late=False)
def ping() -> dict[str, str]:
    """Answer from a live worker; the caller learns which host and process took it."""
    return {"pong": "ok", "hostname": socket.gethostname(), "at": timezone.now().isoformat()}


@shared_task(name="kodori.tasks.record_heartbeat", acks_late=False)
def record_heartbeat(component: str = "worker") -> str:
    """Note that the worker running this, and ``component`` that sent it (e.g. beat), were alive just now."""
    health.record_heartbeat("worker")
    if component != "worker":
        health.record_heartbeat(component)
    return component
