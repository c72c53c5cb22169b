"""App configuration for blobs: connects the receivers of tenants' signals."""

from __future__ import annotations

from django.apps import AppConfig


class BlobsConfig(AppConfig):
    name = "blobs"
    verbose_name = "Blobs"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (importing connects them)
