"""The canonical encoding inside Kodori: orjson, byte-identical to the standard-library reference.

The definitions (which fields, genesis, the checkpoint message) live in ``audit.verify_bundle``, the
standalone verifier that auditors run. This module only produces the same bytes about five times faster;
``tests/audit/test_canonical.py`` checks the two byte for byte over generated values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from .verify_bundle import ENCODING_VERSION, HASHED_FIELDS


def canonical_json(value: Any) -> bytes:
    """Byte-identical to ``verify_bundle.canonical_json`` for every value ``audit.hygiene`` admits."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def format_time(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: ``2026-04-26T09:30:00.000000Z``. The only timestamp form that gets hashed."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(event: Mapping[str, Any]) -> str:
    """``verify_bundle.event_hash``, faster."""
    body = {name: event[name] for name in HASHED_FIELDS}
    body["v"] = ENCODING_VERSION
    return hashlib.sha256(bytes.fromhex(event["prev_hash"]) + canonical_json(body)).hexdigest()


# The hashed body's keys in canonical (sorted) order. ``body_pieces`` relies on it.
_BODY_ORDER = ("actor_email", "actor_id", "actor_name", "created_at", "ip", "payload", "request_id", "seq",
               "tenant", "type", "v")  # fmt: skip
assert tuple(sorted((*HASHED_FIELDS, "v"))) == _BODY_ORDER


def body_pieces(
    *,
    tenant: int,
    type_: str,
    actor_id: int | None,
    actor_name: str,
    actor_email: str,
    request_id: str,
    ip: str,
    payload: Any,
) -> tuple[bytes, bytes, bytes]:
    """The canonical body of an event in three pieces around ``created_at`` and ``seq``.

    ``a + created_at + b + str(seq) + c`` is ``canonical_json`` of the body: keys sorted, and neither value
    needs escaping. PostgreSQL's ``audit_append`` fills in the two values once it holds the tenant's lock.
    """
    j = canonical_json
    a = (
        b'{"actor_email":'
        + j(actor_email)
        + b',"actor_id":'
        + j(actor_id)
        + b',"actor_name":'
        + j(actor_name)
    )
    b = b',"ip":' + j(ip) + b',"payload":' + j(payload) + b',"request_id":' + j(request_id) + b',"seq":'
    c = b',"tenant":' + j(tenant) + b',"type":' + j(type_) + b',"v":' + j(ENCODING_VERSION) + b"}"
    return a + b',"created_at":"', b'"' + b, c
