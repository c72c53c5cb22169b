"""Queueing the encryption app's Celery tasks from the code that decides to run them, after commit.

Tasks are sent by name, so the custody verbs and the walk need not import ``encryption.tasks`` (which imports
them): the app's modules form no import cycle. Each helper queues its task when the surrounding transaction
commits (``transaction.on_commit``), never for a change that rolled back; outside a transaction, at once.
Arguments are ids only, never key material.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def _after_commit(name: str, *args: object) -> None:
    transaction.on_commit(lambda: current_app.send_task(name, args=list(args)))


def verify_key(key_pk: int) -> None:
    _after_commit("encryption.tasks.verify_key", key_pk)


def run_rewrap(job_pk: int) -> None:
    _after_commit("encryption.tasks.run_rewrap", job_pk)
