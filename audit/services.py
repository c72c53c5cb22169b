"""The audit log's verbs: ``record`` (what every other app calls) and signing checkpoints of chain heads.

``record`` appends to the tenant's chain inside the caller's transaction. Appends of one tenant are
serialized by a PostgreSQL transaction-level advisory lock on the tenant, held until the caller commits or
rolls back, so the event and the action it describes stand or fall together and two writers never see the
same head: no forks, no gaps, sequence numbers 1..n. The unique (tenant, seq) constraint backs this up
should the lock ever be bypassed. Appends need READ COMMITTED (Django's default): each statement after the
lock sees the previous holder's commit. Lock, head read and insert are one call of the ``audit_append``
database function, so no client round trip happens while the lock is held, until the caller commits.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone

from tenants.models import Tenant
from tenants.request_context import client_ip_var, request_id_var

from . import chain, payloads, signing, witness
from .encoding import body_pieces, canonical_json, event_hash, format_time
from .hygiene import check_payload, key_id_suffix, redact_key_ids
from .models import (
    AcknowledgedVia,
    AuditEvent,
    ChainBreak,
    ChainVerification,
    Checkpoint,
    CheckpointReason,
    EventType,
)

__all__ = [
    "AcknowledgementError",
    "ChainIntegrityError",
    "Signed",
    "acknowledge_break",
    "key_id_suffix",
    "record",
    "sign_checkpoint",
    "sign_checkpoints",
    "sign_head",
    "sign_heads",
    "verify_chains",
]

logger = logging.getLogger(__name__)

# One round trip: lock the tenant's chain (advisory lock "KDAU", tenant), read its head, insert, return the
# event (audit/migrations/0003_append_function.py, which spells LOCK_NAMESPACE in decimal). The two-key and
# one-key advisory lock spaces do not overlap, so other users of single-key locks cannot collide with it.
LOCK_NAMESPACE = 0x4B444155
_APPEND_SQL = (
    "SELECT * FROM audit_append(%s::bigint, %s::text, %s::timestamptz, %s::bigint, %s::text, %s::text, "
    "%s::text, %s::text, %s::text, %s::bytea, %s::bytea, %s::bytea)"
)


class ChainIntegrityError(RuntimeError):
    """The database hashed an event differently from Kodori's definition (a bug, never expected).

    Raised inside the caller's transaction, it rolls the action back; in autocommit the event is already
    stored, and every verification reports the chain as broken at it.
    """


def record(
    tenant: Tenant,
    event_type: EventType | str,
    *,
    actor: Any = None,
    payload: dict[str, Any],
    request: HttpRequest | None = None,
) -> AuditEvent | None:
    """Append an event to ``tenant``'s chain in the current transaction and return it.

    ``actor`` is the user who acted, or None for the system. ``payload`` must pass ``hygiene.check_payload``
    (build it with ``audit.payloads``); a full key identifier in it raises ``PayloadError``. Returns None, and
    records nothing, only for ``blob.downloaded`` while ``AUDIT_BLOB_DOWNLOADS`` is off.
    """
    kind = EventType(event_type)
    if kind == EventType.BLOB_DOWNLOADED and not settings.AUDIT_BLOB_DOWNLOADS:
        return None
    check_payload(payload)
    # Exactly the value that gets hashed is stored (tuples become lists, and so on).
    payload = orjson.loads(canonical_json(payload))
    actor_id, actor_name, actor_email = actor_fields(actor)
    request_id, ip = _request_fields(request)
    pieces = body_pieces(
        tenant=tenant.pk, type_=kind.value, actor_id=actor_id, actor_name=actor_name, actor_email=actor_email,
        request_id=request_id, ip=ip, payload=payload,
    )  # fmt: skip
    params = [tenant.pk, kind.value, timezone.now(), actor_id, actor_name, actor_email, request_id, ip,
              canonical_json(payload).decode(), *pieces]  # fmt: skip
    # Inside the caller's transaction the lock is held until they commit. Outside one (autocommit) the call is
    # its own transaction: lock, insert and commit all happen in the server, with no client round trip
    # while the lock is held, which is what lets concurrent writers of one tenant keep up.
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_SQL, params)
        event_id, seq, created_at, prev_hash, hash_ = cursor.fetchone()
    event = AuditEvent(
        id=event_id,
        tenant=tenant,
        seq=seq,
        type=kind.value,
        created_at=created_at,
        actor_id=actor_id,
        actor_name=actor_name,
        actor_email=actor_email,
        request_id=request_id,
        ip=ip,
        payload=payload,
        prev_hash=prev_hash,
        hash=hash_,
    )
    event._state.adding, event._state.db = False, connection.alias
    # The database hashed the pieces; the definition is Python's. In a transaction, raising here rolls the
    # action back; in autocommit the event stands and every verification reports it as broken.
    if event_hash(chain.event_record(event)) != hash_:
        raise ChainIntegrityError(f"audit_append and Python disagree on the hash of event #{seq}")
    return event


def _clean(value: str, limit: int) -> str:
    return redact_key_ids(value).replace("\x00", "").encode("utf-8", "replace").decode()[:limit]


def actor_fields(actor: Any) -> tuple[int | None, str, str]:
    """(id, name, e-mail) of the person acting, as events (and rows that name a person) copy them."""
    if actor is None or not getattr(actor, "is_authenticated", False):
        return None, "system", ""
    name = actor.get_full_name() if hasattr(actor, "get_full_name") else ""
    name = name or actor.get_username()
    return actor.pk, _clean(name, 200), _clean(getattr(actor, "email", "") or "", 254)


def _request_fields(request: HttpRequest | None) -> tuple[str, str]:
    if request is None:
        # Signal receivers get no request; the request id middleware still knows which request this is.
        current = request_id_var.get()
        return ("" if current == "-" else current[:64]), _valid_ip(client_ip_var.get())
    request_id = str(getattr(request, "request_id", ""))[:64]
    return request_id, _valid_ip(request.META.get("REMOTE_ADDR", ""))


def _valid_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


# --- Checkpoints --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """What signing a tenant's head came to: the checkpoint, or why Kodori refused to sign."""

    tenant: Tenant
    checkpoint: Checkpoint | None
    refused: str = ""


def sign_head(
    tenant: Tenant, *, upto: AuditEvent | None = None, reason: CheckpointReason = CheckpointReason.SCHEDULED
) -> Signed:
    """Sign event ``upto`` (default: the head) of ``tenant``'s chain, unless it is already signed.

    Refuses while the chain does not verify: a break found now or kept from before and not acknowledged, a
    head the witness does not confirm, or a witness that cannot be read. Kodori never vouches for a chain
    it cannot verify. A signed checkpoint is witnessed once committed (``audit.witness``).
    """
    event = upto or chain.head(tenant)
    if event is None:
        return Signed(tenant, None)
    existing = Checkpoint.objects.for_tenant(tenant).filter(seq=event.seq).first()
    if existing is not None and existing.hash == event.hash:
        return Signed(tenant, existing)
    status = chain.verify(tenant, witness_mode=chain.WITNESS_LATEST, found_by="signing")
    refused = ""
    if status.broken is not None:
        refused = str(status.broken)
    elif status.witness_error:
        refused = f"the witness cannot be read: {status.witness_error}"
    elif status.verified_seq < event.seq:
        refused = f"the chain is verified only through #{status.verified_seq}"
    elif existing is not None:
        refused = f"checkpoint #{event.seq} already names another hash"
    if refused:
        logger.error("audit: not signing tenant %s at #%s: %s", tenant.slug, event.seq, refused)
        return Signed(tenant, None, refused)
    signed_at = timezone.now()
    key_id, public_key, signature = signing.sign(tenant.pk, event.seq, event.hash, format_time(signed_at))
    try:
        with transaction.atomic():
            checkpoint = Checkpoint.objects.create(
                tenant=tenant,
                seq=event.seq,
                hash=event.hash,
                signed_at=signed_at,
                key_id=key_id,
                public_key=public_key,
                signature=signature,
                reason=reason,
            )
            witness.write_after_commit(checkpoint)
    except IntegrityError:  # another signer got there first
        return Signed(tenant, Checkpoint.objects.for_tenant(tenant).filter(seq=event.seq).first())
    return Signed(tenant, checkpoint)


def sign_checkpoint(
    tenant: Tenant, *, upto: AuditEvent | None = None, reason: CheckpointReason = CheckpointReason.SCHEDULED
) -> Checkpoint | None:
    """``sign_head``'s checkpoint, or None when there was nothing to sign or Kodori refused (logged)."""
    return sign_head(tenant, upto=upto, reason=reason).checkpoint


def sign_heads() -> list[Signed]:
    """Sign the head of every chain that moved since its last checkpoint (refusals included)."""
    heads = dict(AuditEvent.objects.values_list("tenant").annotate(Max("seq")).order_by())
    signed = dict(Checkpoint.objects.values_list("tenant").annotate(Max("seq")).order_by())
    moved = [t for t, seq in heads.items() if seq > signed.get(t, 0)]
    return [sign_head(tenant) for tenant in Tenant.objects.filter(pk__in=moved).order_by("slug")]


def sign_checkpoints() -> int:
    """Sign the head of every chain that moved since its last checkpoint; returns how many were signed."""
    return sum(1 for result in sign_heads() if result.checkpoint is not None)


def verify_chains(*, full: bool = True, tenant: Tenant | None = None) -> list[chain.ChainStatus]:
    """Verify every tenant's chain (or one), logging each open break: the periodic full check, the command."""
    tenants = [tenant] if tenant is not None else list(Tenant.objects.order_by("slug"))
    results = []
    for each in tenants:
        status = chain.verify(each, full=full, found_by="full verification")
        for brk in status.breaks:
            logger.error("audit: chain of tenant %s broken at %s: %s (open)", each.slug, brk.span, brk.reason)
        results.append(status)
    return results


# --- Acknowledging a break ----------------------------------------------------------------------------------


class AcknowledgementError(ValueError):
    """The break cannot be acknowledged so: no reason, or it was acknowledged already."""


def acknowledge_break(
    brk: ChainBreak,
    *,
    reason: str,
    via: AcknowledgedVia,
    actor: Any = None,
    operator: str = "",
    request: HttpRequest | None = None,
) -> ChainBreak:
    """Record that a person dealt with ``brk``: an ``audit.break-acknowledged`` event, then the break itself.

    ``actor`` is the owner (``via=owner``) or the support user (``support``), None for an operator at the
    command line, who names themself in ``operator``. Later verifications pass over exactly this finding and
    verify the rest of the chain; a break at another position, or of another kind, is reported again. The
    verification cache is dropped, so the next verification starts from genesis.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise AcknowledgementError("Give a reason: it is recorded in the audit log.")
    with transaction.atomic():
        locked = ChainBreak.objects.select_for_update().select_related("tenant").get(pk=brk.pk)
        if locked.acknowledged_at is not None and chain.acknowledgement(locked) is not None:
            raise AcknowledgementError(
                f"The break at {locked.span} was acknowledged already, by {locked.ack_actor_name}."
            )
        payload = payloads.break_acknowledged(
            seq=locked.first_bad_seq, last_seq=locked.last_bad_seq, kind=locked.kind, detail=locked.detail,
            found_at=format_time(locked.found_at), reason=reason, via=via.value, operator=operator,
        )  # fmt: skip
        event = record(
            locked.tenant, EventType.AUDIT_BREAK_ACKNOWLEDGED, actor=actor, payload=payload, request=request
        )
        assert event is not None
        if locked.acknowledged_at is not None:
            # Marked acknowledged, but its event is gone from the chain: the new event is the acknowledgement
            # now; the row keeps the first one (the database refuses to change an acknowledged break).
            ChainVerification.objects.filter(tenant=locked.tenant).delete()
            return locked
        locked.acknowledged_at = event.created_at
        locked.ack_actor_id = event.actor_id
        locked.ack_actor_name = (operator or event.actor_name) if actor is None else event.actor_name
        locked.ack_actor_email = event.actor_email
        locked.ack_via = via.value
        locked.ack_reason = event.payload["reason"]
        locked.ack_seq = event.seq
        locked.save()
        ChainVerification.objects.filter(tenant=locked.tenant).delete()
    return locked
