"""System check: every guide Kodori links to is readable where ``KODORI_GUIDES_DIR`` points.

The wheel leaves ``docs/`` out, so an installation that runs from it must point the setting at a copy of the
guides; without this check the first visitor of a guide would find a 500 instead of the deployer at start-up.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from .catalogue import GUIDES, guides_dir


@register()
def guides_present(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    directory = guides_dir()
    missing = [guide.filename for guide in GUIDES if not guide.path.is_file()]
    if not missing:
        return []
    return [
        Error(
            f"KODORI_GUIDES_DIR ({directory}) lacks the guides {', '.join(missing)}, served at /guides/.",
            hint="Point KODORI_GUIDES_DIR at the docs/ directory of Kodori's source (not in the wheel).",
            id="kodori.E001",
        )
    ]
