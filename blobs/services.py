"""Blob and API-token verbs. Each is atomic and writes its audit event in the same transaction.

Uploads live in ``blobs.uploads`` (they stream, so they are not one transaction); downloads in
``blobs.downloads``. Here: deleting a blob, the rules for who may delete it, API tokens (create, revoke,
authenticate), and the sweeper that cleans up after crashed uploads.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption import keyring
from encryption.models import DataKey
from tenants.models import Membership, Role, Tenant

from . import uploads
from .errors import check_writable
from .models import ApiToken, Blob, BlobStatus
from .storage import delete_object

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "kdr_"  # noqa: S105  # recognisable by secret scanners, not a secret itself
# How often last_used_at is written at most: a busy token must not turn every request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def can_delete(membership: Membership, blob: Blob) -> bool:
    """Owners and admins delete any blob; members their own; viewers none."""
    role = membership.role_enum
    if role.manages_tenant:
        return True
    return role == Role.MEMBER and blob.owned_by(membership.user)


def delete_blob(blob: Blob, *, actor: Any, request: HttpRequest | None = None) -> None:
    """Delete ``blob``: row and data key (crypto-erasure) in one transaction with the audit event; the
    object after commit. Refused while the tenant is sealed, so nothing changes then."""
    check_writable(blob.tenant)
    with transaction.atomic():
        locked = Blob.objects.select_for_update().filter(pk=blob.pk, status=BlobStatus.READY).first()
        if locked is None:
            return  # deleted by someone else meanwhile: the outcome they wanted
        locked.delete()
        keyring.delete_data_key(blob.tenant, blob.pk)
        record(
            blob.tenant,
            EventType.BLOB_DELETED,
            actor=actor,
            payload=payloads.blob_deleted(blob_id=str(blob.pk), name=blob.name, size=blob.size),
            request=request,
        )
        key = blob.storage_key
        transaction.on_commit(lambda: _delete_object_quietly(key))


def _delete_object_quietly(key: str) -> None:
    # The data key is gone, so a leftover object can never be decrypted; still, do not leave it.
    try:
        delete_object(key)
    except Exception:
        logger.exception("blobs: could not delete object %s of a deleted blob", key)


# --- API tokens --------------------------------------------------------------------------------------------


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(
    tenant: Tenant, user: Any, name: str, *, request: HttpRequest | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user`` in ``tenant``; returns the row and the secret, which is never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    membership = Membership.objects.for_tenant(tenant).get(user=user)
    with transaction.atomic():
        token = ApiToken.objects.create(
            tenant=tenant,
            user=user,
            name=name.strip()[:100] or "API token",
            prefix=secret[:10],
            token_hash=hash_token(secret),
        )
        record(
            tenant,
            EventType.API_TOKEN_CREATED,
            actor=user,
            payload=payloads.api_token_created(token_id=token.pk, name=token.name, role=membership.role),
            request=request,
        )
    return token, secret


def revoke_token(token: ApiToken, *, actor: Any, request: HttpRequest | None = None) -> bool:
    """Revoke ``token`` at once; returns False if it already was."""
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if not updated:
            return False
        record(
            token.tenant,
            EventType.API_TOKEN_REVOKED,
            actor=actor,
            payload=payloads.api_token_revoked(token_id=token.pk, name=token.name),
            request=request,
        )
    return True


def can_revoke(membership: Membership, token: ApiToken) -> bool:
    return token.user_id == membership.user_id or membership.role_enum.manages_tenant


@dataclass(frozen=True)
class TokenIdentity:
    token: ApiToken
    membership: Membership


def authenticate_token(secret: str) -> TokenIdentity | None:
    """The token and the user's *current* membership, or None (unknown, revoked, no longer a member, or made
    during an earlier membership). A refused token is not marked used."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.active()
        .select_related("user", "tenant")
        .filter(token_hash=hash_token(secret))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    membership = (
        Membership.objects.for_tenant(token.tenant).select_related("user", "tenant").filter(user=token.user)
    ).first()
    # A token made before its user's current membership began belongs to an earlier one, which ended. Removal
    # revokes tokens (``blobs.receivers``); this also refuses any a removal did not revoke (made before that
    # receiver existed, or racing the removal), so re-adding a user never revives one.
    if membership is None or token.created_at < membership.created_at:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return TokenIdentity(token=token, membership=membership)


# --- Crash recovery ----------------------------------------------------------------------------------------


def sweep_stale_uploads(*, older_than: timedelta | None = None) -> int:
    """Delete uploads that never finished (a crashed process, a lost connection), with their objects and data
    keys, and data keys that never got a blob. Idempotent; returns how many blobs were swept."""
    age = older_than if older_than is not None else timedelta(seconds=settings.BLOB_STALE_UPLOAD_SECONDS)
    cutoff = timezone.now() - age
    swept = 0
    stale = Blob.objects.filter(status=BlobStatus.UPLOADING, created_at__lt=cutoff).select_related("tenant")
    for blob in stale.iterator():
        swept += uploads.forget_upload(blob)  # the upload path's own clean-up; a failure waits for next run
    # A crash between making the data key and the blob row leaves a key with no blob.
    DataKey.objects.filter(created_at__lt=cutoff, blob__isnull=True).delete()
    return swept
