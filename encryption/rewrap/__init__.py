"""The re-wrap engine: jobs as custody verbs (``jobs``: start, pause, resume, cancel, and the rules that
refuse them) and the checkpointed walk that moves data keys to the active key version (``walk``, driven by
the ``run_rewrap`` task).

The package re-exports the public API of ``jobs``, so ``from encryption import rewrap`` then
``rewrap.start_rewrap(...)`` reads as before. It does not import ``walk``: import ``encryption.rewrap.walk``
where the walk itself is needed.
"""

from __future__ import annotations

from encryption.rewrap.jobs import (
    RewrapError,
    after_rotation,
    cancel_rewrap,
    live_job,
    pause_rewrap,
    resume_rewrap,
    rewrap_refusal,
    start_rewrap,
)

__all__ = [
    "RewrapError",
    "after_rotation",
    "cancel_rewrap",
    "live_job",
    "pause_rewrap",
    "resume_rewrap",
    "rewrap_refusal",
    "start_rewrap",
]
