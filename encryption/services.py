"""Key custody verbs: register, verify, activate, make active, disable, re-enable, retry and remove.

Each verb is one transition of the lifecycle in ``encryption.lifecycle`` (checked there), atomic, and audited
in the same transaction, causes before effects: ``tenant-kms.registered`` / ``.re-enabled`` first, then
``tenant-kms.rotated``, then ``tenant.unsealed`` or ``tenant.sealed``, then the re-wrap it starts.

One row per KMS key and tenant: registration compares canonical identities (``encryption.identity``) and a key
the tenant already has is retried, made active again or re-enabled through the normal probe instead of
getting a second row (the database's unique index backs this up).

Views and Celery tasks call these; they hold no business rules of their own. Provider calls (the probe,
wrapping a new tenant key version) happen before or inside short transactions that lock the tenant row, so two
concurrent activations for one tenant queue instead of both winning; the database's partial unique indexes
back that up.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit import payloads
from audit.models import EventType
from audit.services import record
from tenants.models import Tenant

from . import identity, keyring, queue, rewrap
from .credentials import refuse_static_credentials
from .health import reverify_tenant as _reverify_tenant
from .identifiers import (
    InvalidKeyIdentifier,
    check_aws_role_for_key,
    parse_aws_key_arn,
    parse_aws_role_arn,
    parse_azure_directory_id,
    parse_azure_key_url,
    parse_gcp_crypto_key,
)
from .lifecycle import KeyCustodyError as KeyCustodyError
from .lifecycle import Transition, check, check_tenant_writable
from .models import KeyStatus, TenantExternalId, TenantKey, WrapMethod
from .providers import FailureKind, ProviderError, provider_for
from .sealing import Trigger, seal, unseal
from .sealing import seal_tenant as seal_tenant  # re-exported: the custody verbs' one module

logger = logging.getLogger(__name__)


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


def _resolve_canonical(tenant: Tenant, method: WrapMethod, key_id: str, config: dict[str, Any]) -> str:
    """The canonical identity of a validated key id; an AWS alias is resolved with DescribeKey first."""
    resolved = ""
    if method == WrapMethod.CUSTOMER_KMS_AWS and parse_aws_key_arn(key_id).resource_type == "alias":
        candidate = TenantKey(tenant=tenant, wrap_method=method, key_id=key_id, config=config)
        try:
            resolved = provider_for(candidate).describe_key_arn()  # type: ignore[attr-defined]
        except ProviderError as exc:
            again = " Try again in a minute." if exc.kind == FailureKind.TRANSIENT else ""
            raise KeyCustodyError(
                f"Kodori could not find out which key the alias names: {exc}{again} Nothing was registered."
            ) from exc
    return identity.canonical_id(method, key_id, resolved_aws_key_arn=resolved)


def register_key(
    tenant: Tenant, wrap_method: WrapMethod, key_id: str, config: dict[str, Any], *, actor: Any
) -> TenantKey:
    """``register_or_restore`` for callers that need only the key."""
    return register_or_restore(tenant, wrap_method, key_id, config, actor=actor)[0]


def register_or_restore(
    tenant: Tenant,
    wrap_method: WrapMethod,
    key_id: str,
    config: dict[str, Any],
    *,
    actor: Any,
) -> tuple[TenantKey, str]:
    """Register a customer key, or bring back the row the tenant already has for the same KMS key.

    Returns the key and what happened: ``"registered"`` (a new pending row; its probe is queued),
    ``"retrying"`` (a failed row, with the submitted settings, verified again), ``"made-active"`` (a retired
    row probed and made active again) or ``"re-enabled"`` (a disabled row probed and re-enabled). A key that
    is already active or pending is refused. Raises ``KeyCustodyError``, ``InvalidKeyIdentifier`` or
    ``StaticCredentialRefused`` (all with messages a customer can act on) and then changes nothing.
    """
    check_tenant_writable(tenant)
    method = WrapMethod(wrap_method)
    if method == WrapMethod.GLOBAL:
        raise KeyCustodyError("The Kodori-managed key needs no registration.")
    if not tenant.cloud_kms_enabled:
        raise KeyCustodyError(
            "Cloud KMS is not switched on for this tenant yet. Ask Kodori support to enable it."
        )
    key_id, config = validate_registration(tenant, method, key_id, config)
    canonical = _resolve_canonical(tenant, method, key_id, config)
    existing = TenantKey.objects.for_tenant(tenant).filter(canonical_id=canonical).first()
    if existing is None:
        return _create_pending(tenant, method, key_id, canonical, config, actor=actor), "registered"
    if existing.status == KeyStatus.FAILED:
        return retry_key(existing, actor=actor, config=config, key_id=key_id), "retrying"
    if existing.status == KeyStatus.RETIRED:
        return make_active(existing, actor=actor, config=config), "made-active"
    if existing.status == KeyStatus.DISABLED:
        return re_enable_key(existing, actor=actor, config=config), "re-enabled"
    raise KeyCustodyError(
        f"{tenant.name} already has this key ({existing.label}, registered "
        f"{existing.created_at:%Y-%m-%d}): "
        + (
            "it is the active key."
            if existing.status == KeyStatus.ACTIVE
            else "Kodori is verifying it now; the key history shows the result."
        )
    )


@transaction.atomic
def _create_pending(
    tenant: Tenant, method: WrapMethod, key_id: str, canonical: str, config: dict[str, Any], *, actor: Any
) -> TenantKey:
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if not tenant.cloud_kms_enabled:
        raise KeyCustodyError(
            "Cloud KMS is not switched on for this tenant yet. Ask Kodori support to enable it."
        )
    if TenantKey.objects.for_tenant(tenant).filter(canonical_id=canonical).exists():
        raise KeyCustodyError("This key was registered a moment ago; the key history shows it.")
    key = TenantKey.objects.create(
        tenant=tenant,
        wrap_method=method,
        key_id=key_id,
        canonical_id=canonical,
        config=config,
        registered_by=actor,
    )
    queue.verify_key(key.pk)
    return key


def verify_key(key_pk: int) -> TenantKey:
    """Probe a pending key (wrap + unwrap a random value at the provider, and what each cloud adds: the key's
    own state, the role's ExternalId condition); activate it or mark it failed.

    Idempotent: a key that is no longer pending is returned unchanged, so a redelivered task does no harm.
    A transient failure (throttled, unavailable) raises ``ProviderError`` and leaves the key pending, so the
    task can try again; only a definite refusal marks it failed.
    """
    key = TenantKey.objects.select_related("tenant").get(pk=key_pk)
    if key.status != KeyStatus.PENDING:
        return key
    try:
        _prove(key)
    except ProviderError as exc:
        if exc.kind == FailureKind.TRANSIENT:
            raise  # the task retries later; a busy KMS is no reason to fail a registration
        return _mark_failed(key, str(exc))
    return activate_key(key)


def _prove(key: TenantKey) -> None:
    provider = provider_for(key)
    provider.probe(key.tenant_id)
    provider.check_registration()


def fail_verification(key_pk: int, error: str) -> TenantKey:
    """Give up on a pending key whose KMS stayed unavailable through every retry."""
    return _mark_failed(TenantKey.objects.select_related("tenant").get(pk=key_pk), error)


@transaction.atomic
def _mark_failed(key: TenantKey, error: str) -> TenantKey:
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    if key.status != KeyStatus.PENDING:
        return key
    check(key.status, Transition.VERIFY_FAILED)
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


def _become_active(tenant: Tenant, key: TenantKey, *, actor: Any, trigger: Trigger) -> None:
    """Make ``key`` (row locked) the tenant's active key: retire the prior, give it the active key version,
    audit the change of custody, unseal, and start the re-wrap; the caller's transaction holds it together.

    ``tenant-kms.registered`` marks the first time the tenant adopts a key; ``tenant-kms.rotated`` every
    change of the key new data is wrapped under, from the prior active key, or, after the active key was
    disabled, from the key that last protected new data. Re-enabling the very key that was disabled changes
    no key (``tenant-kms.re-enabled`` and ``tenant.unsealed`` tell it).
    """
    previous = (
        TenantKey.objects.for_tenant(tenant)
        .select_for_update()
        .filter(status=KeyStatus.ACTIVE)
        .exclude(pk=key.pk)
        .first()
    )
    current = keyring.current_tkv(tenant)
    first_adoption = key.activated_at is None
    now = timezone.now()
    if previous is not None:
        check(previous.status, Transition.SUPERSEDE)
        previous.status = KeyStatus.RETIRED
        previous.retired_at = now
        previous.save(update_fields=["status", "retired_at"])
    key.status = KeyStatus.ACTIVE
    key.activated_at = key.last_verified_at = now
    key.last_verify_error = ""
    key.refused_at = None
    key.save(update_fields=["status", "activated_at", "last_verified_at", "last_verify_error", "refused_at"])
    if current is None or current.kek_id != key.pk:
        keyring.create_tkv(tenant, key)
    origin = previous or (current.kek if current is not None and current.kek_id != key.pk else None)
    who = actor or key.registered_by
    if first_adoption and key.wrap_method != WrapMethod.GLOBAL:
        payload = payloads.key_registered(key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id)
        record(tenant, EventType.TENANT_KMS_REGISTERED, actor=who, payload=payload)
    if origin is not None:
        payload = payloads.key_rotated(
            from_provider=origin.wrap_method,
            from_key_id=origin.key_id,
            to_provider=key.wrap_method,
            to_key_id=key.key_id,
            from_key_row_id=origin.pk,
            to_key_row_id=key.pk,
        )
        record(tenant, EventType.TENANT_KMS_ROTATED, actor=who, payload=payload)
    unseal(tenant, f"{key.label} was verified and is now the active key.", key, trigger=trigger, actor=who)
    if origin is not None:
        rewrap.after_rotation(tenant)


@transaction.atomic
def activate_key(key: TenantKey, *, actor: Any = None) -> TenantKey:
    """Make a verified pending key active (see ``_become_active``); one transaction."""
    tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    if key.status != KeyStatus.PENDING:
        return key
    check(key.status, Transition.VERIFIED)
    _become_active(tenant, key, actor=actor, trigger=Trigger.ACTIVATION)
    return key


def _probe_now(key: TenantKey, config: dict[str, Any] | None, what: str) -> TenantKey:
    """Probe ``key`` (with the newly submitted settings, if any) before a transition that makes it usable.

    Returns the key as it should be saved (config updated); raises ``KeyCustodyError`` naming the KMS's
    answer, after keeping it in ``last_verify_error``; nothing else changes.
    """
    candidate = TenantKey.objects.get(pk=key.pk)
    if config is not None and candidate.wrap_method != WrapMethod.GLOBAL:
        candidate.config = config
    try:
        _prove(candidate)
    except ProviderError as exc:
        TenantKey.objects.filter(pk=key.pk).update(
            last_verify_error=str(exc), last_verified_at=timezone.now()
        )
        again = (
            "Try again in a minute."
            if exc.kind == FailureKind.TRANSIENT
            else "Fix Kodori's access in your KMS, then try again."
        )
        raise KeyCustodyError(f"{key.label} could not be {what}: {exc} {again} Nothing was changed.") from exc
    return candidate


@contextmanager
def _probed_and_locked(
    key: TenantKey, transition: Transition, config: dict[str, Any] | None, what: str
) -> Iterator[tuple[Tenant, TenantKey]]:
    """Check ``transition``, probe the key outside any transaction (a KMS call holds no lock), then open the
    transaction that performs it: tenant and key rows locked, the transition checked again, the probed
    settings saved."""
    check_tenant_writable(key.tenant)
    check(key.status, transition)
    probed = _probe_now(key, config, what)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
        check_tenant_writable(tenant)
        key = TenantKey.objects.select_for_update().get(pk=key.pk)
        check(key.status, transition)
        if probed.config != key.config:
            key.config = probed.config
            key.save(update_fields=["config"])
        yield tenant, key


def make_active(key: TenantKey, *, actor: Any, config: dict[str, Any] | None = None) -> TenantKey:
    """Make a retired key the active key again, after probing it; the current active key retires."""
    with _probed_and_locked(key, Transition.MAKE_ACTIVE, config, "made active") as (tenant, key):
        _become_active(tenant, key, actor=actor, trigger=Trigger.ACTIVATION)
    return key


def re_enable_key(
    key: TenantKey,
    *,
    actor: Any,
    reason: str = "",
    config: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> TenantKey:
    """Undo a disable, after probing the key: it becomes the active key again when the tenant has none
    (unsealing it), otherwise retired, and its data is readable again. ``tenant-kms.re-enabled`` first."""
    with _probed_and_locked(key, Transition.RE_ENABLE, config, "re-enabled") as (tenant, key):
        has_active = TenantKey.objects.for_tenant(tenant).filter(status=KeyStatus.ACTIVE).exists()
        target = KeyStatus.RETIRED if has_active else KeyStatus.ACTIVE
        key.disabled_at = None
        key.refused_at = None
        key.last_verify_error = ""
        key.last_verified_at = timezone.now()
        fields = ["disabled_at", "refused_at", "last_verify_error", "last_verified_at"]
        payload = payloads.key_re_enabled(
            key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id, status=target, reason=reason
        )
        record(tenant, EventType.TENANT_KMS_RE_ENABLED, actor=actor, request=request, payload=payload)
        if target == KeyStatus.RETIRED:
            key.status = KeyStatus.RETIRED
            # Retired since it last stopped being the active key: kept if it was retired when disabled.
            was_retired = key.retired_at and (not key.activated_at or key.retired_at >= key.activated_at)
            key.retired_at = key.retired_at if was_retired else timezone.now()
            key.save(update_fields=[*fields, "status", "retired_at"])
        else:
            key.save(update_fields=fields)
            _become_active(tenant, key, actor=actor, trigger=Trigger.RE_ENABLE)
    return key


@transaction.atomic
def retry_key(
    key: TenantKey, *, actor: Any, config: dict[str, Any] | None = None, key_id: str = ""
) -> TenantKey:
    """Verify a failed registration again (after the customer fixed the role), with the identifier and
    settings just submitted if given (same canonical key: an alias may now be given as the key ARN)."""
    tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
    check_tenant_writable(tenant)
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    check(key.status, Transition.RETRY)
    key.status = KeyStatus.PENDING
    key.last_verify_error = ""
    fields = ["status", "last_verify_error"]
    if config is not None:
        key.config = config
        fields.append("config")
    if key_id and key_id != key.key_id:
        key.key_id = key_id
        fields.append("key_id")
    if actor is not None and getattr(actor, "is_authenticated", False):
        key.registered_by = actor
        fields.append("registered_by")
    key.save(update_fields=fields)
    queue.verify_key(key.pk)
    return key


@transaction.atomic
def remove_key(key: TenantKey, *, actor: Any, request: HttpRequest | None = None) -> None:
    """Delete a registration that never verified: it wraps nothing, so nothing can be lost with it."""
    tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
    check_tenant_writable(tenant)
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    check(key.status, Transition.REMOVE)  # only failed keys, which never got a key version
    payload = payloads.key_removed(key_row_id=key.pk, provider=key.wrap_method, key_id=key.key_id)
    record(tenant, EventType.TENANT_KMS_REMOVED, actor=actor, request=request, payload=payload)
    key.delete()


# --- Disabling ----------------------------------------------------------------------------------------------


@transaction.atomic
def disable_key(
    key: TenantKey, *, actor: Any, request: HttpRequest | None = None, reason: str = ""
) -> TenantKey:
    """Stop using ``key`` at once, in every process. Reversible: ``re_enable_key``. Disabling the active key
    seals the tenant until it is re-enabled or another key is verified (the page confirms first)."""
    tenant = Tenant.objects.select_for_update().get(pk=key.tenant_id)
    check_tenant_writable(tenant)
    key = TenantKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.DISABLED:
        return key
    check(key.status, Transition.DISABLE)
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
        who = getattr(actor, "email", "") or "an owner or admin"
        reason = (
            f"No active key: {key.label} was disabled in Kodori by {who}. Re-enable it, or register and "
            "verify another key."
        )
        seal(tenant, reason, key, trigger=Trigger.DISABLE, actor=actor)
    return key


# --- Probing: the tenant's keys now -------------------------------------------------------------------------


def reverify_tenant(tenant: Tenant, *, actor: Any = None, trigger: Trigger = Trigger.OWNER_RETRY) -> bool:
    """Probe the tenant's active key (and its refused retired keys) now; seal or unseal. True if it works."""
    return _reverify_tenant(tenant, trigger=trigger, actor=actor)
