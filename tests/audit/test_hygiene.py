"""Payload hygiene: full key identifiers never reach the log, only their last 12 characters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from audit import payloads, services
from audit.encoding import canonical_json
from audit.hygiene import PayloadError, check_payload, key_id_suffix, redact_key_ids
from audit.models import AuditEvent, EventType
from tenants.models import Tenant

from .conftest import ARN, AZURE_URL, GCP_PATH

pytestmark = pytest.mark.django_db

FULL_IDS = {
    "aws": ARN,
    "aws-alias": "arn:aws:kms:us-east-1:111122223333:alias/kodori-tenant-key",
    "aws-role": "arn:aws:iam::111122223333:role/KodoriAccess",
    "aws-gov": "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0987dcba-09fe-87dc-65ba-fedcba987654",
    "azure": AZURE_URL,
    "azure-hsm": "https://acme.managedhsm.azure.net/keys/kek/abcdef0123456789abcdef0123456789",
    "gcp": GCP_PATH,
    "gcp-version": GCP_PATH + "/cryptoKeyVersions/3",
}


def _error(key_id: str) -> str:
    # What SDKs really say: the identifier sits in the middle of the message.
    return (
        f"AccessDeniedException: User is not authorized to perform kms:Decrypt on resource: {key_id} because"
    )


# For every event type: how a caller would build its payload from source data holding the full key id.
BUILDERS: dict[EventType, Callable[[str], dict[str, Any]]] = {
    EventType.TENANT_KMS_REGISTERED: lambda k: payloads.key_registered(
        key_row_id=1, provider="customer_kms_aws", key_id=k, region=k
    ),
    EventType.TENANT_KMS_ROTATED: lambda k: payloads.key_rotated(
        from_provider="customer_kms_aws", from_key_id=k, to_provider="customer_kms_gcp", to_key_id=k
    ),
    EventType.TENANT_KMS_DISABLED: lambda k: payloads.key_disabled(
        key_row_id=1, previous_status="active", provider="customer_kms_azure", key_id=k
    ),
    EventType.TENANT_KMS_VERIFY_FAILED: lambda k: payloads.key_verify_failed(
        key_row_id=1, provider="x", key_id=k, error=_error(k)
    ),
    EventType.TENANT_KMS_RE_ENABLED: lambda k: payloads.key_re_enabled(
        key_row_id=1, provider="customer_kms_aws", key_id=k, status="active", reason=f"asked about {k}"
    ),
    EventType.TENANT_KMS_REMOVED: lambda k: payloads.key_removed(
        key_row_id=1, provider="customer_kms_gcp", key_id=k
    ),
    EventType.TENANT_KMS_UNREACHABLE: lambda k: payloads.key_health(
        key_row_id=1, provider="customer_kms_aws", key_id=k, status="retired", trigger="use", error=_error(k)
    ),
    EventType.TENANT_KMS_REACHABLE: lambda k: payloads.key_health(
        key_row_id=1, provider="customer_kms_aws", key_id=k, status="retired", trigger="schedule"
    ),
    EventType.TENANT_KMS_AUTH_SECRET_ROTATED: lambda k: payloads.auth_secret_rotated(
        versions=[1], kek_fingerprint="5ca1ab1e5ca1ab1e", previous_kek_fingerprints=["c0ffeec0ffeec0ff"]
    ),
    EventType.TENANT_SEALED: lambda k: payloads.tenant_sealed(
        reason=_error(k), provider="aws", key_id=k, trigger="use"
    ),
    EventType.TENANT_UNSEALED: lambda k: payloads.tenant_unsealed(reason=f"{k} answers again", key_id=k),
    EventType.TENANT_CLOUD_KMS_ENABLED: lambda k: payloads.cloud_kms_switched(enabled=True),
    EventType.TENANT_CLOUD_KMS_DISABLED: lambda k: payloads.cloud_kms_switched(enabled=False),
    EventType.TENANT_DELETION_SCHEDULED: lambda k: payloads.deletion_scheduled(
        due_at="2027-01-04T00:00:00.000000Z",
        waiting_days=30,
        via="support",
        reason=f"asked; {k}",
    ),
    EventType.TENANT_DELETION_CANCELLED: lambda k: payloads.deletion_cancelled(
        due_at="2027-01-04T00:00:00.000000Z", via="owner", reason=k
    ),
    EventType.TENANT_EXPORTED: lambda k: payloads.tenant_exported(
        export_id="e-1", export_format="zip", part=1, parts=1, files=2, size=3, byte_range=k
    ),
    EventType.TENANT_ERASURE_STARTED: lambda k: payloads.erasure_counts(
        {"dataKeys": 3}, [{"wrap_method": "customer_kms_aws", "key_id": k}]
    ),
    EventType.TENANT_ERASED: lambda k: payloads.erasure_counts(
        {"dataKeys": 3}, [{"wrap_method": "customer_kms_gcp", "key_id": k}]
    ),
    EventType.REWRAP_STARTED: lambda k: payloads.rewrap_started(
        to_key_row_id=2, to_provider="gcp", to_key_id=k, data_keys=10
    ),
    EventType.REWRAP_COMPLETED: lambda k: payloads.rewrap_completed(
        to_key_row_id=2, to_provider="gcp", to_key_id=k, rewrapped=10, retired_key_row_ids=[1]
    ),
    EventType.REWRAP_FAILED: lambda k: payloads.rewrap_failed(
        to_key_row_id=2, to_provider="gcp", to_key_id=k, rewrapped=3, error=_error(k)
    ),
    EventType.REWRAP_PAUSED: lambda k: payloads.rewrap_control(job_id=1, rewrapped=3, total=10),
    EventType.REWRAP_RESUMED: lambda k: payloads.rewrap_control(job_id=1, rewrapped=3, total=10),
    EventType.REWRAP_CANCELLED: lambda k: payloads.rewrap_control(job_id=1, rewrapped=3, total=10),
    EventType.MEMBERSHIP_ADDED: lambda k: payloads.membership_added(
        user_id=1, email=f"{k}@x.test", role="admin", created_account=False
    ),
    EventType.MEMBERSHIP_ROLE_CHANGED: lambda k: payloads.membership_role_changed(
        user_id=1, email=k, from_role="viewer", to_role="member"
    ),
    EventType.MEMBERSHIP_REMOVED: lambda k: payloads.membership_removed(user_id=1, email=k, role="member"),
    EventType.API_TOKEN_CREATED: lambda k: payloads.api_token_created(token_id=1, name=f"token for {k}"),
    EventType.API_TOKEN_REVOKED: lambda k: payloads.api_token_revoked(token_id=1, name=k),
    EventType.BLOB_UPLOADED: lambda k: payloads.blob_uploaded(blob_id="b-1", name=f"{k}.txt", size=1),
    EventType.BLOB_DELETED: lambda k: payloads.blob_deleted(blob_id="b-1", name=k, size=1),
    EventType.BLOB_DOWNLOADED: lambda k: payloads.blob_downloaded(blob_id="b-1", name=k, byte_range=k),
    EventType.BLOB_CORRUPT: lambda k: payloads.blob_corrupt(
        blob_id="b-1", name=f"{k}.bin", chunk=3, damage=f"tag mismatch under {k}", found_by="scrub"
    ),
    EventType.BLOB_REPAIRED: lambda k: payloads.blob_repaired(blob_id="b-1", name=k, found_by="scrub"),
    EventType.AUDIT_EXPORTED: lambda k: payloads.audit_exported(
        export_format="csv", first_seq=1, last_seq=2, filters=f"actor={k}"
    ),
    EventType.AUDIT_BREAK_ACKNOWLEDGED: lambda k: payloads.break_acknowledged(
        seq=4,
        last_seq=4,
        kind="edited",
        detail="ab" * 32,
        found_at="2026-01-01T00:00:00.000000Z",
        reason=f"restored from backup; the row had {k}",
        via="operator",
        operator=f"ops ({k})",
    ),
}


def test_every_event_type_has_a_builder() -> None:
    assert set(BUILDERS) == set(EventType)


@pytest.mark.parametrize("kind", list(EventType), ids=lambda k: k.value)
@pytest.mark.parametrize("full_id", FULL_IDS.values(), ids=list(FULL_IDS))
def test_only_the_suffix_of_a_key_id_is_stored(
    kind: EventType, full_id: str, tenant: Tenant, settings: Any
) -> None:
    settings.AUDIT_BLOB_DOWNLOADS = True
    event = services.record(tenant, kind, payload=BUILDERS[kind](full_id))
    assert event is not None
    stored = AuditEvent.objects.get(pk=event.pk)
    text = canonical_json(stored.payload).decode()
    assert full_id not in text
    # Not even a long piece of it: nothing beyond the 12-character suffix.
    assert full_id[-13:] not in text
    if "KeyIdSuffix" in text or "keyIdSuffix" in text:
        assert key_id_suffix(full_id) in text


def test_the_suffix_is_the_last_twelve_characters() -> None:
    assert key_id_suffix(ARN) == "a1b2c3d4e5f6"
    assert key_id_suffix(GCP_PATH) == "9f8e7d6c5b4a"
    assert key_id_suffix(AZURE_URL + "/") == "456789abcdef"
    assert key_id_suffix("short") == "short"


def test_redaction_keeps_the_suffix_and_the_rest_of_the_text() -> None:
    text = redact_key_ids(f"denied on {ARN}; and {AZURE_URL}, then {GCP_PATH}.")
    assert text == "denied on …a1b2c3d4e5f6; and …456789abcdef, then …9f8e7d6c5b4a."


@pytest.mark.parametrize("full_id", FULL_IDS.values(), ids=list(FULL_IDS))
def test_a_careless_caller_is_refused_wherever_the_id_hides(full_id: str) -> None:
    for payload in ({"keyId": full_id}, {"nested": {"list": ["ok", full_id]}}, {full_id: 1}):
        with pytest.raises(PayloadError):
            check_payload(payload)


def test_harmless_text_passes() -> None:
    check_payload({"name": "projects/plan.pdf", "note": "arn is a word", "url": "https://vault.example/keys"})
