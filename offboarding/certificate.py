"""The erasure certificate: what was destroyed, when, on whose request, and what it does and does not cover.

A ``kodori-erasure-certificate`` signed with the deployment's audit key (Ed25519, ``audit.signing``), in the
signed-document format the stand-alone verifier checks offline::

    python verify_audit_bundle.py erasure-certificate-acme.json --public-key <key from /audit>

Every value is a string, an integer, a boolean or null (no floats: they have no canonical form).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from audit import signing
from audit.encoding import format_time
from audit.models import AuditEvent
from encryption.models import KeyStatus
from tenants.lifecycle import due_text
from tenants.models import Tenant

from .models import DeletionRequest, Via

KIND = "kodori-erasure-certificate"


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


# A registration still pending or that failed its verification never wrapped a key version: nothing of the
# tenant's, in the database or a backup, depends on it, so it is no key to delete.
NEVER_USED = (KeyStatus.PENDING, KeyStatus.FAILED)


def used_customer_keys(deletion: DeletionRequest) -> list[dict[str, Any]]:
    """The customer's own keys that protected the tenant's key versions: the ones to delete in their KMS."""
    return [
        k
        for k in deletion.keys
        if str(k.get("wrapMethod", "")).startswith("customer_") and k.get("status") not in NEVER_USED
    ]


def key_names(keys: list[dict[str, Any]]) -> str:
    """``aws-kms …a1b2c3d4e5f6, gcp-kms …9f8e7d6c5b4a``: keys as the certificate and the e-mail name them."""
    return ", ".join(f"{k.get('provider')} …{k.get('keyIdSuffix')}" for k in keys)


def coverage(deletion: DeletionRequest, retained_until: datetime) -> dict[str, list[str]]:
    customer_keys = used_customer_keys(deletion)
    covered = [
        "Every wrapped data key and every tenant key version Kodori held for this tenant was overwritten "
        "with nothing in one database transaction, before any file was removed, and deleted afterwards: from "
        "that moment no file of the tenant could be decrypted with anything Kodori's database held, from the "
        "object store, an older object version or a copy.",
        "Every stored file object, every upload in progress, every API token and every membership of the "
        "tenant was then deleted.",
        "No call to the tenant's key management service was needed; a revoked or deleted customer key did "
        "not prevent the erasure.",
    ]
    not_covered = [
        "Database backups and replicas taken before the keys were destroyed still hold wrapped data keys and "
        "wrapped key versions until they expire under the operator's backup retention; object-store backups "
        "or versions may still hold encrypted file bytes.",
        "Database storage may hold the overwritten rows until PostgreSQL vacuums them.",
        f"The tenant's audit log is kept, read-only and visible to Kodori support only, until "
        f"{format_time(retained_until)}; it is then removed and a final signed record is kept.",
    ]
    if customer_keys:
        not_covered.append(
            "Wrapped keys in those backups were protected by the customer's own key(s) "
            f"({key_names(customer_keys)}): scheduling the deletion of those keys in the customer's own KMS "
            "makes every such backup permanently unreadable. Kodori cannot do this for the customer."
        )
    if any(k.get("wrapMethod") == "global" or str(k.get("wrapMethod", "")).startswith("operator_")
           for k in deletion.keys):  # fmt: skip
        not_covered.append(
            "Wrapped keys in those backups that were protected by a Kodori-managed or operator key can be "
            "opened by the operator until the backups expire."
        )
    return {"covered": covered, "not_covered": not_covered}


def document(
    deletion: DeletionRequest, tenant: Tenant, head: AuditEvent, *, retained_until: datetime
) -> dict[str, Any]:
    counts = deletion.counts
    return {
        "certificate_id": str(deletion.pk),
        "tenant": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name},
        "scheduled": {
            "at": _time(deletion.requested_at),
            "by": {"name": deletion.requested_by_name, "email": deletion.requested_by_email},
            "via": deletion.via,
            "on_written_request": deletion.via == Via.SUPPORT,
            "reason": deletion.reason,
            "waiting_days": deletion.waiting_days,
            "due_at": _time(deletion.due_at),
        },
        "erasure": {
            "keys_destroyed_at": _time(deletion.keys_destroyed_at),
            "completed_at": _time(deletion.completed_at),
            "order": [
                "tenant key versions and data keys destroyed (one transaction)",
                "stored objects and uploads in progress removed",
                "API tokens, memberships, exports and key rows removed",
                "certificate issued",
            ],
        },
        "destroyed": {
            "data_keys": int(counts.get("dataKeys", 0)),
            "key_versions": int(counts.get("keyVersions", 0)),
            "key_versions_destroyed_earlier": int(counts.get("keyVersionsDestroyedBefore", 0)),
            "blobs": int(counts.get("blobs", 0)),
            "blob_bytes": int(counts.get("blobBytes", 0)),
            "uploads_in_progress": int(counts.get("uploadsInProgress", 0)),
            "stored_objects": int(counts.get("objectsRemoved", 0))
            + int(counts.get("strayObjectsRemoved", 0)),
            "key_registrations": int(counts.get("keys", 0)),
            "api_tokens": int(counts.get("apiTokens", 0)),
            "memberships": int(counts.get("memberships", 0)),
        },
        "keys": [
            {
                "provider": k.get("provider"),
                "wrap_method": k.get("wrapMethod"),
                "key_id_suffix": k.get("keyIdSuffix"),
                "status_at_erasure": k.get("status"),
                "customer_managed": str(k.get("wrapMethod", "")).startswith("customer_"),
            }
            for k in deletion.keys
        ],
        "audit_chain": {
            "head_seq": head.seq,
            "head_hash": head.hash,
            "head_type": head.type,
            "retained_until": format_time(retained_until),
        },
        "coverage": coverage(deletion, retained_until),
        "issued_at": _time(deletion.completed_at),
    }


def issue(
    deletion: DeletionRequest, tenant: Tenant, head: AuditEvent, *, retained_until: datetime
) -> dict[str, Any]:
    """The signed certificate (the whole signed-document object)."""
    return signing.sign_document(KIND, document(deletion, tenant, head, retained_until=retained_until))


def as_bytes(signed: dict[str, Any]) -> bytes:
    return orjson.dumps(signed, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def filename(deletion: DeletionRequest) -> str:
    return f"erasure-certificate-{deletion.tenant.slug}-{deletion.pk.hex[:8]}.json"


def mail_lines(deletion: DeletionRequest) -> list[str]:
    tenant = deletion.tenant
    destroyed = (deletion.certificate or {}).get("document", {}).get("destroyed", {})
    lines = [
        f"Kodori erased {tenant.name} on {due_text(deletion.completed_at)}.",
        f"Destroyed first, in one transaction: {destroyed.get('data_keys', 0):,} data keys and "
        f"{destroyed.get('key_versions', 0):,} key versions. Then removed: {destroyed.get('blobs', 0):,} "
        f"files, {destroyed.get('api_tokens', 0):,} API tokens and "
        f"{destroyed.get('memberships', 0):,} memberships.",
        "The attached certificate is signed with Kodori's audit key. Verify it offline with the verifier "
        "that comes with every audit evidence bundle: python verify_audit_bundle.py "
        f"{filename(deletion)} --public-key <Kodori's audit public key>",
    ]
    customer = used_customer_keys(deletion)
    if customer:
        lines.append(
            f"To finish the job in your own KMS, schedule the deletion of {key_names(customer)}: database "
            "backups taken before the erasure then become permanently unreadable too."
        )
    return lines
