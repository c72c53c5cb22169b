"""System checks: a malformed audit signing key fails ``manage.py check`` instead of the first checkpoint."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from . import signing


@register()
def check_signing_key(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        signing.private_key_bytes()
        signing.trusted_public_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="See docs/audit.md, 'Checkpoints and key rotation'.", id="audit.E001")]
    return []
