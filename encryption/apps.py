"""App configuration for encryption."""

from __future__ import annotations

from django.apps import AppConfig


class EncryptionConfig(AppConfig):
    name = "encryption"
    verbose_name = "Encryption"
