"""Events and checkpoints cannot be changed or removed: not through the ORM, the admin, or raw SQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models.deletion import ProtectedError

from audit import services
from audit.models import AuditEvent, Checkpoint, ImmutableRecordError
from tenants.models import Tenant

from .conftest import fill

pytestmark = pytest.mark.django_db


def _sql_refused(sql: str, params: list[Any]) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return str(caught.value)


def test_the_orm_refuses_to_change_an_event(tenant: Tenant) -> None:
    event = fill(tenant, 1)[0]
    event.actor_name = "someone else"
    with pytest.raises(ImmutableRecordError):
        event.save()
    with pytest.raises(ImmutableRecordError):
        AuditEvent.objects.filter(pk=event.pk).update(actor_name="x")
    with pytest.raises(ImmutableRecordError):
        AuditEvent.objects.bulk_update([event], ["actor_name"])


def test_the_orm_refuses_to_delete_an_event(tenant: Tenant) -> None:
    event = fill(tenant, 1)[0]
    with pytest.raises(ImmutableRecordError):
        event.delete()
    with pytest.raises(ImmutableRecordError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET actor_name = 'mallory' WHERE tenant_id = %s",
        "UPDATE audit_auditevent SET payload = '{}'::jsonb, hash = hash WHERE tenant_id = %s",
        "DELETE FROM audit_auditevent WHERE tenant_id = %s",
    ],
    ids=["update-actor", "update-payload", "delete"],
)
def test_the_database_refuses_updates_and_deletes_of_events(tenant: Tenant, sql: str) -> None:
    fill(tenant, 3)
    assert "append-only" in _sql_refused(sql, [tenant.pk])
    assert AuditEvent.objects.for_tenant(tenant).count() == 3


def test_the_database_refuses_truncate(tenant: Tenant) -> None:
    fill(tenant, 2)
    with connection.cursor() as cursor:
        # The test settings allow TRUNCATE for the test runner's flush; production sessions do not set this.
        cursor.execute("SET LOCAL kodori.audit_allow_truncate = 'off'")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE waits for no deferred foreign-key checks
    assert "append-only" in _sql_refused("TRUNCATE audit_auditevent", [])
    assert "append-only" in _sql_refused("TRUNCATE audit_checkpoint", [])
    assert AuditEvent.objects.count() == 2


def test_the_database_refuses_changes_to_checkpoints(tenant: Tenant) -> None:
    fill(tenant, 2)
    checkpoint = services.sign_checkpoint(tenant)
    assert checkpoint is not None
    assert "append-only" in _sql_refused("UPDATE audit_checkpoint SET seq = 1 WHERE id = %s", [checkpoint.pk])
    assert "append-only" in _sql_refused("DELETE FROM audit_checkpoint WHERE id = %s", [checkpoint.pk])
    with pytest.raises(ImmutableRecordError):
        checkpoint.delete()
    assert Checkpoint.objects.filter(pk=checkpoint.pk, seq=2).exists()


def test_a_tenant_with_an_audit_trail_cannot_be_deleted(tenant: Tenant) -> None:
    fill(tenant, 1)
    with pytest.raises(ProtectedError):
        tenant.delete()


def test_the_admin_is_read_only(staff: Any, tenant: Tenant, as_user: Any) -> None:
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="audit"))
    event = fill(tenant, 1)[0]
    client = as_user(staff)
    assert client.get("/admin/audit/auditevent/").status_code == 200
    page = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"actor_name": "x"}).status_code == 403
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).actor_name == "system"
