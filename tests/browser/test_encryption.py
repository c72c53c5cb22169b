"""In Chromium, with a real Celery worker and the local cloud emulators: an owner registers an AWS key,
watches it go pending → active, rotates to a GCP key, disables the retired AWS key, then rotates to an Azure
key. Screenshots of each
state are saved; ``KODORI_SCREENSHOT_DIR=docs/screenshots`` refreshes the committed set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from emulators.dev import DevEmulators
from encryption import services
from encryption.models import KeyStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.browser.test_custody import row_of
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def shot(page: Any, name: str, tmp_path: Path) -> None:
    target = Path(os.environ.get("KODORI_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"), full_page=True)


def test_an_owner_registers_rotates_and_disables_keys(
    clouds: DevEmulators,
    worker_process: Any,
    live_server: Any,
    page: Any,
    owner: Any,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    assert clouds.aws is not None
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    key_arn = clouds.aws.create_key(alias="alias/acme-kodori")
    role_arn = clouds.aws.create_tenant_role("acme-kodori", services.external_id_for(tenant), key_arn)
    gcp_key = clouds.env["KODORI_EMULATOR_GCP_KEY"]
    base = live_server.url
    sign_in(page, base, "owner@acme.test")

    page.goto(f"{base}/encryption")
    shot(page, "1-kodori-managed", tmp_path)
    page.get_by_role("link", name="AWS KMS").first.click()
    assert services.external_id_for(tenant) in page.content()
    page.get_by_label("KMS key ARN or alias ARN").fill(key_arn)
    page.get_by_label("Role ARN Kodori assumes").fill(role_arn)
    page.get_by_role("button", name="Register and verify").click()
    page.wait_for_url(f"{base}/encryption")
    shot(page, "2-aws-pending", tmp_path)
    row_of(page, key_arn[-12:]).get_by_text("Active", exact=True).wait_for(timeout=30_000)
    shot(page, "3-aws-active", tmp_path)

    page.goto(f"{base}/encryption/register/gcp")
    page.get_by_label("CryptoKey resource name").fill(gcp_key)
    page.get_by_role("button", name="Register and verify").click()
    page.wait_for_url(f"{base}/encryption")
    row_of(page, gcp_key[-12:]).get_by_text("Active", exact=True).wait_for(timeout=30_000)
    assert row_of(page, key_arn[-12:]).get_by_text("Retired", exact=True).is_visible()
    shot(page, "4-rotated-to-gcp", tmp_path)

    row_of(page, key_arn[-12:]).get_by_role("link", name="Disable").click()
    page.get_by_role("button", name="Disable the key").click()
    page.wait_for_url(f"{base}/encryption")
    row_of(page, key_arn[-12:]).get_by_text("Disabled", exact=True).wait_for()
    shot(page, "5-retired-aws-disabled", tmp_path)

    # The third cloud: an Azure Key Vault key (the tenant-facing URL names a real vault host; the deployment's
    # emulator setting routes it to the local vault).
    azure_url = (
        "https://kodori-demo.vault.azure.net/keys/"
        + clouds.env["KODORI_EMULATOR_AZURE_KEY_ID"].split("/keys/")[1]
    )
    page.goto(f"{base}/encryption/register/azure")
    page.get_by_label("Key URL").fill(azure_url)
    page.get_by_label("Directory (tenant) id").fill(clouds.env["KODORI_EMULATOR_AZURE_DIRECTORY_ID"])
    page.get_by_role("button", name="Register and verify").click()
    page.wait_for_url(f"{base}/encryption")
    row_of(page, azure_url[-12:]).get_by_text("Active", exact=True).wait_for(timeout=30_000)

    statuses = dict(TenantKey.objects.filter(tenant=tenant).values_list("wrap_method", "status"))
    assert statuses[WrapMethod.CUSTOMER_KMS_AWS] == KeyStatus.DISABLED
    assert statuses[WrapMethod.CUSTOMER_KMS_GCP] == KeyStatus.RETIRED
    assert statuses[WrapMethod.CUSTOMER_KMS_AZURE] == KeyStatus.ACTIVE
    tenant.refresh_from_db()
    assert not tenant.is_sealed
    page.goto(f"{base}/audit?types=tenant-kms.*")
    chips = page.locator(".audit-diff-chip").all_inner_texts()
    assert f"aws-kms …{key_arn[-12:]} → gcp-kms …{gcp_key[-12:]}" in chips
    assert f"gcp-kms …{gcp_key[-12:]} → azure-kv …{azure_url[-12:]}" in chips
    shot(page, "6-audit-chip", tmp_path)
