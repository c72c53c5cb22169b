"""``audit.services.record``: the one door into the log, appending in the caller's transaction."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.db import transaction
from django.test import RequestFactory, override_settings

from audit import payloads, services
from audit.chain import event_record, verify
from audit.encoding import event_hash
from audit.hygiene import PayloadError
from audit.models import AuditEvent, EventType
from audit.verify_bundle import GENESIS_HASH
from kodori.middleware import request_id_var
from tenants.models import Tenant

from .conftest import ARN, fill

pytestmark = pytest.mark.django_db

TOKEN = payloads.api_token_created(token_id=1, name="ci")


def test_it_numbers_events_one_to_n_per_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    fill(tenant, 3)
    fill(other_tenant, 2)
    fill(tenant, 2)
    assert list(AuditEvent.objects.for_tenant(tenant).order_by("seq").values_list("seq", flat=True)) == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert list(
        AuditEvent.objects.for_tenant(other_tenant).values_list("seq", flat=True).order_by("seq")
    ) == [1, 2]


def test_it_links_each_event_to_the_previous_hash(tenant: Tenant) -> None:
    events = fill(tenant, 4)
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    for event in events:
        stored = AuditEvent.objects.get(pk=event.pk)
        assert event_hash(event_record(stored)) == stored.hash


def test_it_copies_the_actor_so_events_outlive_the_user(tenant: Tenant, owner: Any) -> None:
    owner.first_name, owner.last_name = "Olive", "Owner"
    owner.save()
    event = services.record(tenant, EventType.API_TOKEN_CREATED, actor=owner, payload=TOKEN)
    owner_pk = owner.pk
    owner.delete()
    stored = AuditEvent.objects.get(pk=event.pk)  # type: ignore[union-attr]
    assert (stored.actor_id, stored.actor_name, stored.actor_email) == (
        owner_pk,
        "Olive Owner",
        "owner@acme.test",
    )
    assert verify(tenant, full=True).ok


def test_it_records_the_system_when_there_is_no_actor(tenant: Tenant) -> None:
    event = services.record(tenant, EventType.TENANT_SEALED, payload=payloads.tenant_sealed(reason="denied"))
    assert event is not None
    assert (event.actor_id, event.actor_name, event.actor_email, event.is_system) == (
        None,
        "system",
        "",
        True,
    )


def test_it_takes_request_id_and_client_ip_from_the_request(tenant: Tenant, owner: Any) -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="2001:DB8:0:0::1")
    request.request_id = "req-0123456789"  # type: ignore[attr-defined]
    event = services.record(tenant, EventType.API_TOKEN_CREATED, actor=owner, payload=TOKEN, request=request)
    assert event is not None
    assert (event.request_id, event.ip) == ("req-0123456789", "2001:db8::1")


def test_without_a_request_it_takes_the_current_request_id(tenant: Tenant) -> None:
    token = request_id_var.set("from-the-middleware")
    try:
        event = services.record(
            tenant, EventType.API_TOKEN_REVOKED, payload=payloads.api_token_revoked(token_id=1, name="ci")
        )
    finally:
        request_id_var.reset(token)
    assert event is not None
    assert (event.request_id, event.ip) == ("from-the-middleware", "")


def test_a_rollback_leaves_no_event_and_no_gap(tenant: Tenant) -> None:
    fill(tenant, 2)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.record(tenant, EventType.API_TOKEN_CREATED, payload=TOKEN)
        raise RuntimeError("the action failed")
    assert AuditEvent.objects.for_tenant(tenant).count() == 2
    event = services.record(tenant, EventType.API_TOKEN_CREATED, payload=TOKEN)
    assert event is not None and event.seq == 3
    assert verify(tenant, full=True).ok


def test_it_refuses_an_unknown_event_type(tenant: Tenant) -> None:
    with pytest.raises(ValueError):
        services.record(tenant, "tenant-kms.exploded", payload={})
    assert not AuditEvent.objects.exists()


def test_it_refuses_a_payload_with_a_full_key_id(tenant: Tenant) -> None:
    with pytest.raises(PayloadError, match="full key identifier"):
        services.record(tenant, EventType.TENANT_KMS_REGISTERED, payload={"keyId": ARN})
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"ratio": 0.5},
        {"big": 2**60},
        {1: "x"},
        {"nul": "a\x00b"},
        {"bytes": b"x"},
        {"deep": [[[[[[[[[[1]]]]]]]]]]},
    ],
    ids=["float", "huge-int", "int-key", "nul", "bytes", "too-deep"],
)
def test_it_refuses_values_that_do_not_encode_canonically(tenant: Tenant, payload: Any) -> None:
    with pytest.raises(PayloadError):
        services.record(tenant, EventType.API_TOKEN_CREATED, payload=payload)


def test_it_stores_exactly_what_it_hashed(tenant: Tenant) -> None:
    event = services.record(tenant, EventType.API_TOKEN_CREATED, payload={"ids": (1, 2), "é": "ü"})
    assert event is not None
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.payload == {"ids": [1, 2], "é": "ü"}
    assert event_hash(event_record(stored)) == stored.hash


def test_blob_downloads_are_not_recorded_by_default(tenant: Tenant) -> None:
    payload = payloads.blob_downloaded(blob_id=1, name="a.txt")
    assert services.record(tenant, EventType.BLOB_DOWNLOADED, payload=payload) is None
    assert not AuditEvent.objects.exists()
    with override_settings(AUDIT_BLOB_DOWNLOADS=True):
        event = services.record(tenant, EventType.BLOB_DOWNLOADED, payload=payload)
    assert event is not None and event.type == "blob.downloaded"


def test_time_never_runs_backwards_along_the_chain(tenant: Tenant) -> None:
    events = fill(tenant, 20)
    stamps = [e.created_at for e in events]
    assert stamps == sorted(stamps)


def test_every_issue_event_type_exists() -> None:
    wanted = {
        "tenant-kms.registered", "tenant-kms.rotated", "tenant-kms.disabled", "tenant-kms.verify-failed",
        "tenant.sealed", "tenant.unsealed", "tenant.cloud-kms-enabled", "tenant.cloud-kms-disabled",
        "rewrap.started", "rewrap.completed", "rewrap.failed", "membership.added", "membership.role-changed",
        "membership.removed", "api-token.created", "api-token.revoked", "blob.uploaded", "blob.deleted",
        "blob.downloaded",
    }  # fmt: skip
    assert wanted <= {t.value for t in EventType}


def test_a_database_hash_that_disagrees_with_python_is_never_committed_in_a_transaction(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit import encoding

    def wrong(**fields: Any) -> tuple[bytes, bytes, bytes]:
        a, b, c = encoding.body_pieces(**fields)
        return a, b, c + b" "  # one stray byte: the database's hash no longer follows the definition

    monkeypatch.setattr(services, "body_pieces", wrong)
    with pytest.raises(services.ChainIntegrityError), transaction.atomic():
        services.record(tenant, EventType.API_TOKEN_CREATED, payload=TOKEN)
    assert not AuditEvent.objects.exists()


def test_the_database_lock_uses_the_documented_namespace() -> None:
    import importlib

    migration = importlib.import_module("audit.migrations.0003_append_function")
    assert f"pg_advisory_xact_lock({services.LOCK_NAMESPACE}," in migration.FUNCTION
