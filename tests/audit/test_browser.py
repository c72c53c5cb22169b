"""In a real browser (Debian's Chromium, Playwright): an admin filters key custody and sees the chip."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from django.test import Client

from audit import payloads, services
from audit.models import EventType
from tenants.models import Tenant

from .conftest import ARN, AZURE_URL, GCP_PATH

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_an_admin_filters_key_custody_and_sees_the_rotation_chip(
    live_server: Any, admin: Any, owner: Any, tenant: Tenant
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    # Everything the database needs happens before the browser starts (Playwright runs an event loop here).
    services.record(tenant, EventType.TENANT_KMS_REGISTERED, actor=owner, payload=payloads.key_registered(
        key_row_id=1, provider="customer_kms_aws", key_id=ARN))  # fmt: skip
    services.record(tenant, EventType.BLOB_UPLOADED, actor=owner, payload=payloads.blob_uploaded(
        blob_id=1, name="plan.pdf", size=10))  # fmt: skip
    services.record(
        tenant,
        EventType.TENANT_KMS_ROTATED,
        actor=admin,
        payload=payloads.key_rotated(
            from_provider="customer_kms_aws",
            from_key_id=ARN,
            to_provider="customer_kms_gcp",
            to_key_id=GCP_PATH,
        ),
    )
    disabled = payloads.key_disabled(
        key_row_id=1, previous_status="retired", provider="customer_kms_azure", key_id=AZURE_URL
    )
    services.record(tenant, EventType.TENANT_KMS_DISABLED, actor=admin, payload=disabled)
    client = Client()
    client.force_login(admin)
    session = client.cookies["sessionid"].value

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
            page = context.new_page()
            page.goto(f"{live_server.url}/")
            page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit", exact=True).click()
            page.wait_for_url("**/audit")
            assert page.locator(".audit-badge").inner_text().startswith("verified through #4 at ")
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
        finally:
            browser.close()
