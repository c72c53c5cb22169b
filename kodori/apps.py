"""The project package as a Django app, so that the admin's autodiscovery loads ``kodori/admin.py``.

It has no models: it only composes what the apps provide (the admin site here, URLs in ``kodori/urls.py``).
"""

from __future__ import annotations

from django.apps import AppConfig


class KodoriConfig(AppConfig):
    name = "kodori"
    verbose_name = "Kodori"

    def ready(self) -> None:
        from .guides import checks  # noqa: F401 - registers the guides' system check
