"""What may go into an audit payload: no full key identifiers, and only values that encode canonically.

Full key identifiers (AWS ARNs, Azure Key Vault key URLs, GCP CryptoKey paths) stay in the encryption app's
own tables. Audit payloads carry only their last 12 characters (``key_id_suffix``). ``check_payload``
refuses a payload that still holds a full identifier anywhere, so a careless caller fails loudly instead of
leaking one; the payload builders in ``audit.payloads`` pass free text (error messages, file names) through
``redact_key_ids``.

The value rules make the canonical JSON of ``audit.verify_bundle`` identical under the standard library and
orjson, and make a value read back from PostgreSQL's ``jsonb`` equal to the value written: strings (valid
Unicode, no NUL), integers within ±(2**53 - 1), booleans, null, lists, and objects with string keys. No
floats.
"""

from __future__ import annotations

import re
from typing import Any

from .encoding import canonical_json

SUFFIX_LENGTH = 12
MAX_INT = 2**53 - 1
MAX_DEPTH = 8
MAX_PAYLOAD_BYTES = 16 * 1024

# A full key identifier of any provider, as it could appear inside longer text (an SDK error message, say).
_STOP = r"[^\s\"'<>,;()\[\]{}]"
FULL_KEY_ID = re.compile(
    rf"arn:aws[a-z-]*:(?:kms|iam|sts):{_STOP}*"
    rf"|https?://{_STOP}+?\.(?:vault|managedhsm)\.{_STOP}+?/keys/{_STOP}*"
    rf"|projects/{_STOP}+?/cryptoKeys/{_STOP}*",
    re.IGNORECASE,
)


class PayloadError(ValueError):
    """A payload that must not be recorded; the message names the offending key path."""


def key_id_suffix(key_id: str) -> str:
    """The last 12 characters of a key identifier: enough to recognise a key, too little to name it."""
    return key_id.strip().rstrip("/")[-SUFFIX_LENGTH:]


def redact_key_ids(text: str) -> str:
    """``text`` with every full key identifier replaced by ``…`` and its suffix."""
    return FULL_KEY_ID.sub(_suffix_of_match, text)


def _suffix_of_match(match: re.Match[str]) -> str:
    # Sentence punctuation after an identifier is not part of it: "…denied on <arn>."
    found = match.group(0)
    core = found.rstrip(".:!?")
    return "…" + key_id_suffix(core) + found[len(core) :]


def contains_full_key_id(text: str) -> bool:
    return FULL_KEY_ID.search(text) is not None


def check_payload(payload: Any) -> None:
    """Raise ``PayloadError`` unless ``payload`` is a dict that is safe and canonical to record."""
    if not isinstance(payload, dict):
        raise PayloadError(f"an audit payload must be a dict, not {type(payload).__name__}")
    _check(payload, "payload", 0)
    if len(canonical_json(payload)) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"an audit payload must encode to at most {MAX_PAYLOAD_BYTES} bytes")


def check_text(value: str, where: str) -> None:
    """Refuse a string that is not valid canonical text or that holds a full key identifier."""
    if "\x00" in value:
        raise PayloadError(f"{where}: NUL characters cannot be stored")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{where}: not valid Unicode text") from exc
    if contains_full_key_id(value):
        raise PayloadError(
            f"{where}: holds a full key identifier; record only audit.hygiene.key_id_suffix(key_id) "
            "or pass free text through audit.hygiene.redact_key_ids"
        )


def _check(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PayloadError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise PayloadError(f"{where}: integers must lie within ±(2**53 - 1)")
        return
    if isinstance(value, str):
        check_text(value, where)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"{where}: object keys must be strings, not {key!r}")
            check_text(key, f"{where} key {key!r}")
            _check(item, f"{where}.{key}", depth + 1)
        return
    raise PayloadError(f"{where}: {type(value).__name__} values cannot be recorded (use str or int)")
