"""App configuration for audit: connects the receivers of tenants' signals and the settings checks, and, in
the test environment only, the test database's TRUNCATE door (``audit.truncate_bypass``)."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (importing connects them)

        if settings.DJANGO_ENV == "test":
            from .truncate_bypass import install_for_tests

            post_migrate.connect(install_for_tests, sender=self, dispatch_uid="audit-test-truncate-bypass")
