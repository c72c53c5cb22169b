"""App configuration for offboarding: export, scheduled deletion, erasure (docs/offboarding.md)."""

from __future__ import annotations

from django.apps import AppConfig


class OffboardingConfig(AppConfig):
    name = "offboarding"
    verbose_name = "Offboarding"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (importing registers them)
