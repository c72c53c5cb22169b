"""Celery tasks of the encryption app: thin, idempotent, ids only (never key material)."""

from __future__ import annotations

from celery import Task, shared_task

from tenants.models import Tenant

from . import services
from .providers import ProviderError

# A registration whose KMS is only busy is retried for about five minutes before it is marked failed.
VERIFY_RETRIES = 6
VERIFY_RETRY_SECONDS = 15


@shared_task(name="encryption.tasks.verify_key", bind=True, max_retries=VERIFY_RETRIES)
def verify_key(self: Task, key_pk: int) -> str:
    """Probe a newly registered key and activate it or mark it failed. Re-running it changes nothing."""
    try:
        return str(services.verify_key(key_pk).status)
    except ProviderError as exc:  # transient: throttled, timed out, unavailable
        if self.request.retries >= VERIFY_RETRIES:
            return str(services.fail_verification(key_pk, str(exc)).status)
        raise self.retry(exc=exc, countdown=VERIFY_RETRY_SECONDS * 2**self.request.retries) from exc


@shared_task(name="encryption.tasks.reverify_active_keys")
def reverify_active_keys() -> dict[str, int]:
    """Probe every tenant's active cloud key: seal tenants whose key refuses, unseal those answering again."""
    ok = failed = 0
    for tenant in services.tenants_to_reverify():
        if services.reverify_tenant(tenant):
            ok += 1
        else:
            failed += 1
    return {"ok": ok, "failed": failed}


@shared_task(name="encryption.tasks.reverify_tenant")
def reverify_tenant(tenant_pk: int) -> bool:
    """ "Retry now" for one tenant."""
    return services.reverify_tenant(Tenant.objects.get(pk=tenant_pk))
