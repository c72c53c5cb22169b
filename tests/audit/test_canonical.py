"""The canonical encoding: Kodori's orjson encoder and the auditor's standard-library one agree exactly."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import encoding, verify_bundle
from audit.hygiene import MAX_INT, PayloadError, check_payload

# Exactly the values audit.hygiene admits: valid Unicode without NUL, 53-bit integers, no floats.
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
scalars = st.none() | st.booleans() | st.integers(-MAX_INT, MAX_INT) | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=25,
)
payloads = st.dictionaries(text, values, max_size=8)


@settings(max_examples=250, deadline=None)
@given(payloads)
def test_orjson_and_the_standard_library_encode_identically(payload: dict[str, Any]) -> None:
    check_payload(payload)
    assert encoding.canonical_json(payload) == verify_bundle.canonical_json(payload)


@settings(max_examples=100, deadline=None)
@given(payload=payloads, seq=st.integers(1, MAX_INT), name=text, prev=st.binary(min_size=32, max_size=32))
def test_both_event_hashes_agree(payload: dict[str, Any], seq: int, name: str, prev: bytes) -> None:
    event = {
        "seq": seq, "tenant": 3, "type": "blob.uploaded", "created_at": "2026-04-26T09:30:00.000001Z",
        "actor_id": None, "actor_name": name, "actor_email": "", "request_id": "", "ip": "",
        "payload": payload, "prev_hash": prev.hex(),
    }  # fmt: skip
    assert encoding.event_hash(event) == verify_bundle.event_hash(event)


def test_the_encoding_is_exactly_as_documented() -> None:
    """A worked example, computed by hand from docs/audit.md, so the definition cannot drift silently."""
    event = {
        "seq": 1,
        "tenant": 7,
        "type": "tenant-kms.rotated",
        "created_at": "2026-04-26T09:30:00.000000Z",
        "actor_id": 42,
        "actor_name": "Zoë Owner",
        "actor_email": "zoe@acme.test",
        "request_id": "req-1",
        "ip": "203.0.113.9",
        "payload": {"toProvider": "gcp-kms", "fromProvider": "aws-kms"},
        "prev_hash": "0" * 64,
    }
    body = (
        '{"actor_email":"zoe@acme.test","actor_id":42,"actor_name":"Zoë Owner",'
        '"created_at":"2026-04-26T09:30:00.000000Z","ip":"203.0.113.9",'
        '"payload":{"fromProvider":"aws-kms","toProvider":"gcp-kms"},"request_id":"req-1","seq":1,"tenant":7,'
        '"type":"tenant-kms.rotated","v":1}'
    ).encode()
    assert verify_bundle.canonical_json(verify_bundle.event_body(event)) == body
    expected = hashlib.sha256(bytes(32) + body).hexdigest()
    assert verify_bundle.event_hash(event) == encoding.event_hash(event) == expected


def test_timestamps_are_utc_with_microseconds() -> None:
    from zoneinfo import ZoneInfo

    moment = datetime(2026, 4, 26, 11, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert encoding.format_time(moment) == "2026-04-26T09:30:00.000000Z"
    assert encoding.format_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"


@pytest.mark.parametrize("value", [1.5, float("nan"), 2**53, b"x", {1: 2}, "\ud800"])
def test_values_the_two_encoders_might_disagree_on_are_refused(value: Any) -> None:
    with pytest.raises(PayloadError):
        check_payload({"v": value})


def test_the_stdlib_reference_rejects_nan_rather_than_inventing_json() -> None:
    with pytest.raises(ValueError):
        verify_bundle.canonical_json({"x": float("nan")})
    assert json.loads(verify_bundle.canonical_json({"é": "\u2028"})) == {"é": "\u2028"}
