"""Celery tasks of the encryption app: thin, idempotent, ids only (never key material)."""

from __future__ import annotations

from celery import shared_task

from tenants.models import Tenant

from . import services


@shared_task(name="encryption.tasks.verify_key")
def verify_key(key_pk: int) -> str:
    """Probe a newly registered key and activate it or mark it failed. Re-running it changes nothing."""
    return str(services.verify_key(key_pk).status)


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
