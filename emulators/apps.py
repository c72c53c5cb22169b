"""Django app configuration, so that `manage.py run_emulators` exists outside production."""

from __future__ import annotations

from django.apps import AppConfig


class EmulatorsConfig(AppConfig):
    name = "emulators"
    verbose_name = "Local cloud KMS emulators (development)"
