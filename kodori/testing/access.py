"""The access-matrix vocabulary: each app's tests declare, for every URL it adds, what each role must get.

``tests/test_access_matrix.py`` walks every named URL pattern, fails for any pattern no ``Route`` covers,
and requests each route as anonymous, owner, admin, member, viewer, outsider (the owner of another tenant,
asking for this tenant's objects) and staff (support, in no tenant). Apps list their routes in
``tests/<app>/routes.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("anonymous", "owner", "admin", "member", "viewer", "outsider", "staff")


@dataclass(frozen=True)
class World:
    """What a route's ``kwargs``/``data`` factories may use: tenant ``acme``, its users, and ``globex``."""

    tenant: Any
    other_tenant: Any
    users: dict[str, Any]


@dataclass(frozen=True)
class Route:
    name: str
    expect: dict[str, int]
    method: str = "GET"
    kwargs: Callable[[World], dict[str, Any]] | None = None
    data: Callable[[World], dict[str, Any]] | None = None
    # Extra request headers (e.g. {"HTTP_RANGE": "bytes=0-1"}).
    headers: dict[str, str] = field(default_factory=dict)


def expect(default: int, **overrides: int) -> dict[str, int]:
    """``expect(403, anonymous=302, owner=200, admin=200)``: every role gets ``default`` unless named."""
    unknown = set(overrides) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    return {role: overrides.get(role, default) for role in ROLES}
