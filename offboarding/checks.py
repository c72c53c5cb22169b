"""System checks: the demo-only short deletion window must never reach production."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register(deploy=True)
def short_window_not_in_production(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if getattr(settings, "PRODUCTION", False) and int(settings.TENANT_DELETION_SHORT_WINDOW_SECONDS or 0) > 0:
        return [
            Error(
                "TENANT_DELETION_SHORT_WINDOW_SECONDS is set in production: scheduled deletions would fall "
                "due in seconds instead of 7-30 days.",
                hint="Unset it; it is for development and demos only.",
                id="offboarding.E001",
            )
        ]
    return []
