"""The Celery application: JSON messages only, late acknowledgement, per-app ``tasks.py`` discovered."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kodori.settings")

app = Celery("kodori")
# Every CELERY_* setting in kodori/settings.py configures the app; there is no other configuration source.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["kodori"])
app.autodiscover_tasks()
