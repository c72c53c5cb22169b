"""The end of an erased tenant's audit chain: removed ``TENANT_AUDIT_RETENTION_DAYS`` after the erasure,
with a final signed record kept in its place (``kodori-audit-purge-record``, verifiable offline like the
certificate).

The audit tables refuse DELETE by trigger (audit migrations 0002 and 0008), with no exception the
application could switch on. The purge therefore disables the guard triggers *inside its own transaction*:
``ALTER TABLE ... DISABLE TRIGGER`` takes an ACCESS EXCLUSIVE lock that no other session can pass until the
transaction ends, by which time the triggers are enabled again. It needs the tables' owner (in most
deployments the role that runs migrations and the application); where the application runs as another role
the purge fails with a clear log line and an operator runs ``manage.py purge_erased_audit`` as the owner.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import signing, witness
from audit.encoding import format_time
from audit.models import AuditEvent, ChainBreak, ChainVerification, Checkpoint
from tenants.models import Tenant, TenantState

from .models import DeletionRequest, DeletionStatus

KIND = "kodori-audit-purge-record"

# (table, trigger) pairs that refuse DELETE on the audit tables.
GUARDS = [
    ("audit_auditevent", "audit_auditevent_append_only"),
    ("audit_checkpoint", "audit_checkpoint_append_only"),
    ("audit_chainbreak", "audit_chainbreak_append_only"),
    ("audit_chainbreak", "audit_chainbreak_guard"),
]

logger = logging.getLogger(__name__)


def expired() -> list[DeletionRequest]:
    cutoff = timezone.now() - timedelta(days=int(settings.TENANT_AUDIT_RETENTION_DAYS))
    return list(
        DeletionRequest.objects.filter(
            status=DeletionStatus.ERASED, completed_at__lte=cutoff, audit_purged_at__isnull=True
        ).select_related("tenant")
    )


def purge_expired() -> list[int]:
    """Remove every expired chain; returns the tenant ids done."""
    done = []
    for deletion in expired():
        try:
            purge(deletion)
        except Exception:
            logger.exception(
                "offboarding: could not remove the audit chain of erased tenant %s (the purge needs the "
                "audit "
                "tables' owner: run manage.py purge_erased_audit as that role)",
                deletion.tenant_id,
            )
            continue
        done.append(deletion.tenant_id)
    return done


def purge(deletion: DeletionRequest) -> DeletionRequest:
    """Remove one erased tenant's audit chain, checkpoints and breaks; keep a signed record of what was."""
    now = timezone.now()
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=deletion.tenant_id)
        deletion = DeletionRequest.objects.select_for_update().get(pk=deletion.pk)
        if deletion.audit_purged_at is not None:
            return deletion
        if tenant.state != TenantState.ERASED:
            raise ValueError(f"tenant {tenant.pk} is not erased; its audit chain stays")
        events = AuditEvent.objects.filter(tenant=tenant)
        head = events.order_by("-seq").values("seq", "hash").first() or {"seq": 0, "hash": ""}
        counts = {
            "events": events.count(),
            "checkpoints": Checkpoint.objects.filter(tenant=tenant).count(),
            "chain_breaks": ChainBreak.objects.filter(tenant=tenant).count(),
        }
        with connection.cursor() as cursor:
            for table, trigger in GUARDS:
                cursor.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER "{trigger}"')
            for table in ("audit_auditevent", "audit_checkpoint", "audit_chainbreak"):
                # Table names from the fixed list above, never from input.
                cursor.execute(f'DELETE FROM "{table}" WHERE tenant_id = %s', [tenant.pk])  # noqa: S608
            for table, trigger in GUARDS:
                cursor.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER "{trigger}"')
        ChainVerification.objects.filter(tenant=tenant).delete()
        document = {
            "tenant": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name},
            "erasure_certificate_id": str(deletion.pk),
            "erased_at": format_time(deletion.completed_at) if deletion.completed_at else None,
            "retention_days": int(settings.TENANT_AUDIT_RETENTION_DAYS),
            "purged_at": format_time(now),
            "removed": counts,
            "final_head": {"seq": head["seq"], "hash": head["hash"]},
            "statement": "The tenant's audit chain, its signed checkpoints and its recorded breaks were "
            "removed "
            "at the end of the retention period. The erasure certificate, which names the final head above, "
            "remains.",
        }
        deletion.purge_record = signing.sign_document(KIND, document)
        deletion.audit_purged_at = now
        deletion.save(update_fields=["purge_record", "audit_purged_at"])
        transaction.on_commit(lambda: _remove_witness(tenant.pk))
    logger.info(
        "offboarding: audit chain of erased tenant %s removed (%s events)", tenant.pk, counts["events"]
    )
    return deletion


def _remove_witness(tenant_id: int) -> None:
    try:
        for entry in witness.entries(tenant_id):
            witness.storage().delete(entry.name)
    except Exception:
        logger.exception("offboarding: could not remove the witness objects of erased tenant %s", tenant_id)
