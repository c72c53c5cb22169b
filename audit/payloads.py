"""Payload builders: the one place that decides each event type's payload keys (docs/audit.md lists them).

Callers pass what they have, full key identifiers included; the builders keep only ``keyIdSuffix`` values
and pass free text (error messages, file and token names) through ``redact_key_ids``, so a payload built
here always passes ``audit.hygiene.check_payload``. Keys are camelCase, as the product's documentation
spells them.

The rotation chip on ``/audit`` reads exactly the four keys of ``key_rotated``: ``fromProvider``,
``fromKeyIdSuffix``, ``toProvider``, ``toKeyIdSuffix``.
"""

from __future__ import annotations

from typing import Any

from .hygiene import key_id_suffix, redact_key_ids

MAX_TEXT = 500

# The encryption app's wrap methods (docs/architecture.md, "Providers") and the short names events carry.
PROVIDER_LABELS = {
    "global": "kodori-managed",
    "operator_kms_aws": "operator-aws-kms",
    "operator_kms_azure": "operator-azure-kv",
    "operator_kms_gcp": "operator-gcp-kms",
    "customer_kms_aws": "aws-kms",
    "customer_kms_azure": "azure-kv",
    "customer_kms_gcp": "gcp-kms",
}


def provider_label(wrap_method: str) -> str:
    """``customer_kms_aws`` → ``aws-kms``; a label that is already short passes through."""
    return PROVIDER_LABELS.get(wrap_method, wrap_method)


def text(value: object, limit: int = MAX_TEXT) -> str:
    """Free text made safe to record: key identifiers redacted, NULs and broken Unicode removed, shortened."""
    cleaned = redact_key_ids(str(value)).replace("\x00", "")
    cleaned = cleaned.encode("utf-8", errors="replace").decode("utf-8")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _ident(value: int | str) -> int | str:
    """Row ids stay integers; anything else (a UUID) is recorded as its text."""
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _key(provider: str, key_id: str, prefix: str = "") -> dict[str, str]:
    name = f"{prefix}Provider" if prefix else "provider"
    suffix = f"{prefix}KeyIdSuffix" if prefix else "keyIdSuffix"
    return {name: provider_label(provider), suffix: key_id_suffix(key_id)}


# --- Key custody --------------------------------------------------------------------------------------------


def key_registered(*, key_row_id: int, provider: str, key_id: str, region: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {"keyRowId": key_row_id, **_key(provider, key_id)}
    if region:
        payload["region"] = text(region, 64)
    return payload


def key_rotated(
    *,
    from_provider: str,
    from_key_id: str,
    to_provider: str,
    to_key_id: str,
    from_key_row_id: int | None = None,
    to_key_row_id: int | None = None,
) -> dict[str, Any]:
    """The payload of ``tenant-kms.rotated``; the first four keys make the diff chip."""
    return {
        **_key(from_provider, from_key_id, "from"),
        **_key(to_provider, to_key_id, "to"),
        "fromKeyRowId": from_key_row_id,
        "toKeyRowId": to_key_row_id,
    }


def key_disabled(
    *, key_row_id: int, previous_status: str, provider: str = "", key_id: str = ""
) -> dict[str, Any]:
    return {"keyRowId": key_row_id, "previousStatus": text(previous_status, 32), **_key(provider, key_id)}


def key_verify_failed(*, key_row_id: int, provider: str, key_id: str, error: str) -> dict[str, Any]:
    return {"keyRowId": key_row_id, **_key(provider, key_id), "error": text(error)}


def tenant_sealed(
    *, reason: str, provider: str = "", key_id: str = "", key_row_id: int | None = None, trigger: str = ""
) -> dict[str, Any]:
    """``trigger`` names what made Kodori seal (schedule, use, owner-retry, support-reprobe, disable, …)."""
    payload = {"reason": text(reason), "keyRowId": key_row_id, **_key(provider, key_id)}
    return {**payload, "trigger": text(trigger, 32)} if trigger else payload


def tenant_unsealed(
    *,
    reason: str = "",
    provider: str = "",
    key_id: str = "",
    key_row_id: int | None = None,
    trigger: str = "",
) -> dict[str, Any]:
    payload = {"reason": text(reason), "keyRowId": key_row_id, **_key(provider, key_id)}
    return {**payload, "trigger": text(trigger, 32)} if trigger else payload


def key_re_enabled(
    *, key_row_id: int, provider: str, key_id: str, status: str, reason: str = ""
) -> dict[str, Any]:
    """``tenant-kms.re-enabled``: the status the key came back as (active or retired); support's reason."""
    payload = {"keyRowId": key_row_id, **_key(provider, key_id), "status": text(status, 32)}
    return {**payload, "reason": text(reason)} if reason else payload


def key_removed(*, key_row_id: int, provider: str, key_id: str) -> dict[str, Any]:
    """``tenant-kms.removed``: a registration that never verified was removed (it protected nothing)."""
    return {"keyRowId": key_row_id, **_key(provider, key_id)}


def key_health(
    *,
    key_row_id: int,
    provider: str,
    key_id: str,
    status: str,
    trigger: str,
    error: str = "",
    data_keys: int = 0,
) -> dict[str, Any]:
    """``tenant-kms.unreachable`` (with the error and the data keys it makes unreadable) and
    ``tenant-kms.reachable``."""
    payload: dict[str, Any] = {
        "keyRowId": key_row_id,
        **_key(provider, key_id),
        "status": text(status, 32),
        "trigger": text(trigger, 32),
    }
    if error:
        payload["error"] = text(error)
        payload["dataKeys"] = int(data_keys)
    return payload


def cloud_kms_switched(*, enabled: bool, reason: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {"cloudKmsEnabled": bool(enabled)}
    if reason:
        payload["reason"] = text(reason)
    return payload


# --- Offboarding ---------------------------------------------------------------------------------


def deletion_scheduled(*, due_at: str, waiting_days: int, via: str, reason: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {"dueAt": due_at, "waitingDays": int(waiting_days), "via": via}
    if reason:
        payload["reason"] = text(reason)
    return payload


def deletion_cancelled(*, due_at: str, via: str, reason: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {"dueAt": due_at, "via": via}
    if reason:
        payload["reason"] = text(reason)
    return payload


def tenant_exported(
    *,
    export_id: str,
    export_format: str,
    part: int,
    parts: int,
    files: int,
    size: int,
    byte_range: str = "",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "exportId": export_id,
        "format": export_format,
        "part": int(part),
        "parts": int(parts),
        "files": int(files),
        "bytes": int(size),
    }
    if byte_range:
        payload["range"] = text(byte_range, 100)
    return payload


def erasure_counts(counts: dict[str, int], keys: list[dict[str, str]]) -> dict[str, Any]:
    """``tenant.erasure-started`` and ``tenant.erased``: what was destroyed, and the keys by suffix only."""
    return {
        "counts": {name: int(value) for name, value in counts.items()},
        "keys": [_key(k["wrap_method"], k["key_id"]) for k in keys],
    }


def rewrap_started(
    *,
    to_key_row_id: int,
    to_provider: str,
    to_key_id: str,
    data_keys: int,
    job_id: int | None = None,
    trigger: str = "",
    versions: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``versions`` maps a key version number (as text) to how many data keys it holds at the start."""
    payload: dict[str, Any] = {
        "toKeyRowId": to_key_row_id,
        **_key(to_provider, to_key_id, "to"),
        "dataKeys": data_keys,
    }
    if job_id is not None:
        payload["jobId"] = job_id
    if trigger:
        payload["trigger"] = text(trigger, 32)
    if versions is not None:
        payload["versions"] = {text(k, 16): int(v) for k, v in versions.items()}
    return payload


def rewrap_completed(
    *,
    to_key_row_id: int,
    to_provider: str,
    to_key_id: str,
    rewrapped: int,
    retired_key_row_ids: list[int],
    job_id: int | None = None,
    total: int | None = None,
    unreadable: int = 0,
    destroyed_versions: list[int] | None = None,
) -> dict[str, Any]:
    """``retiredKeyRowIds``: keys that protect nothing any more (safe to delete from their KMS)."""
    payload: dict[str, Any] = {
        "toKeyRowId": to_key_row_id,
        **_key(to_provider, to_key_id, "to"),
        "rewrapped": rewrapped,
        "retiredKeyRowIds": list(retired_key_row_ids),
    }
    if job_id is not None:
        payload["jobId"] = job_id
    if total is not None:
        payload["total"] = total
        payload["unreadable"] = unreadable
    if destroyed_versions is not None:
        payload["destroyedVersions"] = [int(v) for v in destroyed_versions]
    return payload


def rewrap_failed(
    *,
    to_key_row_id: int,
    to_provider: str,
    to_key_id: str,
    rewrapped: int,
    error: str,
    job_id: int | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "toKeyRowId": to_key_row_id,
        **_key(to_provider, to_key_id, "to"),
        "rewrapped": rewrapped,
        "error": text(error),
    }
    if job_id is not None:
        payload["jobId"] = job_id
    if total is not None:
        payload["total"] = total
    return payload


def rewrap_control(*, job_id: int, rewrapped: int, total: int) -> dict[str, Any]:
    """The payload of ``rewrap.paused`` / ``rewrap.resumed`` / ``rewrap.cancelled``: where the walk stood."""
    return {"jobId": job_id, "rewrapped": rewrapped, "total": total}


def auth_secret_rotated(
    *, versions: list[int], kek_fingerprint: str, previous_kek_fingerprints: list[str], failed: int = 0
) -> dict[str, Any]:
    """The payload of ``tenant-kms.auth-secret-rotated``: the tenant's kodori-managed key versions re-wrapped
    under the current ``AUTH_SECRET`` (``manage.py rotate_auth_secret``).

    Fingerprints are the 8-byte tags already stored in front of every kodori-managed wrapped value (hex):
    HMAC-SHA256(KEK_t, "fingerprint")[:8] of the tenant's derived KEK. They show which secret wraps the
    keys now and which wrapped them before, and reveal nothing about either beyond equality. Never a secret.
    """
    return {
        "rewrapped": len(versions),
        "versions": sorted(int(v) for v in versions),
        "failed": int(failed),
        "kekFingerprint": text(kek_fingerprint, 16),
        "previousKekFingerprints": sorted({text(f, 16) for f in previous_kek_fingerprints}),
    }


# --- People and tokens --------------------------------------------------------------------------------------


def membership_added(*, user_id: int, email: str, role: str, created_account: bool) -> dict[str, Any]:
    return {
        "userId": user_id,
        "email": text(email, 254),
        "role": str(role),
        "createdAccount": created_account,
    }


def membership_role_changed(*, user_id: int, email: str, from_role: str, to_role: str) -> dict[str, Any]:
    return {"userId": user_id, "email": text(email, 254), "fromRole": str(from_role), "toRole": str(to_role)}


def membership_removed(*, user_id: int, email: str, role: str) -> dict[str, Any]:
    return {"userId": user_id, "email": text(email, 254), "role": str(role)}


def api_token_created(
    *, token_id: int | str, name: str, role: str = "", expires_at: str | None = None
) -> dict[str, Any]:
    return {"tokenId": _ident(token_id), "name": text(name, 200), "role": str(role), "expiresAt": expires_at}


def api_token_revoked(*, token_id: int | str, name: str) -> dict[str, Any]:
    return {"tokenId": _ident(token_id), "name": text(name, 200)}


def api_token_revoked_for_reason(*, token_id: int | str, name: str, reason: str) -> dict[str, Any]:
    """``api-token.revoked`` when Kodori revoked the token itself, e.g. ``membership removed``."""
    return {**api_token_revoked(token_id=token_id, name=name), "reason": text(reason, 200)}


# --- Blobs and the log itself -------------------------------------------------------------------------------


def blob_uploaded(
    *, blob_id: int | str, name: str, size: int, key_version: int | None = None
) -> dict[str, Any]:
    return {"blobId": _ident(blob_id), "name": text(name, 300), "size": size, "keyVersion": key_version}


def blob_deleted(*, blob_id: int | str, name: str, size: int) -> dict[str, Any]:
    return {"blobId": _ident(blob_id), "name": text(name, 300), "size": size}


def blob_downloaded(*, blob_id: int | str, name: str, byte_range: str = "") -> dict[str, Any]:
    return {"blobId": _ident(blob_id), "name": text(name, 300), "range": text(byte_range, 64)}


def blob_corrupt(
    *, blob_id: int | str, name: str, chunk: int | None, damage: str, found_by: str
) -> dict[str, Any]:
    """``chunk``: the first chunk index that failed (None when the object is missing or wrongly sized)."""
    return {
        "blobId": _ident(blob_id),
        "name": text(name, 300),
        "chunk": chunk,
        "damage": text(damage, 64),
        "foundBy": text(found_by, 32),
    }


def blob_repaired(*, blob_id: int | str, name: str, found_by: str) -> dict[str, Any]:
    return {"blobId": _ident(blob_id), "name": text(name, 300), "foundBy": text(found_by, 32)}


def audit_exported(*, export_format: str, first_seq: int, last_seq: int, filters: str) -> dict[str, Any]:
    return {"format": export_format, "firstSeq": first_seq, "lastSeq": last_seq, "filters": text(filters)}


def break_acknowledged(
    *,
    seq: int,
    last_seq: int,
    kind: str,
    detail: str,
    found_at: str,
    reason: str,
    via: str,
    operator: str = "",
) -> dict[str, Any]:
    """``seq``, ``kind`` and ``detail`` name the finding exactly (a verification checks them against the break
    the acknowledgement is for); ``reason`` is the person's, ``via`` owner / support / operator."""
    payload: dict[str, Any] = {
        "seq": seq,
        "lastSeq": last_seq,
        "kind": kind,
        "detail": detail,
        "foundAt": found_at,
        "reason": text(reason),
        "via": via,
    }
    if operator:
        payload["operator"] = text(operator, 200)
    return payload
