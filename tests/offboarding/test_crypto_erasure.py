"""Crypto-erasure is real, and independent of the customer's KMS: destroying the keys alone empties every
wrapped key and downloads answer 410; a saved copy of a ciphertext object opens with the key captured before
and with nothing the database still holds; a tenant sealed by its revoked customer key is erased without a
KMS call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from blobs.models import Blob
from encryption import aead, keyring, services
from encryption.format import envelope
from encryption.format.errors import EnvelopeError, NotAuthentic
from encryption.models import DataKey, TenantKeyVersion, VersionStatus
from offboarding import certificate, erasure
from offboarding.models import ErasureStep
from tenants.models import Tenant, TenantState
from tests.blobs.support import make_blob, make_token, pattern
from tests.conftest import client_for
from tests.encryption.support import rotate_kek
from tests.offboarding.erasure_support import Objects, certificate_of, rows_left, run_task, schedule_due

pytestmark = pytest.mark.django_db


# --- 2. crypto-erasure is real ------------------------------------------------------------------------------


def test_destroying_the_keys_alone_empties_every_wrapped_key_and_downloads_answer_410(
    tenant: Tenant, owner: Any, member: Any, blob_root: Path
) -> None:
    blobs = [make_blob(member, pattern(30_000, seed=n), name=f"{n}.bin") for n in range(2)]
    rotate_kek(tenant)
    blobs.append(make_blob(member, pattern(30_000, seed=2), name="2.bin"))
    secret = make_token(member)
    assert client_for(member).get(reverse("blobs:download", args=[blobs[0].pk])).status_code == 200
    deletion = schedule_due(tenant, owner)
    stored_before = sorted(p.name for p in blob_root.rglob("*.kdrb"))

    assert erasure.destroy_keys(deletion) is True

    data_keys = list(DataKey.objects.filter(tenant=tenant).values_list("wrapped_dek", flat=True))
    versions = list(TenantKeyVersion.objects.filter(tenant=tenant).values_list("wrapped_key", "status"))
    assert len(data_keys) == 3 and len(versions) == 2  # the rows are all there ...
    assert [bytes(w) for w in data_keys] == [b""] * 3  # ... with nothing in them
    assert [(bytes(w), s) for w, s in versions] == [(b"", VersionStatus.DESTROYED)] * 2
    # Nothing else was removed yet: step 1 is the keys, and only the keys.
    assert sorted(p.name for p in blob_root.rglob("*.kdrb")) == stored_before
    assert Blob.objects.filter(tenant=tenant).count() == 3
    tenant.refresh_from_db()
    deletion.refresh_from_db()
    assert tenant.state == TenantState.ERASING and deletion.step == ErasureStep.KEYS_DESTROYED
    response = client_for(member).get(reverse("blobs:download", args=[blobs[0].pk]))
    assert response.status_code == 410
    api = client_for(member).get(f"/api/v1/blobs/{blobs[2].pk}", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.status_code == 410 and api.json()["error"]["code"] == "tenant_erased"
    keyring.cache.clear()
    with pytest.raises(keyring.KeyUnavailable, match="destroyed"):
        keyring.open_data_key(tenant, blobs[1].pk)


def test_a_saved_copy_of_an_object_opens_with_the_old_key_and_with_nothing_the_database_still_holds(
    tenant: Tenant,
    owner: Any,
    member: Any,
    other_tenant: Tenant,
    outsider: Any,
    objects: Objects,
    django_capture_on_commit_callbacks: Any,
) -> None:
    data = pattern(150_000, seed=5)
    blob = make_blob(member, data, name="secret.pdf")
    for n in range(3):  # another tenant's keys stay in the database: none of them may open the copy either
        make_blob(outsider, pattern(1000, seed=20 + n), name=f"other-{n}.bin", tenant=other_tenant)
    rotate_kek(other_tenant)
    make_blob(outsider, pattern(1000, seed=30), name="other-new.bin", tenant=other_tenant)
    # What survives the erasure outside Kodori: an object version, and a database backup's wrapped DEK.
    copy = objects.read(blob.storage_key)
    backed_up = DataKey.objects.get(blob_id=blob.pk)
    backed_up_wrapped, backed_up_aad = (
        bytes(backed_up.wrapped_dek),
        keyring.dek_aad(tenant.pk, blob.pk, backed_up.tkv_id, backed_up.format_version),
    )
    context = envelope.blob_context(tenant.pk, blob.pk)
    dek = keyring.open_data_key(tenant, blob.pk)
    assert envelope.decrypt(dek, context, copy) == data
    schedule_due(tenant, owner)

    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    assert objects.under(f"tenants/{tenant.pk}/") == {}
    assert not DataKey.objects.filter(blob_id=blob.pk).exists()
    with pytest.raises(DataKey.DoesNotExist):
        keyring.open_data_key(tenant, blob.pk)
    # Every key the database can still produce: each data key opened under its own version, as a download
    # opens it, and each version's key. None is the tenant's, and none opens the copy or the backed-up DEK.
    keyring.cache.clear()
    rows = list(DataKey.objects.select_related("tkv").order_by("pk"))
    version_rows = list(TenantKeyVersion.objects.select_related("kek").order_by("pk"))
    assert {r.tenant_id for r in rows} == {r.tenant_id for r in version_rows} == {other_tenant.pk}
    deks = [keyring.open_data_key(other_tenant, r.blob_id) for r in rows]
    tkv_keys = [keyring.tkv_key(v) for v in version_rows if bytes(v.wrapped_key)]
    assert len(deks) == 4 and len(tkv_keys) == 2
    raw = [bytes(r.wrapped_dek)[:32] for r in rows] + [bytes(v.wrapped_key)[:32] for v in version_rows]
    for candidate in [*deks, *tkv_keys, *raw]:
        with pytest.raises(EnvelopeError):
            envelope.decrypt(candidate, context, copy)
    for tkv_key in tkv_keys:
        with pytest.raises(NotAuthentic):
            aead.open(tkv_key, backed_up_wrapped, backed_up_aad)
    # The copy itself is intact: the key captured before still opens it, so the refusals above are the keys'.
    assert envelope.decrypt(dek, context, copy) == data


# --- 3. independent of the customer's KMS -------------------------------------------------------------------


def test_a_tenant_sealed_by_its_revoked_customer_key_is_erased_without_a_kms_call(
    clouds: Any,
    tenant: Tenant,
    owner: Any,
    member: Any,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from encryption.health import probe_key
    from encryption.models import KeyStatus, WrapMethod
    from encryption.sealing import Trigger

    aws = clouds.aws
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    before_rotation = make_blob(member, pattern(20_000, seed=1), name="kodori-managed.bin")
    key_arn = aws.create_key(alias="alias/acme-byok")
    role_arn = aws.create_tenant_role("acme-byok", services.external_id_for(tenant), key_arn)
    key = services.register_key(
        tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, {"role_arn": role_arn}, actor=owner
    )
    assert services.verify_key(key.pk).status == KeyStatus.ACTIVE
    make_blob(member, pattern(20_000, seed=2), name="customer-key.bin")
    # The customer disables the key in their KMS: the next probe seals the tenant.
    aws.disable_key(key_arn)
    keyring.cache.clear()
    assert probe_key(key.pk, trigger=Trigger.SCHEDULE) is False
    tenant.refresh_from_db()
    assert tenant.is_sealed
    deletion = schedule_due(tenant, owner)
    calls_before = sum(aws.counts().values())
    aws.stop()  # and for good measure, nobody answers at all any more

    assert run_task(django_capture_on_commit_callbacks) == [tenant.slug]

    assert sum(aws.counts().values()) == calls_before
    deletion.refresh_from_db()
    tenant.refresh_from_db()
    assert tenant.state == TenantState.ERASED and deletion.last_error == ""
    assert rows_left(tenant) == {}
    assert not Blob.objects.filter(pk=before_rotation.pk).exists()
    assert [p for p in blob_root.rglob("*") if p.is_file() and "tenants" in p.parts] == []
    # The certificate names the customer's key by provider and suffix, never in full, and says what to do.
    document = certificate_of(deletion)["document"]
    customer = [k for k in document["keys"] if k["customer_managed"]]
    assert customer == [
        {
            "provider": "aws-kms",
            "wrap_method": WrapMethod.CUSTOMER_KMS_AWS,
            "key_id_suffix": key_arn[-12:],
            "status_at_erasure": KeyStatus.ACTIVE,
            "customer_managed": True,
        }
    ]
    assert key_arn not in certificate.as_bytes(certificate_of(deletion)).decode()
    byok = [line for line in document["coverage"]["not_covered"] if "customer's own KMS" in line]
    assert len(byok) == 1 and f"aws-kms …{key_arn[-12:]}" in byok[0]
