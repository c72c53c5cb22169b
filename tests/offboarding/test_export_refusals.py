"""What refuses an export's download before its first byte: a sealed tenant (503, the seal's reason), a
disabled or revoked key that the part needs (503 naming it), an erasure that has begun (410). While the
deletion is only scheduled, making and downloading exports work.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring
from encryption import services as key_services
from encryption.models import DataKey, TenantKey
from encryption.sealing import Trigger, seal_tenant
from offboarding import erasure
from offboarding.models import DeletionRequest, Export, PartStatus, Via
from offboarding.services import schedule_deletion
from tenants.models import Tenant, TenantState
from tests.blobs.support import bearer, make_token
from tests.conftest import client_for
from tests.encryption import conftest as encryption_fixtures
from tests.encryption.support import active_azure_key, enable_cloud_kms, rotate_kek
from tests.offboarding import export_support
from tests.offboarding.export_support import (
    _unchanged,
    check_files,
    exported_events,
    fetch,
    fresh_part,
    make_export,
    part_url,
    read_archive,
    upload,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = export_support.private_blob_root


# The Azure Key Vault emulator and Kodori's settings for it, as the encryption tests have them.
vault = encryption_fixtures.vault
kodori_app = encryption_fixtures.kodori_app


# --- refusals before any byte ----------------------------------------------------------------------------

SEAL_CAUSE = "Your AWS KMS key denied Decrypt to Kodori's role."


def test_a_sealed_tenant_is_refused_with_the_seal_reason_before_any_byte(tenant: Tenant, owner: Any) -> None:
    upload(owner, tenant, "a.txt", 10)
    client = client_for(owner)
    export_row = make_export(client)
    seal_tenant(tenant, SEAL_CAUSE, trigger=Trigger.USE)

    page = client.get(part_url(export_row, 1))
    assert page.status_code == 503 and not page.streaming
    assert SEAL_CAUSE.replace("'", "&#x27;") in page.content.decode() and page["Retry-After"] == "60"
    api, auth = Client(), bearer(make_token(owner, tenant))
    answer = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 1]), **auth)
    assert answer.status_code == 503 and not answer.streaming
    assert (
        answer.json()["error"]["code"] == "tenant_sealed" and SEAL_CAUSE in answer.json()["error"]["message"]
    )
    _unchanged(export_row, tenant)
    # A new export is refused the same way (it could not be read anyway).
    created = api.post(reverse("offboarding:api_exports"), **auth)
    assert created.status_code == 503 and created.json()["error"]["code"] == "tenant_sealed"
    # The export page says so, and still lists the export.
    index = client.get(reverse("offboarding:export"))
    assert "is sealed:" in index.content.decode() and Export.objects.filter(tenant=tenant).count() == 1


@pytest.mark.usefixtures("kodori_app")
def test_a_disabled_or_revoked_key_that_a_part_needs_is_named_before_any_byte(
    settings: Any, tenant: Tenant, owner: Any, vault: AzureKeyVaultEmulator, tmp_path: Path
) -> None:
    settings.EXPORT_PART_FILES = 2
    enable_cloud_kms(tenant)
    azure = active_azure_key(tenant, vault, "export-old", owner)
    old = [upload(owner, tenant, "a.txt", 100), upload(owner, tenant, "b.txt", 200)]
    rotate_kek(tenant)  # the Azure key retires; its data keys stay under it (no re-wrap has run)
    new = upload(owner, tenant, "c.txt", 300)
    assert DataKey.objects.get(blob_id=old[0].blob.pk).tkv.kek_id == azure.pk
    key_services.disable_key(azure, actor=owner)
    tenant.refresh_from_db()
    assert not tenant.is_sealed  # the active key works: only part 1 needs the disabled one
    client, api, auth = client_for(owner), Client(), bearer(make_token(owner, tenant))
    export_row = make_export(client)
    assert export_row.parts.count() == 2
    label = TenantKey.objects.get(pk=azure.pk).label
    assert "…" in label  # "Azure Key Vault …<suffix>": this key and no other

    page = client.get(part_url(export_row, 1))
    assert page.status_code == 503 and not page.streaming
    assert label in page.content.decode() and "disabled" in page.content.decode()
    answer = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 1]), **auth)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "key_unavailable"
    assert label in answer.json()["error"]["message"] and answer["Retry-After"] == "60"
    _unchanged(export_row, tenant)
    # Part 2 needs only the active key.
    fetch(client, part_url(export_row, 2), tmp_path / "part2.zip")
    check_files(read_archive(tmp_path / "part2.zip", "zip"), [new])

    # Re-enabled in Kodori, but revoked in the customer's vault: refused, naming the key, still before a byte.
    key_services.re_enable_key(TenantKey.objects.get(pk=azure.pk), actor=owner)
    vault.disable_key("export-old")
    keyring.cache.clear()
    answer = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 1]), **auth)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "key_unavailable"
    assert label in answer.json()["error"]["message"]
    assert fresh_part(export_row).downloads == 0
    # Restored in the vault: part 1 downloads whole.
    vault.enable_key("export-old")
    fetch(client, part_url(export_row, 1), tmp_path / "part1.zip")
    check_files(read_archive(tmp_path / "part1.zip", "zip"), old)
    assert fresh_part(export_row).status == PartStatus.COMPLETE


def test_exports_work_while_deletion_is_scheduled_and_stop_once_the_erasure_begins(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, "a.txt", 1000)]
    client, api, auth = client_for(owner), Client(), bearer(make_token(owner, tenant))
    before = make_export(client, "zip")
    deletion = schedule_deletion(tenant, actor=owner, via=Via.OWNER, days=7)
    # The read-only window is the time to export: making and downloading an export both work.
    during = make_export(client, "tar")
    fetch(client, part_url(during, 1), tmp_path / "during.tar")
    check_files(read_archive(tmp_path / "during.tar", "tar"), sent)
    events = len(exported_events(tenant))

    DeletionRequest.objects.filter(pk=deletion.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    assert erasure.destroy_keys(DeletionRequest.objects.get(pk=deletion.pk))
    tenant.refresh_from_db()
    assert tenant.state == TenantState.ERASING

    page = client.get(part_url(before, 1))
    assert page.status_code == 410 and not page.streaming and "being erased" in page.content.decode()
    answer = api.get(reverse("offboarding:api_export_part", args=[before.pk, 1]), **auth)
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "tenant_erased"
    created = api.post(reverse("offboarding:api_exports") + "?format=zip", **auth)
    assert created.status_code == 410 and created.json()["error"]["code"] == "tenant_erased"
    made = client.post(reverse("offboarding:export"), {"format": "zip"})
    assert made.status_code == 410
    assert Export.objects.filter(tenant=tenant).count() == 2
    assert len(exported_events(tenant)) == events
    assert fresh_part(before).downloads == 0
