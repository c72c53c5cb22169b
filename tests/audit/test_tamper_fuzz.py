"""Every tampering with an exported bundle is detected by the offline verifier: 100%, not "usually".

A real chain is exported once through ``/audit/export.zip``; each case mutates a copy of the parsed bundle and
runs the auditor's verifier (``audit.verify_bundle.verify``, standard library) with Kodori's public key.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from audit import services, signing
from audit.verify_bundle import HASHED_FIELDS, Bundle, event_hash, read_bundle, verify
from tenants.models import Tenant

from .conftest import fill

pytestmark = pytest.mark.django_db

EDITS = 10_000
FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")


@pytest.fixture
def bundle(tmp_path: Path, tenant: Tenant, owner: Any, as_user: Any) -> Bundle:
    fill(tenant, 24, actor=owner)
    services.sign_checkpoint(tenant)  # #24; the export signs #40
    fill(tenant, 16, actor=owner)
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"".join(as_user(owner).get(reverse("audit:export_bundle")).streaming_content))
    return read_bundle(path)


def check(bundle: Bundle) -> str | None:
    return verify(bundle, [signing.public_key_b64()], require_signatures=True).failure


def _changed(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-3, -2, -1, 1, 2, 3, 1000])
    if value is None:
        return rng.randint(0, 99)
    if isinstance(value, dict):
        changed = dict(value)
        key = rng.choice([*changed, "forged"]) if changed else "forged"
        action = rng.random()
        if action < 0.3 and key in changed:
            del changed[key]
        else:
            changed[key] = _changed(changed.get(key, ""), rng)
        return changed
    text = str(value)
    position = rng.randrange(len(text) + 1)
    alphabet = "0123456789abcdef" if len(text) == 64 else "aZ9 .:-é€"
    # Never the character already there: an "edit" that changes nothing would prove nothing.
    replacement = rng.choice([c for c in alphabet if text[position : position + 1] != c])
    return text[:position] + replacement + text[position + 1 :]


def test_the_untouched_bundle_passes(bundle: Bundle) -> None:
    assert check(bundle) is None
    assert [e["seq"] for e in bundle.events] == list(range(1, 41))
    assert [c["seq"] for c in bundle.checkpoints] == [24, 40]


def test_random_single_field_edits_are_all_detected(bundle: Bundle) -> None:
    rng = random.Random(7)
    missed = []
    for _ in range(EDITS):
        index, field = rng.randrange(len(bundle.events)), rng.choice(FIELDS)
        original = bundle.events[index]
        edited = dict(original)
        while edited[field] == original[field]:
            edited[field] = _changed(original[field], rng)
        events = list(bundle.events)
        events[index] = edited
        failure = check(Bundle(bundle.header, events, bundle.checkpoints))
        if failure is None or f"chain broken at #{original['seq']}:" not in failure:
            missed.append((original["seq"], field, edited[field], failure))
    assert missed == []


def test_every_single_row_deletion_is_detected(bundle: Bundle) -> None:
    for index, event in enumerate(bundle.events):
        events = bundle.events[:index] + bundle.events[index + 1 :]
        failure = check(Bundle(bundle.header, events, bundle.checkpoints))
        assert failure is not None and f"#{event['seq']}" in failure, (event["seq"], failure)


def test_every_adjacent_swap_is_detected(bundle: Bundle) -> None:
    for index in range(len(bundle.events) - 1):
        events = list(bundle.events)
        events[index], events[index + 1] = events[index + 1], events[index]
        failure = check(Bundle(bundle.header, events, bundle.checkpoints))
        assert failure is not None and f"chain broken at #{index + 1}:" in failure, failure


def _forged(seq: int, prev_hash: str, tenant: int) -> dict[str, Any]:
    event = {
        "record": "event", "seq": seq, "tenant": tenant, "type": "membership.added",
        "created_at": "2026-01-01T00:00:00.000000Z", "actor_id": None, "actor_name": "system",
        "actor_email": "", "request_id": "", "ip": "", "payload": {"email": "mallory@evil.test"},
        "prev_hash": prev_hash,
    }  # fmt: skip
    event["hash"] = event_hash(event)
    return event


def test_every_forged_insert_is_detected(bundle: Bundle) -> None:
    tenant = bundle.header["tenant"]["id"]
    for index in range(len(bundle.events) + 1):
        prev_hash = bundle.events[index - 1]["hash"] if index else "0" * 64
        forged = _forged(index + 1, prev_hash, tenant)
        events = [*bundle.events[:index], forged, *bundle.events[index:]]
        assert check(Bundle(bundle.header, events, bundle.checkpoints)) is not None, index


def test_a_forged_insert_with_the_rest_rehashed_and_the_header_fixed_is_detected(bundle: Bundle) -> None:
    """The strongest attacker without the signing key: renumber, rehash, fix the header and checkpoints."""
    tenant = bundle.header["tenant"]["id"]
    for index in range(len(bundle.events) + 1):
        events = copy.deepcopy(bundle.events[:index])
        events.append(_forged(index + 1, events[-1]["hash"] if events else "0" * 64, tenant))
        for original in copy.deepcopy(bundle.events[index:]):
            original["seq"] += 1
            original["prev_hash"] = events[-1]["hash"]
            original["hash"] = event_hash(original)
            events.append(original)
        by_seq = {e["seq"]: e["hash"] for e in events}
        checkpoints = [dict(cp, hash=by_seq[cp["seq"]]) for cp in bundle.checkpoints]
        header = dict(bundle.header, last_seq=bundle.header["last_seq"] + 1)
        checkpoints[-1]["seq"] = header["last_seq"]
        checkpoints[-1]["hash"] = by_seq[header["last_seq"]]
        failure = check(Bundle(header, events, checkpoints))
        assert failure is not None and "signature" in failure, (index, failure)


def test_a_bundle_cut_short_is_detected(bundle: Bundle) -> None:
    header = dict(bundle.header, last_seq=30)
    failure = check(Bundle(header, bundle.events[:30], [bundle.checkpoints[0]]))
    assert failure is not None and "no signed checkpoint covers the last event" in failure


@pytest.mark.parametrize("field", ["hash", "signed_at", "signature", "seq", "key_id", "tenant"])
def test_an_edited_checkpoint_is_detected(bundle: Bundle, field: str) -> None:
    checkpoints = copy.deepcopy(bundle.checkpoints)
    checkpoints[0][field] = _changed(checkpoints[0][field], random.Random(1))
    assert check(Bundle(bundle.header, bundle.events, checkpoints)) is not None
