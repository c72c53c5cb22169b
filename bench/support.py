"""Data the Django-side benchmarks build on; the test suite's own helpers stay in tests/."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model


def make_user(email: str, **extra: Any) -> Any:
    """A user the benchmark signs in with ``force_login``: no usable password, so no hashing either."""
    return get_user_model().objects.create_user(username=email, email=email, password=None, **extra)
