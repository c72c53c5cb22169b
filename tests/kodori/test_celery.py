"""The Celery app: a real worker answers, messages are JSON only, work is acknowledged late."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from kodori import health
from kodori.celery import app
from kodori.tasks import ping, record_heartbeat


def test_a_real_worker_answers_the_health_task(worker_process: Any) -> None:
    result = ping.delay().get(timeout=30)
    assert result["pong"] == "ok"
    assert result["hostname"]


def test_a_beat_heartbeat_proves_beat_and_worker_alive(worker_process: Any) -> None:
    assert record_heartbeat.delay("beat").get(timeout=30) == "beat"
    for component in ("worker", "beat"):
        age = health.heartbeat_age(component)
        assert age is not None and age < 30


def test_the_app_accepts_json_only_and_acks_late() -> None:
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1


def test_the_beat_schedule_names_registered_tasks() -> None:
    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, f"beat schedules unknown task {entry['task']}"


def test_a_pickle_message_is_refused() -> None:
    from kombu.exceptions import ContentDisallowed
    from kombu.serialization import dumps, loads

    content_type, encoding, body = dumps({"x": 1}, serializer="pickle")
    try:
        loads(body, content_type, encoding, accept=app.conf.accept_content)
    except ContentDisallowed:
        return
    raise AssertionError("a pickle payload was accepted")
