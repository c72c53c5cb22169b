"""Key custody verbs: register, verify, activate, disable, seal and unseal. Each is atomic and audited.

Lifecycle of a registered key (``TenantKey``)::

    pending ──probe ok──► active ──another key activated──► retired
    pending ──probe fails──► failed (last_verify_error says why; nothing else changes)
    any ──owner/admin──► disabled (at once, in every process)

Views and Celery tasks call these; they hold no business rules of their own. Provider calls (the probe,
wrapping a new tenant key version) happen before or inside short transactions that lock the tenant row, so two
concurrent activations for one tenant queue instead of both winning; the database's partial unique indexes
back that up.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from tenants.models import Tenant

from . import keyring, rewrap
from .credentials import refuse_static_credentials
from .identifiers import (
    InvalidKeyIdentifier,
    check_aws_role_for_key,
    parse_aws_key_arn,
    parse_aws_role_arn,
    parse_azure_directory_id,
    parse_azure_key_url,
    parse_gcp_crypto_key,
)
from .models import KeyStatus, TenantExternalId, TenantKey, WrapMethod
from .providers import FailureKind, ProviderError, provider_for

logger = logging.getLogger(__name__)


class KeyCustodyError(Exception):
    """A custody change the rules forbid; ``str()`` tells the owner what to do instead."""


def _label(key: TenantKey) -> str:
    return (
        f"{WrapMethod(key.wrap_method).label} …{key.key_id_suffix}"
        if key.key_id
        else "the Kodori-managed key"
    )


# --- Registration and verification --------------------------------------------------------------------------


def external_id_for(tenant: Tenant) -> str:
    """The tenant's AWS ExternalId, generated on first use and never changed."""
    row, _ = TenantExternalId.objects.get_or_create(
        tenant=tenant, defaults={"value": "kodori-" + secrets.token_urlsafe(24)}
    )
    return row.value


def validate_registration(
    tenant: Tenant, wrap_method: WrapMethod, key_id: str, config: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Check a customer key registration and return its normalized key id and the config Kodori stores.

    Refuses static credentials anywhere in the submitted values (the message names the field and the federated
    alternative, never the value) and identifiers that are not strictly a key of the chosen cloud, so a tenant
    can never make Kodori call a host it chose. Only the non-secret fields each cloud needs are kept.
    """
    submitted: dict[str, object] = {"key_id": key_id, **config}
    refuse_static_credentials(submitted)
    method = WrapMethod(wrap_method)
    if method == WrapMethod.CUSTOMER_KMS_AWS:
        key = parse_aws_key_arn(key_id)
        role = parse_aws_role_arn(config.get("role_arn", ""))
        check_aws_role_for_key(role, key)
        region = str(config.get("region") or key.region)
        if region != key.region:
            raise InvalidKeyIdentifier(
                f"The region {region!r} does not match the key ARN's region {key.region!r}. "
                "Give the key's region."
            )
        # The ExternalId is Kodori's, never the tenant's: whatever was submitted is ignored.
        return key.arn, {"region": key.region, "role_arn": role.arn, "external_id": external_id_for(tenant)}
    if method == WrapMethod.CUSTOMER_KMS_AZURE:
        url = parse_azure_key_url(key_id)
        return url.key_id, {"directory_id": parse_azure_directory_id(config.get("directory_id", ""))}
    if method == WrapMethod.CUSTOMER_KMS_GCP:
        return parse_gcp_crypto_key(key_id).name, {}
    raise KeyCustodyError(
        "Only customer keys in AWS KMS, Azure Key Vault or GCP Cloud KMS are registered here."
    )


@transaction.atomic
def register_key(
    tenant: Tenant,
    wrap_method: WrapMethod,
    key_id: str,
    config: dict[str, Any],
    *,
    actor: Any,
) -> TenantKey:
    """Record a pending key and queue its probe after commit.

    Raises ``KeyCustodyError``, ``InvalidKeyIdentifier`` or ``StaticCredentialRefused`` (all with messages a
    customer can act on) and then stores nothing.
    """
    method = WrapMethod(wrap_method)
    if method == WrapMethod.GLOBAL:
        raise KeyCustodyError("The Kodori-managed key needs no registration.")
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if not tenant.cloud_kms_enabled:
        raise KeyCustodyError(
            "Cloud KMS is not switched on for this tenant yet. Ask Kodori support to enable it."
        )
    key_id, config = validate_registration(tenant, method, key_id, config)
    key = TenantKey.objects.create(
        tenant=tenant, wrap_method=method, key_id=key_id, config=config, registered_by=actor
    )
    from .tasks import verify_key

    transaction.on_commit(lambda: verify_key.delay(key.pk))
    return key


def verify_key(key_pk: int) -> TenantKey:
    """Probe a pending key (wrap + unwrap a random value at the provider); activate it or mark it failed.

    Idempotent: a key that is no longer pending is returned unchanged, so a redelivered task does no harm.
    A transient failure (throttled, unavailable) raises ``ProviderError`` and leaves the key pending, so the
    task can try again; only a definite refusal marks it failed.
    """
    key = TenantKey.objects.select_related("tenant").get(pk=key_pk)
    if key.status != KeyStatus.PENDING:
        return key
    try:
        provider_for(key).probe(key.tenant_id)
    except ProviderError as exc:
        if exc.kind == FailureKind.TRANSIENT:
            raise  # the task retries later; a busy KMS is no reason to fail a registration
        return _mark_failed(key, str(exc))
    return activate_key(key)


def fail_verification(key_pk: int, error: str) -> TenantKey:
    """Give up on a pending key whose KMS stayed unavailable through every retry."""
    return _mark_failed(TenantKey.objects.select_related("tenant").get(pk=key_pk), error)


@transaction.atomic
def _mark_failed(key: TenantKey, error: str) -> TenantKey:
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    if key.status != KeyStatus.PENDING:
        return key
    key.status = KeyStatus.FAILED
    key.last_verify_error = error
    key.last_verified_at = timezone.now()
    key.save(update_fields=["status", "last_verify_error", "last_verified_at"])
    record(
        key.tenant,
        EventType.TENANT_KMS_VERIFY_FAILED,
        payload=payloads.key_verify_failed(
            key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id, error=error
        ),
    )
    return key


@transaction.atomic
def activate_key(key: TenantKey, *, actor: Any = None) -> TenantKey:
    """Make a verified key active: retire the prior, provision a TKV under it, audit; one transaction."""
    tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    if key.status != KeyStatus.PENDING:
        return key
    previous = (
        TenantKey.objects.for_tenant(tenant).select_for_update().filter(status=KeyStatus.ACTIVE).first()
    )
    now = timezone.now()
    if previous is not None:
        previous.status = KeyStatus.RETIRED
        previous.retired_at = now
        previous.save(update_fields=["status", "retired_at"])
    key.status = KeyStatus.ACTIVE
    key.activated_at = key.last_verified_at = now
    key.last_verify_error = ""
    key.save(update_fields=["status", "activated_at", "last_verified_at", "last_verify_error"])
    keyring.create_tkv(tenant, key)
    if previous is not None:
        rewrap.after_rotation(tenant)
    if previous is None or previous.wrap_method == WrapMethod.GLOBAL:
        payload = payloads.key_registered(key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id)
        record(tenant, EventType.TENANT_KMS_REGISTERED, actor=actor or key.registered_by, payload=payload)
    if previous is not None:
        payload = payloads.key_rotated(
            from_provider=previous.wrap_method,
            from_key_id=previous.key_id,
            to_provider=key.wrap_method,
            to_key_id=key.key_id,
            from_key_row_id=previous.pk,
            to_key_row_id=key.pk,
        )
        record(tenant, EventType.TENANT_KMS_ROTATED, actor=actor or key.registered_by, payload=payload)
    return key


# --- Disabling
# -----------------------------------------------------------------------------------------------


@transaction.atomic
def disable_key(key: TenantKey, *, actor: Any, request: HttpRequest | None = None) -> TenantKey:
    """Stop using ``key`` at once. Disabling the active key seals the tenant (the page confirms first)."""
    tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.DISABLED:
        return key
    previous_status = key.status
    key.status = KeyStatus.DISABLED
    key.disabled_at = timezone.now()
    key.save(update_fields=["status", "disabled_at"])
    record(
        tenant,
        EventType.TENANT_KMS_DISABLED,
        actor=actor,
        request=request,
        payload=payloads.key_disabled(
            key_row_id=key.pk, previous_status=previous_status, provider=key.wrap_method, key_id=key.key_id
        ),
    )
    if previous_status == KeyStatus.ACTIVE:
        _seal(tenant, f"{_label(key)} was disabled in Kodori by an owner or admin.", key, actor=actor)
    return key


# --- Sealing
# -------------------------------------------------------------------------------------------------


def _seal(tenant: Tenant, reason: str, key: TenantKey | None, *, actor: Any = None) -> bool:
    if tenant.sealed_at is not None and tenant.seal_reason == reason:
        return False
    tenant.sealed_at = tenant.sealed_at or timezone.now()
    tenant.seal_reason = reason
    tenant.save(update_fields=["sealed_at", "seal_reason"])
    record(
        tenant,
        EventType.TENANT_SEALED,
        actor=actor,
        payload=payloads.tenant_sealed(
            reason=reason,
            provider=key.wrap_method if key else "",
            key_id=key.key_id if key else "",
            key_row_id=key.pk if key else None,
        ),
    )
    return True


@transaction.atomic
def seal_tenant(tenant: Tenant, error: ProviderError | str, *, key: TenantKey | None = None) -> bool:
    """Seal ``tenant`` because its key provider refused (access denied, disabled, not found)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    return _seal(tenant, str(error), key)


@transaction.atomic
def unseal_tenant(tenant: Tenant, *, reason: str, actor: Any = None, key: TenantKey | None = None) -> bool:
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if tenant.sealed_at is None:
        return False
    tenant.sealed_at = None
    tenant.seal_reason = ""
    tenant.save(update_fields=["sealed_at", "seal_reason"])
    record(
        tenant,
        EventType.TENANT_UNSEALED,
        actor=actor,
        payload=payloads.tenant_unsealed(
            reason=reason,
            provider=key.wrap_method if key else "",
            key_id=key.key_id if key else "",
            key_row_id=key.pk if key else None,
        ),
    )
    return True


def reverify_tenant(tenant: Tenant, *, actor: Any = None) -> bool:
    """Probe the tenant's active key now; seal on refusal, unseal on success. Returns whether it works.

    What the periodic task runs for every tenant on a customer key, and what "retry now" runs for one tenant.
    Transient failures change nothing (the next run tries again).
    """
    key = TenantKey.objects.for_tenant(tenant).filter(status=KeyStatus.ACTIVE).first()
    if key is None:
        return not tenant.is_sealed
    try:
        provider_for(key).probe(tenant.pk)
    except ProviderError as exc:
        if exc.kind.seals:
            seal_tenant(tenant, exc, key=key)
        elif exc.kind == FailureKind.INTEGRITY:
            logger.error("probe of key row %s returned a wrong value", key.pk)
        return False
    TenantKey.objects.filter(pk=key.pk).update(last_verified_at=timezone.now(), last_verify_error="")
    # A tenant sealed because an owner disabled its active key stays sealed: that key is no longer active.
    if tenant.is_sealed:
        unseal_tenant(tenant, reason=f"{_label(key)} answered again.", actor=actor, key=key)
    return True


def tenants_to_reverify() -> list[Tenant]:
    """Tenants whose active key is in a cloud KMS (kodori-managed keys cannot be revoked from outside)."""
    cloud = [m.value for m in WrapMethod if m != WrapMethod.GLOBAL]
    return list(Tenant.objects.filter(keys__status=KeyStatus.ACTIVE, keys__wrap_method__in=cloud).distinct())
