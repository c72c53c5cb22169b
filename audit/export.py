"""Exports of the audit log: the filtered view as CSV or JSONL, and the evidence bundle an auditor verifies
offline.

The JSONL export is the CSV's events, one JSON object a line, with the CSV's columns (the payload as an
object, ``actor_id`` null for the system) plus ``tenant``: with it each line holds every field its
``hash`` covers, so ``verify_bundle.event_hash(line)`` recomputes it, and a line's ``prev_hash`` is the hash
of the event before it in the chain. Unlike the bundle it carries no signature: the bundle is the evidence,
this export is for tools.

The bundle is a zip holding ``bundle.jsonl`` (a header line, the events, the checkpoints), ``README.txt``,
``public-key.txt`` and ``verify_audit_bundle.py`` (a copy of ``audit/verify_bundle.py``). A hash chain can
only be checked without gaps, so the bundle holds every event from the first to the last one the filters
match, whatever their type or actor; the header records the filters. Both exports stream: a million events
never sit in memory at once.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson
from django.db.models import Max, Min, QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from tenants.models import Tenant

from . import chain, signing, verify_bundle, witness
from .encoding import canonical_json, format_time
from .filters import AuditFilters
from .models import AuditEvent, Checkpoint, CheckpointReason
from .presenters import break_line, break_row, summary
from .services import sign_checkpoint

CSV_COLUMNS = [
    "seq", "created_at", "type", "actor_name", "actor_email", "actor_id", "request_id", "ip", "summary",
    "payload", "prev_hash", "hash",
]  # fmt: skip


class _Echo:
    """The file-like object csv.writer wants, handing each row straight back."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    # Spreadsheets run cells that start like a formula; quote them (OWASP "CSV injection").
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_rows(events: QuerySet[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in events.order_by("seq").iterator(chunk_size=2000):
        yield writer.writerow(
            [
                event.seq,
                format_time(event.created_at),
                event.type,
                _cell(event.actor_name),
                _cell(event.actor_email),
                event.actor_id if event.actor_id is not None else "",
                event.request_id,
                event.ip,
                _cell(summary(event)),
                canonical_json(event.payload).decode(),
                event.prev_hash,
                event.hash,
            ]
        )


def jsonl_lines(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    """One line per event, oldest first: the CSV's fields, unescaped (JSON needs no formula quoting)."""
    for event in events.order_by("seq").iterator(chunk_size=2000):
        line = {
            "seq": event.seq,
            "created_at": format_time(event.created_at),
            "type": event.type,
            "actor_name": event.actor_name,
            "actor_email": event.actor_email,
            "actor_id": event.actor_id,
            "request_id": event.request_id,
            "ip": event.ip,
            "summary": summary(event),
            "payload": event.payload,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
            "tenant": event.tenant_id,
        }
        yield orjson.dumps(line) + b"\n"


def bundle_range(events: QuerySet[AuditEvent]) -> tuple[int, int] | None:
    """The first and last sequence numbers that the (filtered) events span, or None when nothing matches."""
    span = events.aggregate(first=Min("seq"), last=Max("seq"))
    return None if span["first"] is None else (span["first"], span["last"])


class _Chunks:
    """An unseekable sink for zipfile that hands back what was written so far."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _public_keys(checkpoints: list[Checkpoint]) -> list[dict[str, Any]]:
    import base64

    current = signing.current_key_id()
    keys = {kid: base64.b64encode(raw).decode() for kid, raw in signing.trusted_public_keys().items()}
    for cp in checkpoints:
        keys.setdefault(cp.key_id, cp.public_key)
    return [
        {"key_id": kid, "algorithm": "Ed25519", "public_key": key, "current": kid == current}
        for kid, key in sorted(keys.items(), key=lambda item: item[0] != current)
    ]


def _breaks(status: chain.ChainStatus) -> list[str]:
    """Kodori's own account of the chain's breaks, for the auditor: open ones, then acknowledged ones."""
    seen = status.full_verified_at
    lines = [f"open break {break_line(break_row(b, None, seen))}" for b in status.breaks]
    for b in status.acknowledged:
        lines.append(f"break {break_line(break_row(b, status.proofs.get(b.pk), seen))}")
    return lines


def bundle_header(
    tenant: Tenant,
    first: int,
    last: int,
    *,
    exported_by: str,
    filters: AuditFilters,
    status: chain.ChainStatus,
    checkpoints: list[Checkpoint],
) -> dict[str, Any]:
    return {
        "record": "header",
        "format": verify_bundle.BUNDLE_FORMAT,
        "version": 1,
        "tenant": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name},
        "exported_at": format_time(timezone.now()),
        "exported_by": exported_by,
        "filters": filters.querystring(),
        "first_seq": first,
        "last_seq": last,
        "head_seq": status.head_seq,
        "chain_status": "verified" if status.ok else str(status.broken),
        "breaks": _breaks(status),
        "public_keys": _public_keys(checkpoints),
        "encoding": "hash = SHA-256(prev_hash bytes || canonical JSON of {v:1, other fields}), see README",
    }


def signed_bundle(
    tenant: Tenant,
    first: int,
    last: int,
    *,
    exported_by: str,
    filters: AuditFilters,
    status: chain.ChainStatus,
) -> Iterator[bytes]:
    """The evidence bundle of events ``first``..``last``, with event ``last`` signed first, so a bundle cut
    short fails offline verification (``/audit``'s export and the tenant export)."""
    end = AuditEvent.objects.for_tenant(tenant).get(seq=last)
    sign_checkpoint(tenant, upto=end, reason=CheckpointReason.EXPORT)
    checkpoints = list(
        Checkpoint.objects.for_tenant(tenant).filter(seq__gte=first, seq__lte=last).order_by("seq")
    )
    header = bundle_header(
        tenant, first, last, exported_by=exported_by, filters=filters, status=status, checkpoints=checkpoints
    )
    return bundle_chunks(tenant, header, checkpoints)


def whole_chain_bundle(tenant: Tenant, *, exported_by: str) -> Iterator[bytes]:
    """The evidence bundle of ``tenant``'s whole chain up to its head now. Nothing when the chain is empty."""
    end = chain.head(tenant)
    if end is None:
        return iter(())
    status = chain.verify(tenant, found_by="export")
    return signed_bundle(tenant, 1, end.seq, exported_by=exported_by, filters=AuditFilters(), status=status)


def bundle_chunks(tenant: Tenant, header: dict[str, Any], checkpoints: list[Checkpoint]) -> Iterator[bytes]:
    """The zip, piece by piece."""
    sink = _Chunks()
    first, last = header["first_seq"], header["last_seq"]
    readme = render_to_string("audit/bundle_README.txt", {"header": header, "checkpoints": checkpoints})
    # An unseekable sink: zipfile then writes data descriptors instead of seeking back.
    with zipfile.ZipFile(cast(Any, sink), "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", readme)
        archive.writestr("public-key.txt", "\n".join(k["public_key"] for k in header["public_keys"]) + "\n")
        archive.writestr("verify_audit_bundle.py", Path(verify_bundle.__file__).read_bytes())
        yield sink.take()
        with archive.open("bundle.jsonl", "w", force_zip64=True) as out:
            out.write(orjson.dumps(header) + b"\n")
            for number, record in enumerate(chain.iter_records(tenant.pk, first - 1, last), start=1):
                out.write(orjson.dumps({"record": "event", **record}) + b"\n")
                if number % 5000 == 0:
                    yield sink.take()
            for cp in checkpoints:
                out.write(orjson.dumps(witness.checkpoint_record(cp)) + b"\n")
        yield sink.take()
    yield sink.take()
