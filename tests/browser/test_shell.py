"""In a real browser: sign in, see the navigation, switch tenant, sign out."""

from __future__ import annotations

from typing import Any

import pytest

from tenants.models import Membership, Role, Tenant
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page: Any, base: str, email: str) -> None:
    page.goto(f"{base}/")
    assert "/accounts/login/" in page.url
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def test_an_owner_signs_in_sees_the_navigation_and_switches_tenant(
    live_server: Any, page: Any, owner: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    Membership.objects.create(user=owner, tenant=other_tenant, role=Role.VIEWER)
    base = live_server.url
    sign_in(page, base, "owner@acme.test")

    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Members").is_visible()
    assert page.get_by_role("heading", level=1).inner_text() == "Acme Corp"

    # The switcher submits itself on change (kodori.js); a viewer in Globex has no Members link.
    page.get_by_label("Tenant").select_option("globex")
    page.wait_for_load_state("load")
    page.get_by_text("Switched to Globex.").wait_for()
    assert page.get_by_role("heading", level=1).inner_text() == "Globex"
    assert nav.get_by_role("link", name="Members").count() == 0

    page.locator("summary").click()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/accounts/login/")


def test_a_viewer_is_refused_the_members_page(live_server: Any, page: Any, viewer: Any) -> None:
    sign_in(page, live_server.url, "viewer@acme.test")
    response = page.goto(f"{live_server.url}/members")
    assert response.status == 403
    assert page.get_by_role("heading", name="You can't do that here").is_visible()
