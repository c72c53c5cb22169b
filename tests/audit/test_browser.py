"""In a real browser (Debian's Chromium, Playwright): an admin filters key custody and sees the chip.

Playwright's sync API runs an event loop on the thread that starts it. This test drives it from a thread of
its own, so it neither trips Django's async-safety guard here nor collides with the shared session browser
of ``tests/browser`` when both run in one session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from audit import payloads, services
from audit.models import EventType
from kodori.testing.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tenants.models import Tenant

from .conftest import ARN, AZURE_URL, GCP_PATH

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def in_browser(steps: Callable[[Any], None]) -> None:
    """Run ``steps(page)`` in a fresh Chromium on another thread; re-raise what it raised here."""
    from playwright.sync_api import sync_playwright

    failure: list[BaseException] = []

    def run() -> None:
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_context().new_page()
                    page.set_default_timeout(15_000)
                    steps(page)
                finally:
                    browser.close()
        except BaseException as exc:  # handed to the test's thread below
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@pytest.fixture
def key_custody_history(tenant: Tenant, owner: Any, admin: Any) -> None:
    """#1 registered, #2 an upload, #3 a rotation, #4 a key disabled."""
    registered = payloads.key_registered(key_row_id=1, provider="customer_kms_aws", key_id=ARN)
    services.record(tenant, EventType.TENANT_KMS_REGISTERED, actor=owner, payload=registered)
    upload = payloads.blob_uploaded(blob_id=1, name="plan.pdf", size=10)
    services.record(tenant, EventType.BLOB_UPLOADED, actor=owner, payload=upload)
    rotated = payloads.key_rotated(
        from_provider="customer_kms_aws", from_key_id=ARN, to_provider="customer_kms_gcp", to_key_id=GCP_PATH
    )
    services.record(tenant, EventType.TENANT_KMS_ROTATED, actor=admin, payload=rotated)
    disabled = payloads.key_disabled(
        key_row_id=1, previous_status="retired", provider="customer_kms_azure", key_id=AZURE_URL
    )
    services.record(tenant, EventType.TENANT_KMS_DISABLED, actor=admin, payload=disabled)


def test_an_admin_filters_key_custody_and_sees_the_rotation_chip(
    live_server: Any, admin: Any, key_custody_history: None
) -> None:
    require_chromium()
    client = Client()
    client.force_login(admin)
    session = client.cookies["sessionid"].value
    base = live_server.url

    def steps(page: Any) -> None:
        page.context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
        page.goto(f"{base}/")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit", exact=True).click()
        page.wait_for_url("**/audit")
        assert page.locator(".audit-badge").inner_text().startswith("verified through #4 at ")
        assert page.locator("tbody tr").count() == 3  # key custody by default: not the upload
        page.get_by_role("link", name="Show all events").click()
        page.wait_for_url("**/audit?all=1")
        assert page.locator("tbody tr").count() == 4

        page.get_by_label("Event types").fill("tenant-kms.*")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/audit?types=tenant-kms.*")
        assert page.locator("tbody tr").count() == 3
        assert "plan.pdf" not in page.locator("tbody").inner_text()
        chip = page.locator(".audit-diff-chip")
        assert chip.count() == 1
        assert chip.inner_text() == "aws-kms …a1b2c3d4e5f6 → gcp-kms …9f8e7d6c5b4a"

        details = page.locator("tr#event-3 details")
        assert not details.locator("pre").is_visible()
        details.locator("summary").click()
        assert '"toKeyIdSuffix": "9f8e7d6c5b4a"' in details.locator("pre").inner_text()
        assert ARN not in page.content() and GCP_PATH not in page.content()

    in_browser(steps)
