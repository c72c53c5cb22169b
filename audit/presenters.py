"""How an event reads on ``/audit`` and in the CSV (a one-line summary, the rotation diff chip), and how a
chain break reads on ``/audit``, in the command's output and in the admin."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenants.units import format_bytes

from .models import AcknowledgedVia, AuditEvent, BreakKind, ChainBreak, EventType


@dataclass(frozen=True)
class KeyRef:
    """One side of a diff chip: ``aws-kms …a1b2c3d4e5f6``."""

    provider: str
    suffix: str

    def __str__(self) -> str:
        return f"{self.provider} …{self.suffix}" if self.suffix else self.provider


@dataclass(frozen=True)
class Chip:
    before: KeyRef
    after: KeyRef

    def __str__(self) -> str:
        return f"{self.before} → {self.after}"


def chip(event: AuditEvent) -> Chip | None:
    """The diff chip of a ``tenant-kms.rotated`` event (payload keys from ``payloads.key_rotated``)."""
    if event.type != EventType.TENANT_KMS_ROTATED:
        return None
    p = event.payload
    return Chip(
        KeyRef(str(p.get("fromProvider", "?")), str(p.get("fromKeyIdSuffix", ""))),
        KeyRef(str(p.get("toProvider", "?")), str(p.get("toKeyIdSuffix", ""))),
    )


def _key(p: dict[str, Any], prefix: str = "") -> str:
    provider = p.get(f"{prefix}Provider" if prefix else "provider") or "key"
    suffix = p.get(f"{prefix}KeyIdSuffix" if prefix else "keyIdSuffix") or ""
    return str(KeyRef(str(provider), str(suffix)))


def _by(p: dict[str, Any]) -> str:
    """The trigger of a seal or unseal event, e.g. " (schedule)"."""
    return f" ({p['trigger']})" if p.get("trigger") else ""


def _size(n: Any) -> str:
    return format_bytes(n) if isinstance(n, int) else "?"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    EventType.TENANT_KMS_REGISTERED: lambda p: f"Registered {_key(p)} (key #{p.get('keyRowId')})",
    EventType.TENANT_KMS_ROTATED: lambda p: f"Rotated {_key(p, 'from')} → {_key(p, 'to')}",
    EventType.TENANT_KMS_DISABLED: lambda p: f"Disabled {_key(p)} (was {p.get('previousStatus', '?')})",
    EventType.TENANT_KMS_VERIFY_FAILED: lambda p: f"Verification of {_key(p)} failed: {p.get('error', '')}",
    EventType.TENANT_KMS_RE_ENABLED: lambda p: (
        f"Re-enabled {_key(p)} as {p.get('status', '?')}" + (f": {p['reason']}" if p.get("reason") else "")
    ),
    EventType.TENANT_KMS_REMOVED: lambda p: f"Removed the failed registration of {_key(p)}",
    EventType.TENANT_KMS_UNREACHABLE: lambda p: (
        f"{_key(p)} refuses Kodori ({p.get('dataKeys', 0)} data keys unreadable): {p.get('error', '')}"
    ),
    EventType.TENANT_KMS_REACHABLE: lambda p: f"{_key(p)} answers again",
    EventType.TENANT_SEALED: lambda p: f"Tenant sealed{_by(p)}: {p.get('reason', '')}",
    EventType.TENANT_UNSEALED: lambda p: (
        f"Tenant unsealed{_by(p)}" + (f": {p['reason']}" if p.get("reason") else "")
    ),
    EventType.TENANT_CLOUD_KMS_ENABLED: lambda p: "Support switched Cloud KMS on",
    EventType.TENANT_CLOUD_KMS_DISABLED: lambda p: "Support switched Cloud KMS off",
    EventType.TENANT_DELETION_SCHEDULED: lambda p: (
        f"Deletion scheduled for {p.get('dueAt', '?')} "
        f"({p.get('waitingDays', '?')}-day wait, by {p.get('via', '?')})"
    ),
    EventType.TENANT_DELETION_CANCELLED: lambda p: f"Deletion cancelled (by {p.get('via', '?')})",
    EventType.TENANT_EXPORTED: lambda p: (
        f"Export part {p.get('part', '?')} of {p.get('parts', '?')} ({p.get('format', '?')}, "
        f"{p.get('files', '?')} files) downloaded"
    ),
    EventType.TENANT_ERASURE_STARTED: lambda p: (
        f"Erasure began: {(p.get('counts') or {}).get('dataKeys', '?')} data keys and "
        f"{(p.get('counts') or {}).get('keyVersions', '?')} key versions destroyed"
    ),
    EventType.TENANT_ERASED: lambda p: "Tenant erased; certificate issued",
    EventType.REWRAP_STARTED: lambda p: (
        f"Re-wrap of {p.get('dataKeys', '?')} data keys to {_key(p, 'to')} started"
    ),
    EventType.REWRAP_COMPLETED: lambda p: (
        f"Re-wrap to {_key(p, 'to')} completed: {p.get('rewrapped', '?')} data keys"
    ),
    EventType.REWRAP_FAILED: lambda p: (
        f"Re-wrap to {_key(p, 'to')} failed after {p.get('rewrapped', '?')}: {p.get('error', '')}"
    ),
    EventType.REWRAP_PAUSED: lambda p: (
        f"Re-wrap #{p.get('jobId', '?')} paused at {p.get('rewrapped', '?')} "
        f"of {p.get('total', '?')} data keys"
    ),
    EventType.REWRAP_RESUMED: lambda p: (
        f"Re-wrap #{p.get('jobId', '?')} resumed at {p.get('rewrapped', '?')} "
        f"of {p.get('total', '?')} data keys"
    ),
    EventType.REWRAP_CANCELLED: lambda p: (
        f"Re-wrap #{p.get('jobId', '?')} cancelled at {p.get('rewrapped', '?')} "
        f"of {p.get('total', '?')} data keys"
    ),
    EventType.MEMBERSHIP_ADDED: lambda p: f"Added {p.get('email', '?')} as {p.get('role', '?')}",
    EventType.MEMBERSHIP_ROLE_CHANGED: lambda p: (
        f"Changed {p.get('email', '?')} from {p.get('fromRole', '?')} to {p.get('toRole', '?')}"
    ),
    EventType.MEMBERSHIP_REMOVED: lambda p: f"Removed {p.get('email', '?')} ({p.get('role', '?')})",
    EventType.API_TOKEN_CREATED: lambda p: f"Created API token “{p.get('name', '')}”",
    EventType.API_TOKEN_REVOKED: lambda p: f"Revoked API token “{p.get('name', '')}”",
    EventType.BLOB_UPLOADED: lambda p: f"Uploaded “{p.get('name', '')}” ({_size(p.get('size'))})",
    EventType.BLOB_DELETED: lambda p: f"Deleted “{p.get('name', '')}” ({_size(p.get('size'))})",
    EventType.BLOB_DOWNLOADED: lambda p: f"Downloaded “{p.get('name', '')}”",
    EventType.BLOB_CORRUPT: lambda p: (
        f"“{p.get('name', '')}” is damaged: {p.get('damage', '?')}"
        + (f" at chunk {p['chunk']}" if p.get("chunk") is not None else "")
        + f" (found by {p.get('foundBy', '?')})"
    ),
    EventType.BLOB_REPAIRED: lambda p: (
        f"“{p.get('name', '')}” verified whole again ({p.get('foundBy', '?')})"
    ),
    EventType.AUDIT_EXPORTED: lambda p: (
        f"Exported the audit log as {p.get('format', '?')} (#{p.get('firstSeq')} to #{p.get('lastSeq')})"
    ),
    EventType.AUDIT_BREAK_ACKNOWLEDGED: lambda p: (
        f"Acknowledged the chain break at #{p.get('seq')} ({p.get('kind', '?')}, via {p.get('via', '?')}"
        + (f" {p['operator']}" if p.get("operator") else "")
        + f"): {p.get('reason', '')}"
    ),
}


def summary(event: AuditEvent) -> str:
    """One readable line; an unknown type (from a newer release) falls back to its name."""
    describe = _SUMMARIES.get(event.type)
    payload = event.payload if isinstance(event.payload, dict) else {}
    try:
        return describe(payload) if describe else event.type
    except (KeyError, TypeError, ValueError):
        return event.type


def row(event: AuditEvent) -> dict[str, Any]:
    """One line of the ``/audit`` table as plain values: the template only prints them (fast, and escaped)."""
    moment = event.created_at.astimezone(UTC)
    diff = chip(event)
    return {
        "seq": event.seq,
        "iso": moment.isoformat(),
        "when": moment.strftime("%Y-%m-%d %H:%M:%S"),
        "type": event.type,
        "system": event.actor_id is None,
        "actor": event.actor_name,
        "email": event.actor_email if event.actor_email != event.actor_name else "",
        "chip_from": str(diff.before) if diff else "",
        "chip_to": str(diff.after) if diff else "",
        "summary": "" if diff else summary(event),
        "payload": json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False),
        "request_id": event.request_id or "—",
        "ip": event.ip or "—",
        "hash": event.hash,
    }


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def break_row(brk: ChainBreak, proof: AuditEvent | None, full_verified_at: datetime | None) -> dict[str, Any]:
    """A chain break as ``/audit``, the command and the admin tell it: what, where, when, who dealt with it.

    ``proof`` is the ``audit.break-acknowledged`` event in the chain; a break marked acknowledged without one
    is reported as open (``unproven``). Whether the break is still there is what the last full verification
    saw: a break it did not find again may have been repaired, and stays reported until acknowledged.
    """
    repaired = full_verified_at is not None and brk.last_seen_at < full_verified_at
    payload = proof.payload if proof is not None and isinstance(proof.payload, dict) else {}
    via = AcknowledgedVia(payload["via"]).label if payload.get("via") in AcknowledgedVia.values else ""
    by = ""
    if proof is not None:
        by = payload.get("operator") or proof.actor_name
        if proof.actor_email and proof.actor_email != by:
            by = f"{by} <{proof.actor_email}>"
    return {
        "pk": brk.pk,
        "seq": brk.first_bad_seq,
        "span": brk.span,
        "kind": brk.kind,
        "kind_label": BreakKind(brk.kind).label if brk.kind in BreakKind.values else brk.kind,
        "reason": brk.reason,
        "found_at": _when(brk.found_at),
        "found_by": brk.found_by,
        "presence": (
            f"not found again by the full verification of {_when(full_verified_at)} UTC (the rows may have "
            "been put back; it stays reported until it is acknowledged)"
            if repaired
            else f"last seen {_when(brk.last_seen_at)} UTC"
        ),
        "still_present": not repaired,
        "acknowledged": proof is not None,
        "unproven": proof is None and brk.acknowledged_at is not None,
        "ack_at": _when(proof.created_at) if proof is not None else "",
        "ack_by": by,
        "ack_via": via,
        "ack_reason": payload.get("reason", ""),
        "ack_seq": proof.seq if proof is not None else brk.ack_seq,
    }


def break_line(row: dict[str, Any]) -> str:
    """One line for the command and the logs."""
    line = f"{row['span']} {row['kind']}: {row['reason']} (found {row['found_at']} UTC by {row['found_by']}"
    line += "; not found again by the last full verification)" if not row["still_present"] else ")"
    if row["acknowledged"]:
        line += (
            f"; acknowledged {row['ack_at']} UTC by {row['ack_by']} ({row['ack_via']}): {row['ack_reason']}"
        )
    elif row["unproven"]:
        line += f"; marked acknowledged, but the chain holds no acknowledgement event (#{row['ack_seq']})"
    return line
