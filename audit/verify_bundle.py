"""Offline verifier of Kodori's audit evidence: bundles, and signed documents (erasure certificates, audit
purge records). Python's standard library only (plus ``cryptography`` for signatures), no Django, no database.

Usage (an auditor, anywhere)::

    python verify_audit_bundle.py BUNDLE [--public-key KEY ...] [--require-signatures]
                                  [--extends EARLIER] [--save-head FILE]
    python verify_audit_bundle.py DOCUMENT.json [--public-key KEY ...]
    python -m audit.verify_bundle BUNDLE ...          # the same, from a Kodori checkout

``BUNDLE`` is the ``.zip`` that ``/audit`` exports, or the ``bundle.jsonl`` inside it. ``DOCUMENT`` is a
signed document: any ``.json`` file, or any file holding a JSON object whose ``format`` is
``kodori-signed-document``. ``KEY`` is the base64 Ed25519 public key shown on ``/audit`` (obtain it from
Kodori out of band, not from the bundle or the document).

What it checks, and the definitions it uses (``docs/audit.md`` is the prose version):

* Every event's ``hash`` = SHA-256(``prev_hash`` as 32 raw bytes ‖ canonical JSON of the event body),
  where the body is ``{"v": 1}`` plus every field of the event except ``hash`` and ``prev_hash``, and
  canonical JSON is ``json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
  encoded as UTF-8. The first event of a tenant has ``prev_hash`` = 64 zeros ("genesis").
* Sequence numbers are contiguous, each event's ``prev_hash`` is the previous event's ``hash``, and every
  event belongs to the bundle's tenant.
* Checkpoints: Ed25519 signatures by Kodori's deployment key over the canonical JSON of
  ``{"hash", "kind": "kodori-audit-checkpoint", "seq", "signed_at", "tenant", "v": 1}``; each checkpoint
  inside the bundle's range must name the hash of its event, and the bundle's last event must be covered by
  one (the export signs it), so a bundle cut short is detected. Signatures are verified when the
  ``cryptography`` package is importable; otherwise the script says plainly that it checked the chain only.
* Consistency (``--extends EARLIER``), as Certificate Transparency monitors check a log: ``EARLIER`` is a
  bundle of the same tenant verified before, or a head saved from one (``--save-head``), or a witness object
  of Kodori's checkpoint store (both are one checkpoint record as JSON). The new bundle must contain the
  earlier head's event with the same hash (or start right after it and link to it), and every event the two
  bundles share must have the same hash: a chain cut short, rewritten or forked since is refused.
* Signed documents: a JSON object with exactly the fields ``format`` (``kodori-signed-document``), ``v``
  (1), ``kind`` (one of ``SIGNED_DOCUMENT_KINDS``), ``document`` (the content: a JSON object without floats)
  and ``signature``, itself exactly ``{"algorithm": "Ed25519", "key_id", "public_key", "value"}``: the key's
  id (as ``key_id`` computes it), the raw 32-byte public key and the 64-byte signature, both in standard
  base64. The signature covers ``b"kodori signed document v1\x00"`` followed by the canonical JSON of
  ``{"document", "kind", "v": 1}``; the label keeps it from ever passing for a checkpoint's. It must verify
  under one of the ``--public-key`` keys; without one, under the key the document embeds, which proves
  integrity only, not origin. After a PASS the content is summarised (printed, never trusted further).
  Without ``cryptography`` a document cannot be checked at all (exit 2): its signature is all there is.

Exit status: 0 = PASS, 1 = FAIL (the first broken sequence, or the rule a document breaks, is named), 2 = the
bundle or document cannot be read (or, for a document, checked). This file is shipped inside every exported
bundle as ``verify_audit_bundle.py``; keep it standard-library only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENCODING_VERSION = 1
GENESIS_HASH = "0" * 64
BUNDLE_FORMAT = "kodori-audit-bundle"
CHECKPOINT_KIND = "kodori-audit-checkpoint"
# The fields of an event that its hash covers: all but ``hash`` and ``prev_hash`` (which is prefixed).
HASHED_FIELDS = (
    "seq",
    "tenant",
    "type",
    "created_at",
    "actor_id",
    "actor_name",
    "actor_email",
    "request_id",
    "ip",
    "payload",
)


def canonical_json(value: Any) -> bytes:
    """The canonical encoding: sorted keys, no whitespace, UTF-8, no floats (the writer refuses them)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def event_body(event: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an event that its hash covers, besides ``prev_hash``."""
    body = {name: event[name] for name in HASHED_FIELDS}
    body["v"] = ENCODING_VERSION
    return body


def chain_hash(prev_hash: str, body: bytes) -> str:
    """SHA-256 over the previous hash (32 raw bytes) followed by the canonical body."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def event_hash(event: Mapping[str, Any]) -> str:
    """The hash ``event`` must carry, computed with the standard library."""
    return chain_hash(event["prev_hash"], canonical_json(event_body(event)))


def checkpoint_message(tenant: int, seq: int, hash_: str, signed_at: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    body = {"kind": CHECKPOINT_KIND, "v": ENCODING_VERSION, "tenant": tenant, "seq": seq, "hash": hash_}
    body["signed_at"] = signed_at
    return canonical_json(body)


def key_id(public_key: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


# What a break is, by kind (Kodori's ``audit.models.BreakKind`` uses the same names).
EDITED = "edited"  # an event's hash does not match its content
RELINKED = "relinked"  # an event's prev_hash is not the hash of the event before it
MISSING = "missing"  # sequence numbers skip: events were removed
REORDERED = "reordered"  # a sequence number appears again or out of order
FOREIGN = "foreign"  # an event of another tenant
MALFORMED = "malformed"  # an event that cannot be read or encoded
REWRITTEN = "rewritten"  # an event differs from what a signed checkpoint says it was


@dataclass(frozen=True)
class Break:
    """Where a chain first fails to verify, and why.

    ``kind`` says what was found and ``detail`` pins it down (the hash computed, the next sequence number
    found...), so the same finding is recognised on a later verification; ``last_seq`` is the last sequence
    number it concerns (events ``seq..last_seq`` missing, say), None when it is one event.
    """

    seq: int
    reason: str
    kind: str = ""
    detail: str = ""
    last_seq: int | None = None

    def __str__(self) -> str:
        return f"chain broken at #{self.seq}: {self.reason}"


@dataclass
class ChainVerifier:
    """Feeds on events in sequence order and remembers the first break.

    ``expected_hashes`` maps sequence numbers to hashes that signed checkpoints vouch for. ``hash_event`` lets
    Kodori plug in a faster encoder that produces the same bytes (tested in tests/audit/test_canonical.py).
    """

    tenant: int
    prev_hash: str = GENESIS_HASH
    next_seq: int = 1
    expected_hashes: Mapping[int, str] = field(default_factory=dict)
    hash_event: Callable[[Mapping[str, Any]], str] = event_hash
    count: int = 0
    broken: Break | None = None

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def feed(self, event: Mapping[str, Any]) -> Break | None:
        """Check the next event; once broken, the verifier stays broken (the first break is the one named)."""
        if self.broken is not None:
            return self.broken
        self.broken = self.check(event)
        return self.broken

    def check(self, event: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> Break | None:
        """Check one event and advance past it when it passes.

        ``skip`` names kinds of break to let pass for this event: Kodori passes the kinds a person has
        acknowledged, to go on verifying the rest of the chain. A passed-over gap or link resumes the chain
        at this event; a passed-over repeat is ignored.
        """
        seq = event.get("seq")
        if REORDERED in skip and isinstance(seq, int) and seq < self.next_seq:
            return None
        broken = self._check(event, skip)
        if broken is None:
            self.prev_hash = event["hash"]
            self.next_seq = event["seq"] + 1
            self.count += 1
        return broken

    def _check(self, event: Mapping[str, Any], skip: frozenset[str]) -> Break | None:
        expected = self.next_seq
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return Break(expected, f"event after #{expected - 1} has no valid sequence number", MALFORMED)
        if seq > expected and MISSING not in skip:
            missing = f"#{expected}" if seq == expected + 1 else f"#{expected}..#{seq - 1}"
            return Break(
                expected, f"event {missing} is missing (the next event is #{seq})", MISSING, str(seq), seq - 1
            )
        if seq < expected:
            again = f"event #{seq} appears again or out of order after #{expected - 1}"
            return Break(expected, again, REORDERED, str(seq))
        if event.get("tenant") != self.tenant and FOREIGN not in skip:
            tenant = event.get("tenant")
            stranger = f"event #{seq} belongs to tenant {tenant!r}, not {self.tenant}"
            return Break(seq, stranger, FOREIGN, str(tenant))
        gap = seq > expected  # a gap let pass: the link to the missing event cannot hold
        if event.get("prev_hash") != self.prev_hash and RELINKED not in skip and not gap:
            return Break(
                seq,
                f"prev_hash of #{seq} is not the hash of #{seq - 1} (event inserted or removed?)",
                RELINKED,
                str(event.get("prev_hash")),
            )
        try:
            computed = self.hash_event(event)
        except (KeyError, TypeError, ValueError) as exc:
            if MALFORMED not in skip:
                return Break(seq, f"event #{seq} cannot be encoded: {exc!r}", MALFORMED)
            computed = str(event.get("hash"))
        if computed != event.get("hash") and EDITED not in skip:
            return Break(seq, f"hash of #{seq} does not match its content (edited?)", EDITED, computed)
        vouched = self.expected_hashes.get(seq)
        if vouched is not None and vouched != event.get("hash") and REWRITTEN not in skip:
            return Break(
                seq,
                f"#{seq} differs from the signed checkpoint of #{seq} (chain rewritten?)",
                REWRITTEN,
                str(event.get("hash")),
            )
        return None

    def run(self, events: Iterable[Mapping[str, Any]]) -> Break | None:
        for event in events:
            if self.feed(event) is not None:
                break
        return self.broken


# --- Signatures (optional: needs the `cryptography` package) ------------------------------------------------


def _ed25519_verifier() -> Callable[[bytes, bytes, bytes], bool] | None:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return None

    def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify


def b64decode(text: str) -> bytes:
    return base64.b64decode(text.strip(), validate=True)


# --- Reading and checking a bundle --------------------------------------------------------------------------


class BundleError(Exception):
    """The file is not a readable Kodori audit bundle."""


@dataclass
class Bundle:
    header: dict[str, Any]
    events: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]


def read_bundle(path: Path) -> Bundle:
    """Read a ``.zip`` export (its ``bundle.jsonl``) or a bare ``.jsonl`` bundle."""
    try:
        raw = path.read_bytes()
        if zipfile.is_zipfile(io.BytesIO(raw)):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                raw = archive.read("bundle.jsonl")
        lines = raw.decode("utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, KeyError, UnicodeDecodeError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    if not records or not isinstance(records[0], dict) or records[0].get("record") != "header":
        raise BundleError("the first line must be the bundle header")
    header = records[0]
    if header.get("format") != BUNDLE_FORMAT or header.get("version") != 1:
        raise BundleError(f"unknown bundle format {header.get('format')!r} version {header.get('version')!r}")
    events, checkpoints = [], []
    for number, record in enumerate(records[1:], start=2):
        kind = record.get("record") if isinstance(record, dict) else None
        if kind == "event":
            events.append(record)
        elif kind == "checkpoint":
            checkpoints.append(record)
        else:
            raise BundleError(f"line {number}: unknown record {kind!r}")
    return Bundle(header, events, checkpoints)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failure: str | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.lines.append(f"FAIL: {reason}")


def _public_keys(texts: Iterable[str]) -> dict[str, bytes]:
    """Key id → raw key for base64 Ed25519 public keys; BundleError (exit 2) names one that is not."""
    keys: dict[str, bytes] = {}
    for text in texts:
        try:
            raw = b64decode(text)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise BundleError(f"not a base64 Ed25519 public key: {text!r}")
        keys[key_id(raw)] = raw
    return keys


def _trusted_keys(bundle: Bundle, given: list[str], report: Report) -> dict[str, bytes]:
    source = given or [k.get("public_key", "") for k in bundle.header.get("public_keys", [])]
    keys = _public_keys(source)
    if given:
        report.say(f"trusted keys (from --public-key): {', '.join(sorted(keys))}")
    else:
        report.say(
            "WARNING: no --public-key given; signatures are checked against the keys inside the bundle, "
            "which proves consistency only. Pass the key shown on /audit to tie the checkpoints to Kodori."
        )
    return keys


def _check_signatures(
    bundle: Bundle, tenant: int, trusted: dict[str, bytes], require: bool, report: Report
) -> None:
    verify = _ed25519_verifier()
    if verify is None:
        note = "signatures NOT checked: the `cryptography` package is not installed (hash chain only)"
        if require:
            report.fail(note)
        else:
            report.say(f"NOTE: {note}")
        return
    for cp in bundle.checkpoints:
        seq, name = cp.get("seq"), cp.get("key_id", "?")
        public_key = trusted.get(str(name))
        if public_key is None:
            report.fail(f"checkpoint #{seq} is signed by key {name}, which is not trusted")
            return
        try:
            message = checkpoint_message(tenant, int(cp["seq"]), str(cp["hash"]), str(cp["signed_at"]))
            signature = b64decode(str(cp["signature"]))
        except (KeyError, TypeError, ValueError, binascii.Error):
            report.fail(f"checkpoint #{seq} is malformed")
            return
        if not verify(public_key, signature, message):
            report.fail(f"chain broken at #{seq}: the signature of checkpoint #{seq} is not valid (forged?)")
            return
    report.say(f"signatures: {len(bundle.checkpoints)} checkpoint signature(s) valid (Ed25519)")


def verify(bundle: Bundle, public_keys: list[str], require_signatures: bool = False) -> Report:
    """Check ``bundle``; the report says what was checked and the first failure, if any."""
    report = Report()
    header = bundle.header
    tenant_info = header.get("tenant") or {}
    tenant = tenant_info.get("id")
    first, last = header.get("first_seq"), header.get("last_seq")
    report.say(
        f"bundle: tenant {tenant_info.get('slug')!r} (id {tenant}), events #{first}..#{last}, "
        f"exported {header.get('exported_at')} by {header.get('exported_by')}"
    )
    if not isinstance(first, int) or not isinstance(last, int) or not isinstance(tenant, int):
        raise BundleError("the header lacks tenant id, first_seq or last_seq")
    for known in header.get("breaks", []) if isinstance(header.get("breaks"), list) else []:
        # Kodori's account of breaks it found earlier: information for the auditor, never a reason to pass.
        report.say(f"note: Kodori reports: {known}")
    trusted = _trusted_keys(bundle, public_keys, report)
    expected = {cp["seq"]: cp["hash"] for cp in bundle.checkpoints if first <= cp.get("seq", 0) <= last}
    start_prev = GENESIS_HASH
    if first > 1:
        start_prev = bundle.events[0].get("prev_hash", "") if bundle.events else ""
        report.say(f"note: the bundle starts at #{first}; its link to #{first - 1} is taken from the bundle")
    verifier = ChainVerifier(tenant=tenant, prev_hash=start_prev, next_seq=first, expected_hashes=expected)
    broken = verifier.run(bundle.events)
    if broken is None and verifier.last_seq != last:
        broken = Break(
            verifier.last_seq + 1, f"the bundle should end at #{last} but ends at #{verifier.last_seq}"
        )
    if broken is not None:
        report.fail(str(broken))
        return report
    report.say(
        f"hash chain: OK, {verifier.count} events #{first}..#{last}"
        + (" anchored at genesis" if first == 1 else "")
    )
    if not any(cp.get("seq") == last for cp in bundle.checkpoints):
        report.fail(
            f"chain broken at #{last}: no signed checkpoint covers the last event (bundle cut short?)"
        )
        return report
    strangers = [cp.get("seq") for cp in bundle.checkpoints if cp.get("tenant") != tenant]
    if strangers:
        report.fail(f"chain broken at #{strangers[0]}: checkpoint #{strangers[0]} is for another tenant")
        return report
    outside = [cp.get("seq") for cp in bundle.checkpoints if cp.get("seq") not in expected]
    if outside:
        report.say(f"note: checkpoints outside the range not checked: {outside}")
    report.say(f"checkpoints: {len(expected)} match their events; the last event #{last} is signed")
    _check_signatures(bundle, tenant, trusted, require_signatures, report)
    return report


# --- Consistency with an earlier bundle or head (--extends) ------------------------------------------------


@dataclass
class Head:
    """What an auditor kept from earlier: a tenant's signed head, and the events of an earlier bundle."""

    tenant: int
    seq: int
    hash: str
    checkpoint: dict[str, Any] | None
    events: dict[int, str]
    source: str


def head_record(bundle: Bundle) -> dict[str, Any] | None:
    """The checkpoint that signs a bundle's last event: what ``--save-head`` writes."""
    last = bundle.header.get("last_seq")
    return next((dict(cp) for cp in bundle.checkpoints if cp.get("seq") == last), None)


def read_head(path: Path) -> Head:
    """An earlier bundle (``.zip`` or ``.jsonl``), or one checkpoint record as JSON (a saved head or a witness
    object of Kodori's checkpoint store)."""
    try:
        bundle: Bundle | None = read_bundle(path)
    except BundleError:
        bundle = None
    try:
        if bundle is not None:
            events = {int(e["seq"]): str(e["hash"]) for e in bundle.events}
            tenant, last = int(bundle.header["tenant"]["id"]), int(bundle.header["last_seq"])
            return Head(tenant, last, events[last], head_record(bundle), events, f"bundle {path.name}")
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, KeyError, TypeError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"cannot read the earlier head {path}: {exc!r}") from exc
    if not isinstance(record, dict) or not {"tenant", "seq", "hash"} <= set(record):
        raise BundleError(f"{path} is neither a bundle nor a saved head (a checkpoint record)")
    try:
        tenant, seq, hash_ = int(record["tenant"]), int(record["seq"]), str(record["hash"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path}: the saved head is malformed") from exc
    return Head(tenant, seq, hash_, record, {seq: hash_}, f"head {path.name}")


def check_extends(bundle: Bundle, earlier: Head, trusted: dict[str, bytes], report: Report) -> None:
    """Fail unless ``bundle`` (verified already) holds ``earlier``'s head unchanged: the same chain, grown."""
    tenant = bundle.header["tenant"]["id"]
    first, last = bundle.header["first_seq"], bundle.header["last_seq"]
    if earlier.tenant != tenant:
        report.fail(f"the earlier {earlier.source} is of tenant {earlier.tenant}, this bundle of {tenant}")
        return
    if earlier.checkpoint is not None:
        _check_earlier_signature(earlier, trusted, report)
        if report.failure:
            return
    if earlier.seq > last:
        report.fail(
            f"chain broken at #{last + 1}: this bundle does not extend the earlier head #{earlier.seq}: it "
            f"ends at #{last} (events removed from the end since?)"
        )
        return
    if earlier.seq < first - 1:
        report.fail(
            f"cannot show that this bundle extends the earlier head #{earlier.seq}: it starts at #{first}; "
            f"export from #{earlier.seq} or earlier"
        )
        return
    ours = {e["seq"]: e["hash"] for e in bundle.events}
    if earlier.seq == first - 1:
        ours[earlier.seq] = bundle.events[0]["prev_hash"]  # the link to the event before the bundle
    for seq in sorted({**earlier.events, earlier.seq: earlier.hash}):
        if seq in ours and ours[seq] != earlier.events.get(seq, earlier.hash):
            report.fail(
                f"chain broken at #{seq}: #{seq} differs from the earlier {earlier.source} "
                f"(chain rewritten since?)"
            )
            return
    shared = sum(1 for seq in earlier.events if seq in ours)
    report.say(
        f"consistency: extends the earlier head #{earlier.seq} ({earlier.hash[:16]}…) of {earlier.source}; "
        f"{shared} event(s) in common, all identical"
    )


def _check_earlier_signature(earlier: Head, trusted: dict[str, bytes], report: Report) -> None:
    verify = _ed25519_verifier()
    cp = earlier.checkpoint or {}
    if verify is None:
        report.say("NOTE: the earlier head's signature was NOT checked (no `cryptography` package)")
        return
    public_key = trusted.get(str(cp.get("key_id")))
    try:
        message = checkpoint_message(earlier.tenant, earlier.seq, earlier.hash, str(cp["signed_at"]))
        signature = b64decode(str(cp["signature"]))
    except (KeyError, TypeError, ValueError, binascii.Error):
        public_key = None
    if public_key is None or not verify(public_key, signature, message):
        report.fail(f"the earlier head #{earlier.seq} ({earlier.source}) is not signed by a trusted key")


# --- Signed documents: erasure certificates, audit purge records --------------------------------------------

DOCUMENT_FORMAT = "kodori-signed-document"
DOCUMENT_VERSION = 1
SIGNED_DOCUMENT_KINDS = ("kodori-erasure-certificate", "kodori-audit-purge-record")
ERASURE_CERTIFICATE = SIGNED_DOCUMENT_KINDS[0]
DOCUMENT_FIELDS = ("format", "v", "kind", "document", "signature")
SIGNATURE_FIELDS = ("algorithm", "key_id", "public_key", "value")
SIGNATURE_ALGORITHM = "Ed25519"
# Domain separation: a checkpoint's message is bare canonical JSON (it starts with "{"), so no signature over
# one can ever verify as the other's.
DOCUMENT_LABEL = b"kodori signed document v1\x00"


class DocumentError(BundleError):
    """The file is not a signed document this verifier can read or check (exit 2)."""


class DocumentRejected(Exception):
    """A readable signed document that breaks a rule of the format: FAIL (exit 1), the message says which."""


def document_message(kind: str, document: Mapping[str, Any]) -> bytes:
    """The bytes a document signature covers: the label, then canonical JSON of content, kind and version."""
    return DOCUMENT_LABEL + canonical_json({"document": document, "kind": kind, "v": DOCUMENT_VERSION})


def json_value_problem(value: Any, where: str = "document") -> str | None:
    """Why ``value`` has no single canonical encoding, or None.

    Allowed: strings (valid Unicode), integers, booleans, null, lists, and objects with string keys. Floats
    are refused because encoders disagree on their text; so is anything JSON has no type for (a tuple too:
    JSON reads it back as a list, so what was signed and what a reader sees would differ in type).
    """
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return f"{where} is a float ({value!r}); signed documents hold no floats (use an int or a string)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} is not valid Unicode text"
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_value_problem(item, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a key that is not a string: {key!r}"
            problem = json_value_problem(key, f"{where} key {key!r}") or json_value_problem(
                item, f"{where}.{key}"
            )
            if problem is not None:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, which JSON has no type for"


@dataclass(frozen=True)
class SignedDocument:
    """A signed document that follows every rule of the format; its signature is not checked yet."""

    kind: str
    document: dict[str, Any]
    key_id: str
    public_key: bytes
    signature: bytes
    message: bytes


def _exact_base64(text: str, length: int) -> bytes | None:
    """The bytes of ``text`` when it is their one standard base64 spelling and they are ``length`` long."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == length and base64.b64encode(raw).decode() == text else None


def _exact_fields(value: Mapping[str, Any], expected: tuple[str, ...], prefix: str = "") -> None:
    extra = [name for name in value if name not in expected]
    if extra:
        raise DocumentRejected(f"field {prefix + extra[0]!r} is not expected")
    missing = [name for name in expected if name not in value]
    if missing:
        raise DocumentRejected(f"field {prefix + missing[0]!r} is missing")


def parse_document(signed: Any) -> SignedDocument:
    """Check a signed document's structure (everything but the signature itself).

    Raises DocumentError when it is not a signed document of a format, version and kind known here (exit 2),
    DocumentRejected when it breaks a rule (FAIL). Kodori (``audit.signing``) applies the same rules.
    """
    if not isinstance(signed, Mapping):
        raise DocumentError(f"a signed document is a JSON object, not {type(signed).__name__}")
    if signed.get("format") != DOCUMENT_FORMAT:
        raise DocumentError(
            f"unknown format {signed.get('format')!r} (a signed document is {DOCUMENT_FORMAT!r})"
        )
    _exact_fields(signed, DOCUMENT_FIELDS)
    version, kind = signed["v"], signed["kind"]
    if type(version) is not int or version != DOCUMENT_VERSION:  # True == 1, but it is no version number
        raise DocumentError(f"unknown signed document version {version!r}")
    if not isinstance(kind, str) or kind not in SIGNED_DOCUMENT_KINDS:
        raise DocumentError(f"unknown document kind {kind!r} (known: {', '.join(SIGNED_DOCUMENT_KINDS)})")
    document, signature = signed["document"], signed["signature"]
    if not isinstance(document, dict):
        raise DocumentRejected("field 'document' is not a JSON object")
    if not isinstance(signature, Mapping):
        raise DocumentRejected("field 'signature' is not a JSON object")
    _exact_fields(signature, SIGNATURE_FIELDS, "signature.")
    for name in SIGNATURE_FIELDS:
        if not isinstance(signature[name], str):
            raise DocumentRejected(f"field 'signature.{name}' is not a string")
    if signature["algorithm"] != SIGNATURE_ALGORITHM:
        raise DocumentRejected(f"signature algorithm {signature['algorithm']!r} is not {SIGNATURE_ALGORITHM}")
    public_key = _exact_base64(signature["public_key"], 32)
    if public_key is None:
        raise DocumentRejected("field 'signature.public_key' is not a base64 Ed25519 public key")
    if signature["key_id"] != key_id(public_key):
        raise DocumentRejected(
            f"field 'signature.key_id' ({signature['key_id']!r}) does not name the embedded public key "
            f"(whose key id is {key_id(public_key)})"
        )
    value = _exact_base64(signature["value"], 64)
    if value is None:
        raise DocumentRejected(
            "signature does not verify: 'signature.value' is not a base64 Ed25519 signature"
        )
    message = _signed_message(kind, document)
    return SignedDocument(kind, document, signature["key_id"], public_key, value, message)


def _signed_message(kind: str, document: dict[str, Any]) -> bytes:
    try:
        problem = json_value_problem(document)
        if problem is None:
            return document_message(kind, document)
    except RecursionError as exc:
        raise DocumentError("the document is nested too deeply to be checked") from exc
    except ValueError as exc:  # an integer too long to write out, say
        problem = f"the document cannot be encoded canonically: {exc}"
    raise DocumentRejected(problem)


def verify_document(signed: Mapping[str, Any], public_keys: list[str]) -> Report:
    """Check a signed document; the report says what was checked, the first failure, and after a PASS what
    the document says.

    ``public_keys`` (base64) are the keys the auditor trusts; with none, the document's own key is used, which
    proves integrity only. Raises DocumentError (exit 2) when the document cannot be read, or cannot be
    checked at all because the ``cryptography`` package is missing.
    """
    verify_signature = _ed25519_verifier()
    if verify_signature is None:
        raise DocumentError(
            "cannot check a signed document without the `cryptography` package (its signature is all there "
            "is to check): pip install cryptography"
        )
    trusted = _public_keys(public_keys)
    report = Report()
    try:
        parsed = parse_document(signed)
    except DocumentRejected as exc:
        report.fail(str(exc))
        return report
    report.say(f"document: {parsed.kind} (v{DOCUMENT_VERSION}), signed with key {parsed.key_id} (Ed25519)")
    if public_keys:
        report.say(f"trusted keys (from --public-key): {', '.join(sorted(trusted))}")
        if trusted.get(parsed.key_id) != parsed.public_key:
            report.fail(f"signed by an unknown key {parsed.key_id}: it is none of the --public-key keys")
            return report
    else:
        report.say(
            f"WARNING: no --public-key given; the signature is checked against the key inside the document "
            f"({parsed.key_id}), which proves integrity only, not origin: anyone can sign a document with a "
            "key of their own. Pass Kodori's public key (shown on /audit, or from your Kodori operator), "
            "obtained out of band, to tie the document to Kodori."
        )
    if not verify_signature(parsed.public_key, parsed.signature, parsed.message):
        report.fail("signature does not verify: the document was changed after it was signed, or forged")
        return report
    origin = f"by the trusted key {parsed.key_id}" if public_keys else "by the key the document names"
    report.say(f"signature: valid (Ed25519), {origin}")
    if parsed.kind == ERASURE_CERTIFICATE:
        _summarise_certificate(parsed.document, report)
    else:
        report.say(f"{parsed.kind}:")
        for path, value in _flattened(parsed.document, ""):
            report.say(f"  {_shown(path)}: {_shown(value, missing='null')}" if path else "  (empty)")
    if not public_keys:
        report.say("NOTE: this PASS proves integrity only, not origin (no --public-key given)")
    return report


def _shown(value: Any, missing: str = "?") -> str:
    """A value of a signed document as one line of text, control and formatting characters escaped."""
    if value is None:
        return missing
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _field(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]…``, or None where a step is missing or not an object."""
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _flattened(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for name, item in sorted(value.items()):
            yield from _flattened(item, f"{path}.{name}" if path else name)
    else:
        yield path, value


def _summarise_certificate(document: dict[str, Any], report: Report) -> None:
    """What an erasure certificate says, read defensively: a validly signed but odd document prints ``?``."""
    tenant = _field(document, "tenant")
    report.say(
        f"erasure certificate: tenant {_shown(_field(tenant, 'name'))} (id {_shown(_field(tenant, 'id'))}), "
        f"erased at {_shown(_field(document, 'erasure', 'completed_at'))}"
    )
    destroyed = _field(document, "destroyed")
    if isinstance(destroyed, dict):
        for name, count in sorted(destroyed.items()):
            report.say(f"  destroyed: {_shown(name)} = {_shown(count)}")
        if not destroyed:
            report.say("  destroyed: (none listed)")
    else:
        report.say(f"  destroyed: {_shown(destroyed)}")
    keys = _field(document, "keys")
    for key in _items(keys):
        provider, suffix = _field(key, "provider"), _field(key, "key_id_suffix")
        report.say(f"  key: provider {_shown(provider)}, key id ending {_shown(suffix)}")
    if keys == []:
        report.say("  key: (none listed)")
    not_covered = _field(document, "coverage", "not_covered")
    for line in _items(not_covered):
        report.say(f"  not covered: {_shown(line)}")
    if not_covered == []:
        report.say("  not covered: (none listed)")


def _items(value: Any) -> list[Any]:
    """A list as it is; anything else (missing, or a lone value) as a list of that one thing."""
    return value if isinstance(value, list) else [value]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Another JSON reader could keep the other value of a repeated key than the one the signature covered.
    value = dict(pairs)
    if len(value) != len(pairs):
        repeated = next(name for index, (name, _) in enumerate(pairs) if name in dict(pairs[:index]))
        raise ValueError(f"the key {repeated!r} appears twice in one object")
    return value


def read_document(path: Path) -> Any:
    """The JSON value in ``path`` (a byte-order mark is allowed); DocumentError when it is not JSON."""
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"), object_pairs_hook=_no_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DocumentError(f"cannot read {path}: {exc}") from exc


def is_document(path: Path) -> bool:
    """True when ``path`` holds a JSON object that says it is a signed document."""
    try:
        value = read_document(path)
    except DocumentError:
        return False
    return isinstance(value, dict) and value.get("format") == DOCUMENT_FORMAT


def _main_document(signed: Any, args: argparse.Namespace) -> int:
    bundle_only = [
        option
        for option, given in (
            ("--extends", args.extends),
            ("--save-head", args.save_head),
            ("--require-signatures", args.require_signatures),
        )
        if given
    ]
    if bundle_only:
        raise DocumentError(
            f"{', '.join(bundle_only)}: for audit bundles only; a signed document stands alone and its "
            "signature is always checked"
        )
    report = verify_document(signed, args.public_key)
    for line in report.lines:
        print(line)
    print("RESULT: FAIL" if report.failure else "RESULT: PASS")
    return 1 if report.failure else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Verify a Kodori audit evidence bundle, or a signed document, offline."
    )
    parser.add_argument(
        "bundle",
        type=Path,
        metavar="FILE",
        help="the exported .zip, or its bundle.jsonl; or a signed document (.json, e.g. a certificate)",
    )
    parser.add_argument("--public-key", action="append", default=[], help="base64 Ed25519 key from /audit")
    parser.add_argument(
        "--require-signatures", action="store_true", help="fail if signatures cannot be checked"
    )
    parser.add_argument(
        "--extends",
        type=Path,
        metavar="EARLIER",
        help="an earlier bundle of the same tenant, or a head saved with --save-head: fail unless this "
        "bundle extends it",
    )
    parser.add_argument(
        "--save-head", type=Path, metavar="FILE", help="after a PASS, save this bundle's signed head to FILE"
    )
    args = parser.parse_args(argv)
    try:
        if args.bundle.suffix.lower() == ".json":
            return _main_document(read_document(args.bundle), args)
        try:
            bundle = read_bundle(args.bundle)
        except BundleError:
            if not is_document(args.bundle):
                raise
            return _main_document(read_document(args.bundle), args)
        earlier = read_head(args.extends) if args.extends else None
        report = verify(bundle, args.public_key, args.require_signatures)
        if earlier is not None and report.failure is None:
            check_extends(bundle, earlier, _trusted_keys(bundle, args.public_key, Report()), report)
    except BundleError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for line in report.lines:
        print(line)
    if report.failure is None and args.save_head:
        head = head_record(bundle)
        args.save_head.write_text(json.dumps(head, sort_keys=True, indent=1) + "\n", encoding="utf-8")
        print(f"saved the signed head #{bundle.header['last_seq']} to {args.save_head}")
    print("RESULT: FAIL" if report.failure else "RESULT: PASS")
    return 1 if report.failure else 0


if __name__ == "__main__":
    sys.exit(main())
