"""Helpers of the encryption tests; not a conftest: each test module imports what it uses.

Key custody: a tenant on cloud KMS, Azure keys registered and verified through the real services, the audit
story of a tenant, and downloads through the real blob view. The Azure vault emulator and Kodori's settings
for it come from ``tests/encryption/conftest.py`` (``vault``, ``kodori_app``).

Re-wrap: many real wrapped data keys at once, and checks that every one still opens. Seeding goes around
``keyring.new_data_key`` on purpose (one transaction per key is ~150 keys/s): each DEK is sealed exactly as
that function seals it (``aead.seal`` under the TKV with ``keyring.dek_aad``) and the rows arrive in one
PostgreSQL ``COPY``. The plaintext DEKs are returned so a test can prove that every one of them comes back
unchanged after the walk.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from blobs.models import Blob
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import aead, keyring, services
from encryption.format.envelope import FORMAT_VERSION
from encryption.models import DataKey, KeyStatus, TenantKey, TenantKeyVersion, WrapMethod
from tenants.models import Tenant
from tests.encryption.conftest import customer_key_url

# Well-formed identifiers of customers' keys, for registrations that never reach a KMS.
AWS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
AWS_ROLE = "arn:aws:iam::111122223333:role/kodori-access"
AZURE_KEY = "https://contoso.vault.azure.net/keys/kodori/0123456789abcdef0123456789abcdef"
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
GCP_KEY = "projects/acme-prod/locations/europe-west1/keyRings/kodori/cryptoKeys/tenant-kek"


def enable_cloud_kms(tenant: Tenant) -> Tenant:
    """Switch cloud KMS on for ``tenant`` (support's job) and start from an empty key cache."""
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.cache.clear()
    return tenant


def register_azure(tenant: Tenant, vault: AzureKeyVaultEmulator, name: str, actor: Any) -> TenantKey:
    """Create key ``name`` in the vault and register its versioned URL for ``tenant`` (pending)."""
    return services.register_key(
        tenant,
        WrapMethod.CUSTOMER_KMS_AZURE,
        customer_key_url(vault, name),
        {"directory_id": vault.directory_id},
        actor=actor,
    )


def verified(key: TenantKey) -> TenantKey:
    """Run the probe the verify task runs, and return the key as it is now."""
    services.verify_key(key.pk)
    return TenantKey.objects.get(pk=key.pk)


def active_azure_key(tenant: Tenant, vault: AzureKeyVaultEmulator, name: str, actor: Any) -> TenantKey:
    """Register and verify an Azure key: it is the tenant's active key afterwards."""
    return verified(register_azure(tenant, vault, name, actor))


def fresh(key: TenantKey) -> TenantKey:
    return TenantKey.objects.get(pk=key.pk)


def story(tenant: Tenant, after: int = 0) -> list[AuditEvent]:
    """The tenant's audit events after sequence number ``after``, in order."""
    return list(AuditEvent.objects.filter(tenant=tenant, seq__gt=after).order_by("seq"))


def types(events: list[AuditEvent]) -> list[str]:
    return [event.type for event in events]


def last_seq(tenant: Tenant) -> int:
    event = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").first()
    return event.seq if event is not None else 0


def download(client: Client, blob: Blob) -> tuple[int, bytes]:
    """GET the blob through the real download page; (status, body), the stream read to its end."""
    keyring.cache.clear()  # every download unwraps its key version through the provider again
    response = client.get(reverse("blobs:download", args=[blob.pk]))
    if response.streaming:
        return response.status_code, b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return response.status_code, response.content


def rotate_kek(tenant: Tenant) -> TenantKeyVersion:
    """Rotate ``tenant`` to a new (Kodori-managed) KEK: the current KEK retires with its versions, so a walk
    moves their data keys; returns the new active version. What a real rotation to a cloud key does, without
    a KMS."""
    kek = TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING)
    services.activate_key(kek)
    return keyring.active_tkv(tenant)


def seed_data_keys(tenant: Tenant, n: int, tkv: TenantKeyVersion | None = None) -> dict[uuid.UUID, bytes]:
    """``n`` data keys of ``tenant`` wrapped under ``tkv`` (default: the active one): blob id -> DEK."""
    tkv = tkv or keyring.active_tkv(tenant)
    key = keyring.tkv_key(TenantKeyVersion.objects.select_related("kek").get(pk=tkv.pk))
    keys: dict[uuid.UUID, bytes] = {}
    created = timezone.now().isoformat()
    lines = []
    for _ in range(n):
        blob_id, dek = uuid.uuid4(), os.urandom(keyring.DEK_SIZE)
        wrapped = aead.seal(key, dek, keyring.dek_aad(tenant.pk, blob_id, tkv.pk, FORMAT_VERSION))
        # COPY's text format: tab-separated; bytea in hex (\x…) with COPY's own backslash escaped.
        columns = (tenant.pk, blob_id, tkv.pk, r"\\x" + wrapped.hex(), FORMAT_VERSION, created)
        lines.append("\t".join(map(str, columns)) + "\n")
        keys[blob_id] = dek
    sql = "COPY data_keys (tenant_id, blob_id, tkv_id, wrapped_dek, format_version, created_at) FROM STDIN"
    with connection.cursor() as cursor:
        with cursor.cursor.copy(sql) as copy:
            for start in range(0, len(lines), 10_000):
                copy.write("".join(lines[start : start + 10_000]))
        # Statistics, as a table that grew by uploads has them: without them, right after a bulk load, the
        # planner runs the walk's compare-and-swap UPDATE as a hash join over the whole version (~10x slower).
        cursor.execute("ANALYZE data_keys")
    # The counter of nonces used under this version, as new_data_key keeps it.
    TenantKeyVersion.objects.filter(pk=tkv.pk).update(wrap_count=F("wrap_count") + n)
    return keys


def wrapped_rows(tenant: Tenant) -> dict[uuid.UUID, tuple[int, bytes]]:
    """Every data key row of ``tenant``: blob id -> (tkv id, wrapped DEK bytes)."""
    rows = DataKey.objects.for_tenant(tenant).values_list("blob_id", "tkv_id", "wrapped_dek")
    return {blob_id: (tkv_id, bytes(wrapped)) for blob_id, tkv_id, wrapped in rows}


def unopenable(tenant: Tenant, keys: dict[uuid.UUID, bytes], *, through_keyring: int = 0) -> list[str]:
    """What is wrong with ``keys`` in the table now (empty when every DEK opens and equals the original).

    Every row is opened with its own version's key, unwrapped afresh by its provider (the cache is cleared
    first); ``through_keyring`` of them, drawn at random, also go through ``keyring.open_data_key`` as a
    download does.
    """
    keyring.cache.clear()
    problems: list[str] = []
    tkv_keys: dict[int, bytes] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT blob_id, tkv_id, wrapped_dek, format_version FROM data_keys WHERE tenant_id = %s",
            [tenant.pk],
        )
        rows = cursor.fetchall()
    seen = set()
    for blob_id, tkv_id, wrapped, format_version in rows:
        if blob_id not in keys:
            continue
        seen.add(blob_id)
        if tkv_id not in tkv_keys:
            tkv_keys[tkv_id] = keyring.tkv_key(TenantKeyVersion.objects.select_related("kek").get(pk=tkv_id))
        try:
            dek = aead.open(
                tkv_keys[tkv_id], bytes(wrapped), keyring.dek_aad(tenant.pk, blob_id, tkv_id, format_version)
            )
        except Exception as exc:  # collected, reported by the test
            problems.append(f"{blob_id}: {type(exc).__name__}")
            continue
        if dek != keys[blob_id]:
            problems.append(f"{blob_id}: a different DEK")
    problems += [f"{blob_id}: row missing" for blob_id in keys.keys() - seen]
    sample = random.sample(sorted(keys), min(through_keyring, len(keys)))
    keyring.cache.clear()
    for blob_id in sample:
        if keyring.open_data_key(tenant, blob_id) != keys[blob_id]:
            problems.append(f"{blob_id}: open_data_key gave a different DEK")
    return problems


def under(tkv: TenantKeyVersion | int) -> int:
    """How many data keys ``tkv`` wraps now."""
    return DataKey.objects.filter(tkv_id=tkv if isinstance(tkv, int) else tkv.pk).count()


def wait_for(what: str, predicate: Callable[[], Any], *, timeout: float, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned it); fail naming ``what`` after it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
