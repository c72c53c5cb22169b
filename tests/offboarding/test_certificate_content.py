"""What the erasure certificate (``offboarding.certificate``) says: what was erased, when, on whose
request and what it does not cover, as docs/offboarding.md says it states it; a customer key is named by
provider and suffix with what to do in the customer's KMS, and one that never protected anything is listed
but not as one to delete.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import chain
from audit.encoding import format_time
from audit.models import AuditEvent, EventType
from encryption import services
from encryption.models import KeyStatus, WrapMethod
from offboarding import certificate
from tenants.models import Tenant
from tests.blobs.support import make_blob, pattern
from tests.encryption.support import AWS_KEY, AWS_ROLE
from tests.offboarding.erasure_support import REASON, RETENTION_DAYS, Erased, certificate_of, erase, when

pytestmark = pytest.mark.django_db


# --- what it says -------------------------------------------------------------------------------------------


def test_it_states_what_was_erased_when_on_whose_request_and_what_is_not_covered(
    erased: Erased, staff: Any
) -> None:
    deletion, tenant = erased.deletion, erased.tenant
    signed = certificate_of(deletion)
    assert signed["kind"] == "kodori-erasure-certificate"
    document = signed["document"]
    assert set(document) == {
        "certificate_id", "tenant", "scheduled", "erasure", "destroyed", "keys", "audit_chain", "coverage",
        "issued_at",
    }  # fmt: skip
    assert document["certificate_id"] == str(deletion.pk)
    assert document["tenant"] == {"id": tenant.pk, "slug": "acme", "name": "Acme Corp"}
    assert document["scheduled"] == {
        "at": format_time(deletion.requested_at),
        "by": {"name": "support@kodori.test", "email": "support@kodori.test"},
        "via": "support",
        "on_written_request": True,
        "reason": REASON,
        "waiting_days": 12,
        "due_at": format_time(deletion.due_at),
    }
    erasure_part = document["erasure"]
    destroyed_at, completed_at = when(deletion.keys_destroyed_at), when(deletion.completed_at)
    retained_until = format_time(completed_at + timedelta(days=RETENTION_DAYS))
    assert erasure_part["keys_destroyed_at"] == format_time(destroyed_at)
    assert erasure_part["completed_at"] == format_time(completed_at) == document["issued_at"]
    assert deletion.due_at <= destroyed_at <= completed_at == tenant.erased_at
    assert erasure_part["order"][0].startswith("tenant key versions and data keys destroyed")
    # The counts are what the tables held: three files, their keys, two versions, one token, four people.
    assert document["destroyed"] == {
        "data_keys": 3,
        "key_versions": 2,
        "key_versions_destroyed_earlier": 0,
        "blobs": 3,
        "blob_bytes": 71_005,
        "uploads_in_progress": 0,
        "stored_objects": 3,
        "key_registrations": 2,
        "api_tokens": 1,
        "memberships": 4,
    }
    assert erased.counts["dataKeys"] == 3 and erased.counts["memberships"] == 4
    assert document["keys"] == [
        {
            "provider": "kodori-managed",
            "wrap_method": WrapMethod.GLOBAL,
            "key_id_suffix": "",
            "status_at_erasure": status,
            "customer_managed": False,
        }
        for status in (KeyStatus.RETIRED, KeyStatus.ACTIVE)
    ]
    # The head it names is the chain's last event, tenant.erased, and the chain verifies up to it.
    head = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").first()
    assert head is not None and head.type == EventType.TENANT_ERASED
    assert document["audit_chain"] == {
        "head_seq": head.seq,
        "head_hash": head.hash,
        "head_type": "tenant.erased",
        "retained_until": retained_until,
    }
    assert chain.verify(tenant, full=True).ok
    covered, not_covered = document["coverage"]["covered"], document["coverage"]["not_covered"]
    assert any("before any file was removed" in line for line in covered)
    assert any("No call to the tenant's key management service" in line for line in covered)
    assert any(line.startswith("Database backups and replicas") for line in not_covered)
    assert any(retained_until in line for line in not_covered)
    assert any("Kodori-managed or operator key" in line for line in not_covered)
    assert not any("customer's own KMS" in line for line in not_covered)  # no customer key here


def test_a_customer_key_is_named_by_provider_and_suffix_with_what_to_do_in_the_customers_kms(
    clouds: Any,
    tenant: Tenant,
    owner: Any,
    member: Any,
    signing_key: str,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    make_blob(member, pattern(1_000), name="before.bin")
    name = clouds.gcp.create_key("acme-byok", "kek")
    key = services.register_key(tenant, WrapMethod.CUSTOMER_KMS_GCP, name, {}, actor=owner)
    assert services.verify_key(key.pk).status == KeyStatus.ACTIVE
    make_blob(member, pattern(1_000), name="after.bin")

    done = erase(tenant, owner, django_capture_on_commit_callbacks)

    document = certificate_of(done.deletion)["document"]
    assert [(k["provider"], k["key_id_suffix"], k["customer_managed"]) for k in document["keys"]] == [
        ("kodori-managed", "", False),
        ("gcp-kms", name[-12:], True),
    ]
    byok = [line for line in document["coverage"]["not_covered"] if "customer's own KMS" in line]
    assert len(byok) == 1 and f"gcp-kms …{name[-12:]}" in byok[0]
    # Never the full key id: not in the certificate, not in the e-mail.
    assert name not in certificate.as_bytes(certificate_of(done.deletion)).decode()
    assert name not in done.message.body
    assert f"schedule the deletion of gcp-kms …{name[-12:]}" in done.message.body


def test_a_customer_key_that_never_protected_anything_is_listed_but_not_one_to_delete(
    tenant: Tenant,
    owner: Any,
    member: Any,
    signing_key: str,
    blob_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A registration still pending (or failed) wrapped no key version: asking the customer to delete that
    key, which may well serve other systems of theirs, would be wrong."""
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    make_blob(member, pattern(1_000), name="kodori-managed.bin")
    services.register_key(tenant, WrapMethod.CUSTOMER_KMS_AWS, AWS_KEY, {"role_arn": AWS_ROLE}, actor=owner)

    done = erase(tenant, owner, django_capture_on_commit_callbacks)

    document = certificate_of(done.deletion)["document"]
    assert [(k["provider"], k["key_id_suffix"], k["status_at_erasure"]) for k in document["keys"]] == [
        ("kodori-managed", "", KeyStatus.ACTIVE),
        ("aws-kms", AWS_KEY[-12:], KeyStatus.PENDING),
    ]
    assert not any("customer's own KMS" in line for line in document["coverage"]["not_covered"])
    assert "schedule the deletion" not in done.message.body
    assert AWS_KEY not in certificate.as_bytes(certificate_of(done.deletion)).decode()
