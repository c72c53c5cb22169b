"""Who may reach the guides: everyone, signed in or not (they hold nothing of any tenant)."""

from __future__ import annotations

from kodori.testing.access import Route, expect

ROUTES = [
    Route("guides:index", expect(200)),
    Route("guides:guide", expect(200), kwargs=lambda w: {"slug": "byok-aws"}),
]
