"""App configuration for audit: connects the receivers of tenants' signals and the settings checks."""

from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (importing connects them)
