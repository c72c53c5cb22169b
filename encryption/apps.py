"""App configuration for encryption."""

from __future__ import annotations

from django.apps import AppConfig


class EncryptionConfig(AppConfig):
    name = "encryption"
    verbose_name = "Encryption"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
