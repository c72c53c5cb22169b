"""The first KMS refusal met in use asks for a re-verify of that key at once, once per key across processes.

An upload, a download or a re-wrap that meets access denied, a disabled or a missing key calls
:func:`request_reverify`; the ``encryption.tasks.reverify_key`` task then probes the key, marks it refused
(or seals the tenant, for the active key) and records it, within seconds instead of at the next scheduled
probe. A Redis ``SET NX`` with a short expiry deduplicates the requests of every process: a burst of failing
downloads queues one probe. The task is sent by name, so the key hierarchy need not import the task module.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis  # Celery's Redis transport brings it
from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

# How long one request for a key stands in for every other; the probe itself takes well under this.
DEDUP_SECONDS = 30

_client: Any = None
_client_lock = threading.Lock()


def _redis() -> Any:
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        return _client


def reset() -> None:
    """Forget the Redis client (tests that point REDIS_URL elsewhere)."""
    global _client
    with _client_lock:
        _client = None


def request_reverify(kek_pk: int, trigger: str = "use") -> bool:
    """Queue ``reverify_key(kek_pk)`` unless another process did in the last ``DEDUP_SECONDS``.

    Never raises: the failing operation is already answering its caller with the KMS's error, and the
    scheduled probe catches up if Redis is unreachable too.
    """
    try:
        if not _redis().set(f"kodori:reverify:{kek_pk}", trigger, nx=True, ex=DEDUP_SECONDS):
            return False
        current_app.send_task("encryption.tasks.reverify_key", args=[kek_pk, trigger])
    except Exception:
        logger.warning("could not queue a re-verify of key row %s", kek_pk, exc_info=True)
        return False
    return True
