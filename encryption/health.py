"""Key health: probing every key Kodori still depends on, and acting on what the KMS answers.

Which keys are probed: the active key of every tenant on a cloud KMS, and every retired key that still
protects key versions (``keys_to_reverify``); the beat schedule probes them all, an owner's "Retry now" and
support's re-probe probe one tenant's, and the first refusal met in use probes that key at once
(``alerts.request_reverify``).

What an answer does, for any of them:

- refused (access denied, disabled, not found): the key is marked refused (``refused_at``, the error kept in
  ``last_verify_error``) and ``tenant-kms.unreachable`` names it with the data keys it makes unreadable. From
  then on Kodori opens nothing under it, in any process (``keyring`` checks the row on every use), and
  downloads of its files answer 503 naming the key. The active key refusing also seals the tenant.
- answers again: the mark is cleared (``tenant-kms.reachable``); for the active key the tenant is unsealed.
- busy or unreachable (transient): nothing changes; the next probe tries again.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from audit import payloads
from audit.models import EventType
from audit.services import record
from tenants.models import Tenant

from . import coverage, keyring
from .coverage import holds_live_versions
from .models import KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod
from .providers import FailureKind, KeyContext, ProviderError, provider_for
from .sealing import Trigger, seal, unseal

logger = logging.getLogger(__name__)


def keys_to_reverify() -> list[int]:
    """Cloud keys Kodori depends on: every active one, and every retired one still holding key versions
    (Kodori-managed keys cannot be revoked from outside)."""
    keys = (
        TenantKey.objects.exclude(wrap_method=WrapMethod.GLOBAL)
        .filter(Q(status=KeyStatus.ACTIVE) | (Q(status=KeyStatus.RETIRED) & holds_live_versions()))
        .order_by("pk")
    )
    return list(keys.values_list("pk", flat=True))


# A pending key's probe is queued after its registration commits; if that message was lost (a broker outage),
# nothing else would ever verify it. The schedule re-queues pending keys this old (the probe is idempotent).
STALE_PENDING_SECONDS = 20 * 60


def stale_pending_keys() -> list[int]:
    """Pending keys registered longer ago than any verification with all its retries takes."""
    cutoff = timezone.now() - datetime.timedelta(seconds=STALE_PENDING_SECONDS)
    pending = TenantKey.objects.filter(status=KeyStatus.PENDING, created_at__lt=cutoff).exclude(
        last_verified_at__gte=cutoff  # a failed key retried lately: its probe was queued just now
    )
    return list(pending.order_by("pk").values_list("pk", flat=True))


def _data_keys_under(key: TenantKey) -> int:
    return sum(n for _, n in coverage.with_data_keys(TenantKeyVersion.objects.filter(kek=key)))


def _forget_cached(key: TenantKey) -> None:
    for tkv_pk in TenantKeyVersion.objects.filter(kek=key).values_list("pk", flat=True):
        keyring.cache.discard(tkv_pk)


def _locked(key_pk: int) -> tuple[Tenant, TenantKey]:
    """The key's tenant row, then the key row, locked in that order (as every custody verb locks them)."""
    tenant_pk = TenantKey.objects.values_list("tenant_id", flat=True).get(pk=key_pk)
    tenant = Tenant.objects.select_for_update().get(pk=tenant_pk)
    return tenant, TenantKey.objects.select_for_update().get(pk=key_pk)


@transaction.atomic
def _refused(key_pk: int, error: str, trigger: Trigger, actor: Any) -> None:
    tenant, key = _locked(key_pk)
    if not key.usable:
        return
    now = timezone.now()
    first = key.refused_at is None
    key.refused_at = key.refused_at or now
    key.last_verify_error = error
    key.last_verified_at = now
    key.save(update_fields=["refused_at", "last_verify_error", "last_verified_at"])
    transaction.on_commit(lambda: _forget_cached(key))
    if first:
        payload = payloads.key_health(
            key_row_id=key.pk,
            provider=key.wrap_method,
            key_id=key.key_id,
            status=key.status,
            trigger=trigger,
            error=error,
            data_keys=_data_keys_under(key),
        )
        record(tenant, EventType.TENANT_KMS_UNREACHABLE, actor=actor, payload=payload)
    if key.status == KeyStatus.ACTIVE:
        seal(tenant, error, key, trigger=trigger, actor=actor)


@transaction.atomic
def _answered(key_pk: int, trigger: Trigger, actor: Any) -> None:
    tenant, key = _locked(key_pk)
    was_refused = key.refused_at is not None
    key.refused_at = None
    key.last_verify_error = ""
    key.last_verified_at = timezone.now()
    key.save(update_fields=["refused_at", "last_verify_error", "last_verified_at"])
    if was_refused:
        payload = payloads.key_health(
            key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id, status=key.status, trigger=trigger
        )
        record(tenant, EventType.TENANT_KMS_REACHABLE, actor=actor, payload=payload)
    if key.status == KeyStatus.ACTIVE:
        unseal(tenant, f"{key.label} answered again.", key, trigger=trigger, actor=actor)


@sensitive_variables("plaintext")
def _prove(key: TenantKey) -> None:
    """What Kodori needs from the key, asked of its KMS. The active key wraps new key versions and unwraps,
    so it gets the full probe (and each cloud's state checks). A retired key only has to open the key versions
    it already wraps, so Kodori unwraps its newest live one: a retired key its customer left Decrypt-only, or
    an Azure version past its expiry date (which still unwraps), is not called refused."""
    provider = provider_for(key)
    if key.status == KeyStatus.RETIRED:
        live = TenantKeyVersion.objects.filter(kek=key).exclude(status=VersionStatus.DESTROYED)
        tkv = live.order_by("-version").first()
        if tkv is not None:
            context = KeyContext(tenant_id=tkv.tenant_id, key_version=tkv.version)
            plaintext = provider.unwrap(bytes(tkv.wrapped_key), context)
            if len(plaintext) != keyring.TKV_SIZE:
                raise ProviderError(
                    FailureKind.INTEGRITY, "The key provider returned a key of the wrong size."
                )
            return
    provider.probe(key.tenant_id)


def probe_key(key_pk: int, *, trigger: Trigger, actor: Any = None) -> bool:
    """Probe one active or retired key now and act on the answer (module docstring). True if it works."""
    key = TenantKey.objects.filter(pk=key_pk).first()
    if key is None or not key.usable:
        return False
    try:
        _prove(key)
    except ProviderError as exc:
        if exc.kind.seals:
            _refused(key.pk, str(exc), trigger, actor)
        elif exc.kind == FailureKind.INTEGRITY:
            logger.error("probe of key row %s returned a wrong value", key.pk)
        return False
    _answered(key.pk, trigger, actor)
    return True


def reverify_tenant(tenant: Tenant, *, trigger: Trigger, actor: Any = None) -> bool:
    """Probe the tenant's active key and every retired key marked refused; True if the active key works."""
    keys = TenantKey.objects.for_tenant(tenant).filter(status__in=[KeyStatus.ACTIVE, KeyStatus.RETIRED])
    active_works = False
    for key in keys.order_by("pk"):
        if key.status == KeyStatus.ACTIVE:
            active_works = probe_key(key.pk, trigger=trigger, actor=actor)
        elif key.refused_at is not None:
            probe_key(key.pk, trigger=trigger, actor=actor)
    return active_works
