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
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone

from tenants.models import Tenant
from tenants.request_context import client_ip_var, request_id_var

from . import chain, signing
from .encoding import body_pieces, canonical_json, event_hash, format_time
from .hygiene import check_payload, key_id_suffix, redact_key_ids
from .models import AuditEvent, Checkpoint, CheckpointReason, EventType

__all__ = [
    "ChainIntegrityError",
    "key_id_suffix",
    "record",
    "sign_checkpoint",
    "sign_checkpoints",
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
    actor_id, actor_name, actor_email = _actor_fields(actor)
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


def _actor_fields(actor: Any) -> tuple[int | None, str, str]:
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


def sign_checkpoint(
    tenant: Tenant, *, upto: AuditEvent | None = None, reason: CheckpointReason = CheckpointReason.SCHEDULED
) -> Checkpoint | None:
    """Sign event ``upto`` (default: the head) of ``tenant``'s chain, unless it is already signed.

    Refuses (returns None, logs an error) when the chain does not verify: Kodori never vouches for a broken
    chain.
    """
    event = upto or chain.head(tenant)
    if event is None:
        return None
    existing = Checkpoint.objects.for_tenant(tenant).filter(seq=event.seq).first()
    if existing is not None:
        return existing
    status = chain.verify(tenant)
    if not status.ok or status.verified_seq < event.seq:
        logger.error("audit: not signing tenant %s at #%s: %s", tenant.slug, event.seq, status.broken)
        return None
    signed_at = timezone.now()
    key_id, public_key, signature = signing.sign(tenant.pk, event.seq, event.hash, format_time(signed_at))
    try:
        with transaction.atomic():
            return Checkpoint.objects.create(
                tenant=tenant,
                seq=event.seq,
                hash=event.hash,
                signed_at=signed_at,
                key_id=key_id,
                public_key=public_key,
                signature=signature,
                reason=reason,
            )
    except IntegrityError:  # another signer got there first
        return Checkpoint.objects.for_tenant(tenant).filter(seq=event.seq).first()


def sign_checkpoints() -> int:
    """Sign the head of every chain that moved since its last checkpoint; returns how many were signed."""
    heads = dict(AuditEvent.objects.values_list("tenant").annotate(Max("seq")).order_by())
    signed = dict(Checkpoint.objects.values_list("tenant").annotate(Max("seq")).order_by())
    count = 0
    for tenant in Tenant.objects.filter(pk__in=[t for t, seq in heads.items() if seq > signed.get(t, 0)]):
        if sign_checkpoint(tenant) is not None:
            count += 1
    return count


def verify_chains(*, full: bool = True, tenant: Tenant | None = None) -> list[chain.ChainStatus]:
    """Verify every tenant's chain (or one) and log each break: the periodic full check and the command."""
    tenants = [tenant] if tenant is not None else list(Tenant.objects.order_by("slug"))
    results = []
    for each in tenants:
        status = chain.verify(each, full=full)
        if not status.ok:
            logger.error("audit: chain of tenant %s %s", each.slug, status.broken)
        results.append(status)
    return results
