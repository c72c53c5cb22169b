"""Who may reach each URL of the encryption app."""

from __future__ import annotations

from kodori.testing.access import Route, expect

ROUTES = [
    # Owners and admins; the outsider sees their own tenant's page.
    Route("encryption:index", expect(403, anonymous=302, owner=200, admin=200, outsider=200)),
]
