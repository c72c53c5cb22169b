"""The key hierarchy at work: tenant key versions (TKVs), per-blob data keys, and the unwrapped-TKV cache.

An upload asks ``new_data_key`` for a fresh DEK: the tenant's active TKV is unwrapped through its provider
once per cache TTL, and the DEK is wrapped locally with AES-256-GCM (no KMS call while the TKV is cached). A
download asks ``open_data_key``. ``add_key_version`` adds a version; existing DEKs keep opening through
theirs.

The cache holds plaintext TKVs in this process's memory only, keyed by TKV id, bounded in size, with a TTL per
wrap method; failures are never cached. Before a cached TKV is used, the TKV and KEK rows read in the same
query must still allow it (KEK active or retired and not refusing Kodori, TKV not destroyed), so disabling a
key or a refusal found by a probe takes effect in every process at once, not after the TTL.

What Python cannot promise: ``bytes`` objects are immutable and may be copied by the interpreter, so plaintext
keys cannot be reliably zeroed. We keep them out of everything that persists (database, logs, exception
reports via ``sensitive_variables``, Celery messages, Redis, disk) and drop cache references on expiry; see
``docs/key-hierarchy.md``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from tenants.models import Tenant, TenantState

from . import aead, alerts
from .format.errors import NotAuthentic
from .models import DataKey, KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod
from .providers import FailureKind, KeyContext, ProviderError, provider_for

TKV_SIZE = 32
DEK_SIZE = 32


class KeyUnavailable(Exception):
    """A key cannot be used right now; ``str()`` says why in words a customer can act on."""

    def __init__(self, message: str, *, kind: FailureKind = FailureKind.DISABLED) -> None:
        super().__init__(message)
        self.kind = kind


def dek_aad(tenant_id: int, blob_id: uuid.UUID, tkv_id: int, format_version: int) -> bytes:
    """Associated data of a wrapped DEK: binds it to its tenant, blob, key version and blob format."""
    prefix, suffix = dek_aad_parts(tenant_id, tkv_id, format_version)
    return prefix + blob_id.bytes + suffix


def dek_aad_parts(tenant_id: int, tkv_id: int, format_version: int) -> tuple[bytes, bytes]:
    """``dek_aad`` around the blob id: ``prefix + blob_id.bytes + suffix``, for loops over many blobs."""
    return (
        b"kodori/dek/v1\x00" + tenant_id.to_bytes(8, "big"),
        tkv_id.to_bytes(8, "big") + format_version.to_bytes(2, "big"),
    )


# --- The cache ---------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    key: bytes
    expires_at: float


class TKVCache:
    """Plaintext TKVs by TKV id, in process memory only; LRU-bounded, TTL-expired, thread-safe."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, tkv_id: int) -> bytes | None:
        with self._lock:
            entry = self._entries.get(tkv_id)
            if entry is None or entry.expires_at <= time.monotonic():
                if entry is not None:
                    del self._entries[tkv_id]
                self.misses += 1
                return None
            self._entries.move_to_end(tkv_id)
            self.hits += 1
            return entry.key

    def put(self, tkv_id: int, key: bytes, ttl: float) -> None:
        with self._lock:
            self._entries[tkv_id] = _Entry(key, time.monotonic() + ttl)
            self._entries.move_to_end(tkv_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, tkv_id: int) -> None:
        with self._lock:
            self._entries.pop(tkv_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<TKVCache {len(self._entries)} entries>"


cache = TKVCache(max_entries=settings.KODORI_TKV_CACHE_MAX_ENTRIES)


def cache_ttl(method: WrapMethod) -> float:
    if method.is_customer:
        return float(settings.KODORI_TKV_CACHE_TTL_CUSTOMER)
    return float(settings.KODORI_TKV_CACHE_TTL_DEFAULT)


# --- TKVs --------------------------------------------------------------------------------------------------


def _check_usable(tkv: TenantKeyVersion) -> None:
    if tkv.status == VersionStatus.DESTROYED:
        cache.discard(tkv.pk)
        raise KeyUnavailable(
            f"Key version {tkv.version} was destroyed after its data was re-wrapped.",
            kind=FailureKind.NOT_FOUND,
        )
    kek = tkv.kek
    if not kek.usable:
        cache.discard(tkv.pk)
        if kek.status == KeyStatus.DISABLED:
            raise KeyUnavailable(
                f"The key protecting this data, {kek.label}, was disabled in Kodori. An owner or admin can "
                "re-enable it on the Encryption page."
            )
        raise KeyUnavailable(
            f"The key protecting this data, {kek.label}, is {kek.get_status_display().lower()}."
        )
    if kek.refused_at is not None:
        cache.discard(tkv.pk)
        raise KeyUnavailable(
            f"The key protecting this data, {kek.label}, refuses Kodori since "
            f"{kek.refused_at:%Y-%m-%d %H:%M} UTC: {kek.last_verify_error} Restore Kodori's access to it in "
            "your KMS; Kodori checks it again every few minutes, or an owner can press Retry now on the "
            "Encryption page."
        )


_unwrap_locks: dict[int, threading.Lock] = {}
_unwrap_locks_guard = threading.Lock()


def _unwrap_lock(tkv_id: int) -> threading.Lock:
    with _unwrap_locks_guard:
        return _unwrap_locks.setdefault(tkv_id, threading.Lock())


@sensitive_variables("key")
def tkv_key(tkv: TenantKeyVersion) -> bytes:
    """The plaintext of ``tkv`` (``kek`` loaded with it): from the cache, or unwrapped by its provider.

    Concurrent misses for one version wait for a single unwrap: one KMS call per process per TTL, not one
    per thread.
    """
    _check_usable(tkv)
    key = cache.get(tkv.pk)
    if key is not None:
        return key
    with _unwrap_lock(tkv.pk):
        key = cache.get(tkv.pk)
        if key is not None:
            return key
        context = KeyContext(tenant_id=tkv.tenant_id, key_version=tkv.version)
        try:
            key = provider_for(tkv.kek).unwrap(bytes(tkv.wrapped_key), context)
        except ProviderError as exc:
            if exc.seals:
                alerts.request_reverify(tkv.kek_id)  # the key's status changes within seconds, not minutes
            raise
        if len(key) != TKV_SIZE:
            raise ProviderError(FailureKind.INTEGRITY, "The key provider returned a key of the wrong size.")
        cache.put(tkv.pk, key, cache_ttl(WrapMethod(tkv.kek.wrap_method)))
        return key


def _global_kek(tenant: Tenant) -> TenantKey:
    """The tenant's kodori-managed KEK row, created (active) the first time a tenant needs a key."""
    kek = TenantKey.objects.for_tenant(tenant).filter(status=KeyStatus.ACTIVE).first()
    if kek is not None:
        return kek
    return TenantKey.objects.create(
        tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.ACTIVE, activated_at=timezone.now()
    )


@sensitive_variables("key")
def create_tkv(tenant: Tenant, kek: TenantKey) -> TenantKeyVersion:
    """A new active TKV under ``kek``, retiring the tenant's current one. Call inside ``transaction.atomic``.

    The tenant row is locked first, so concurrent rotations of one tenant queue instead of racing.
    """
    Tenant.objects.select_for_update().get(pk=tenant.pk)
    current = TenantKeyVersion.objects.for_tenant(tenant).aggregate(v=Max("version"))["v"] or 0
    version = current + 1
    key = os.urandom(TKV_SIZE)
    try:
        wrapped = provider_for(kek).wrap(key, KeyContext(tenant_id=tenant.pk, key_version=version))
    except ProviderError as exc:
        if exc.seals:
            alerts.request_reverify(kek.pk)
        raise
    now = timezone.now()
    TenantKeyVersion.objects.for_tenant(tenant).filter(status=VersionStatus.ACTIVE).update(
        status=VersionStatus.RETIRED, retired_at=now
    )
    tkv = TenantKeyVersion.objects.create(tenant=tenant, kek=kek, version=version, wrapped_key=wrapped)
    cache.put(tkv.pk, key, cache_ttl(WrapMethod(kek.wrap_method)))
    return tkv


def current_tkv(tenant: Tenant) -> TenantKeyVersion | None:
    """The tenant's active TKV (with its KEK), or None before its first use."""
    return (
        TenantKeyVersion.objects.for_tenant(tenant)
        .select_related("kek")
        .filter(status=VersionStatus.ACTIVE)
        .first()
    )


def _check_provisioning(locked: Tenant) -> None:
    """Key material is only ever made for an active tenant: never again once its erasure has begun (its
    versions are destroyed then, and an upload begun before must not bring a fresh one back)."""
    if locked.state != TenantState.ACTIVE:
        raise KeyUnavailable(
            f"{locked.name} is {locked.get_state_display().lower()}: no new key can be made for it."
        )


def active_tkv(tenant: Tenant) -> TenantKeyVersion:
    """The tenant's active TKV (with its KEK), provisioning a kodori-managed one on first use."""
    tkv = current_tkv(tenant)
    if tkv is not None:
        return tkv
    try:
        with transaction.atomic():
            _check_provisioning(Tenant.objects.select_for_update().get(pk=tenant.pk))
            # Another request may have provisioned it while we waited for the lock.
            tkv = TenantKeyVersion.objects.for_tenant(tenant).filter(status=VersionStatus.ACTIVE).first()
            if tkv is None:
                tkv = create_tkv(tenant, _global_kek(tenant))
    except IntegrityError:
        pass
    return TenantKeyVersion.objects.for_tenant(tenant).select_related("kek").get(status=VersionStatus.ACTIVE)


def add_key_version(tenant: Tenant) -> TenantKeyVersion:
    """A new TKV under the tenant's active KEK (the current one filled up). Not a custody change: no walk
    starts, and existing DEKs keep opening through their own version."""
    with transaction.atomic():
        _check_provisioning(Tenant.objects.select_for_update().get(pk=tenant.pk))
        kek = TenantKey.objects.for_tenant(tenant).select_for_update().filter(status=KeyStatus.ACTIVE).first()
        if kek is None:
            if TenantKeyVersion.objects.for_tenant(tenant).exists():
                # The full version's key was disabled: never slip a Kodori-managed key in behind the owner's
                # back (a tenant with no key at all gets one on first use, as ``active_tkv`` does).
                raise KeyUnavailable(
                    "The tenant has no active key: re-enable its key or register and verify another one."
                )
            kek = _global_kek(tenant)
        return create_tkv(tenant, kek)


# --- Data keys ---------------------------------------------------------------------------------------------


def _count_wrap(tkv: TenantKeyVersion) -> bool:
    """Add one to ``tkv``'s wrap counter if it is still active and below the limit; say whether it did."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tenant_key_versions SET wrap_count = wrap_count + 1 "
            "WHERE id = %s AND status = %s AND wrap_count < %s",
            [tkv.pk, VersionStatus.ACTIVE.value, settings.KODORI_TKV_MAX_WRAPS],
        )
        return cursor.rowcount == 1


@sensitive_variables("dek", "key")
def new_data_key(tenant: Tenant, blob_id: uuid.UUID, format_version: int) -> tuple[bytes, DataKey]:
    """A fresh DEK for ``blob_id`` and its saved, wrapped row. The caller encrypts with the DEK and drops it.

    Its own short transaction: call it outside long ones (an upload must not hold the TKV row's lock while
    bytes stream in), so that concurrent uploads of a tenant do not queue behind each other.
    """
    for _attempt in range(5):
        tkv = active_tkv(tenant)
        with transaction.atomic():
            # Count the wrap before doing it: the counter never lags behind the nonces actually used.
            if not _count_wrap(tkv):
                # Either rotated since we read it (take the new active version) or full (rotate it now).
                still_active = TenantKeyVersion.objects.filter(
                    pk=tkv.pk, status=VersionStatus.ACTIVE
                ).exists()
                if still_active:
                    add_key_version(tenant)
                continue
            key = tkv_key(tkv)
            dek = os.urandom(DEK_SIZE)
            wrapped = aead.seal(key, dek, dek_aad(tenant.pk, blob_id, tkv.pk, format_version))
            row = DataKey.objects.create(
                tenant=tenant, blob_id=blob_id, tkv=tkv, wrapped_dek=wrapped, format_version=format_version
            )
            return dek, row
    raise KeyUnavailable("The tenant's key version kept changing; try again.", kind=FailureKind.TRANSIENT)


class DataKeyMismatch(ProviderError):
    """A blob's wrapped data key does not authenticate under its (correct) tenant key version: the row is
    damaged or was swapped, unlike an INTEGRITY refusal by the KMS, which concerns the tenant key."""

    def __init__(self) -> None:
        super().__init__(FailureKind.INTEGRITY, "This blob's data key does not match its blob.")


@sensitive_variables("key")
def open_data_key(tenant: Tenant, blob_id: uuid.UUID) -> bytes:
    """The DEK of ``blob_id`` in ``tenant``. Another tenant's blob is ``DataKey.DoesNotExist``."""
    row = DataKey.objects.for_tenant(tenant).select_related("tkv__kek").get(blob_id=blob_id)
    key = tkv_key(row.tkv)
    try:
        return aead.open(
            key, bytes(row.wrapped_dek), dek_aad(tenant.pk, blob_id, row.tkv_id, row.format_version)
        )
    except NotAuthentic:
        raise DataKeyMismatch() from None


def delete_data_key(tenant: Tenant, blob_id: uuid.UUID) -> None:
    """Forget ``blob_id``'s DEK: once the row is gone the blob's bytes can never be decrypted again."""
    DataKey.objects.for_tenant(tenant).filter(blob_id=blob_id).delete()
