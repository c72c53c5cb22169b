"""In Chromium, with a real Celery worker and the local cloud emulators: after a rotation from a GCP key to
an Azure key, 20,000 files still depend on the retired GCP key; the owner starts a re-wrap on /encryption,
watches it run, and the retired key ends "no longer referenced — safe to delete from your KMS". Screenshots
as in test_encryption.py (``KODORI_SCREENSHOT_DIR=docs/screenshots`` refreshes the committed set)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from emulators.dev import DevEmulators
from encryption import aead, keyring, services
from encryption.format.envelope import FORMAT_VERSION
from encryption.models import DataKey, RewrapJob, RewrapStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.browser.test_encryption import row_of, shot
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FILES = 20_000


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 100 for the worker started after this, so the walk lasts long enough to be seen running."""
    monkeypatch.setenv("KODORI_REWRAP_BATCH_SIZE", "100")


def activate(
    tenant: Tenant, owner: Any, method: WrapMethod, key_id: str, config: dict[str, str]
) -> TenantKey:
    key = services.register_key(tenant, method, key_id, config, actor=owner)
    return services.verify_key(key.pk)


def many_data_keys(tenant: Tenant, n: int) -> dict[uuid.UUID, bytes]:
    """``n`` real data keys under the tenant's active version, inserted in bulk (uploads would be slow)."""
    tkv = keyring.active_tkv(tenant)
    key = keyring.tkv_key(tkv)
    deks = {uuid.uuid4(): os.urandom(32) for _ in range(n)}
    DataKey.objects.bulk_create(
        [
            DataKey(
                tenant=tenant,
                blob_id=blob_id,
                tkv=tkv,
                wrapped_dek=aead.seal(key, dek, keyring.dek_aad(tenant.pk, blob_id, tkv.pk, FORMAT_VERSION)),
                format_version=FORMAT_VERSION,
            )
            for blob_id, dek in deks.items()
        ],
        batch_size=5_000,
    )
    return deks


def test_an_owner_re_wraps_so_the_retired_key_can_be_deleted(
    clouds: DevEmulators,
    small_batches: None,
    worker_process: Any,
    live_server: Any,
    page: Any,
    owner: Any,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    gcp_key = clouds.env["KODORI_EMULATOR_GCP_KEY"]
    gcp = activate(tenant, owner, WrapMethod.CUSTOMER_KMS_GCP, gcp_key, {})
    deks = many_data_keys(tenant, FILES)
    azure_url = (
        "https://kodori-demo.vault.azure.net/keys/"
        + clouds.env["KODORI_EMULATOR_AZURE_KEY_ID"].split("/keys/")[1]
    )
    azure = activate(
        tenant,
        owner,
        WrapMethod.CUSTOMER_KMS_AZURE,
        azure_url,
        {"directory_id": clouds.env["KODORI_EMULATOR_AZURE_DIRECTORY_ID"]},
    )
    assert (gcp.status, azure.status) == ("active", "active")
    keyring.cache.clear()

    base = live_server.url
    sign_in(page, base, "owner@acme.test")
    page.goto(f"{base}/encryption")
    assert row_of(page, gcp_key[-12:]).get_by_text("20,000 files still depend on it").is_visible()
    page.get_by_role("button", name="Re-wrap 20,000 data keys to the active key").click()
    page.wait_for_url(f"{base}/encryption#rewrap")
    card = page.locator("#rewrap")
    assert card.locator("progress").count() == 1
    if card.get_by_text("Running", exact=True).count():
        shot(page, "7-rewrap-running", tmp_path)
    # The card polls while the job runs and reloads the page once it has finished.
    card.get_by_text("Completed", exact=True).wait_for(timeout=90_000)
    page.get_by_text("No longer referenced — safe to delete from your KMS").wait_for()
    assert "20,000 of 20,000" in card.inner_text()
    shot(page, "8-rewrap-completed", tmp_path)

    job = RewrapJob.objects.get(tenant=tenant)
    assert job.status == RewrapStatus.COMPLETED and job.done == FILES and job.started_by == owner
    assert not DataKey.objects.filter(tenant=tenant, tkv__kek=gcp).exists()
    keyring.cache.clear()
    for blob_id in list(deks)[:: FILES // 200]:
        assert keyring.open_data_key(tenant, blob_id) == deks[blob_id]

    page.goto(f"{base}/audit?types=rewrap.*")
    page.get_by_text("Re-wrap of 20000 data keys").wait_for()
    page.get_by_text("completed: 20000 data keys").wait_for()
