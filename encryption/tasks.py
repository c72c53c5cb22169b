"""Celery tasks of the encryption app: thin, idempotent, ids only (never key material)."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError, connection

from tenants.models import Tenant

from . import health, services
from .providers import ProviderError
from .rewrap import ending, walk
from .sealing import Trigger

# A registration whose KMS is only busy is retried for about 16 minutes (15 s doubling, 6 times) before it
# is marked failed.
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
    """The schedule: probe every cloud key Kodori depends on (active keys, and retired keys that still protect
    key versions); seal, unseal, mark refused or clear as each answers. (Name kept for beat schedules.)"""
    for key_pk in health.stale_pending_keys():
        verify_key.delay(key_pk)  # a registration whose probe message was lost: pending must end by itself
    ok = failed = 0
    for key_pk in health.keys_to_reverify():
        if health.probe_key(key_pk, trigger=Trigger.SCHEDULE):
            ok += 1
        else:
            failed += 1
    return {"ok": ok, "failed": failed}


@shared_task(name="encryption.tasks.reverify_key")
def reverify_key(key_pk: int, trigger: str = Trigger.USE) -> bool:
    """Probe one key now: queued by the first refusal an upload, download or re-wrap meets."""
    return health.probe_key(key_pk, trigger=Trigger(trigger))


@shared_task(name="encryption.tasks.reverify_tenant")
def reverify_tenant(tenant_pk: int) -> bool:
    """ "Retry now" for one tenant."""
    return services.reverify_tenant(Tenant.objects.get(pk=tenant_pk))


# A walk that keeps hitting a busy KMS or a lost database connection tries again for about an hour.
REWRAP_RETRIES = 12
REWRAP_RETRY_MAX_SECONDS = 600


@shared_task(name="encryption.tasks.run_rewrap", bind=True, max_retries=REWRAP_RETRIES)
def run_rewrap(self: Task, job_pk: int) -> str:
    """Walk a re-wrap job for one time slice, then queue the rest. Any number may run for one job at once."""
    try:
        outcome = walk.walk(job_pk, seconds=settings.KODORI_REWRAP_SLICE_SECONDS)
    except (ProviderError, DatabaseError) as exc:
        if isinstance(exc, DatabaseError):
            # A dropped connection: the batch rolled back. Open a fresh one for the retry.
            connection.close()
        if self.request.retries >= REWRAP_RETRIES:
            ending.fail_job(job_pk, f"Gave up after {REWRAP_RETRIES} retries: {exc}")
            _vacuum_after(job_pk)
            return walk.Outcome.FINISHED
        countdown = min(REWRAP_RETRY_MAX_SECONDS, 2 ** (self.request.retries + 1))
        raise self.retry(exc=exc, countdown=countdown) from exc
    if outcome == walk.Outcome.MORE:
        run_rewrap.delay(job_pk)
    elif outcome == walk.Outcome.FINISHED:
        _vacuum_after(job_pk)
    return outcome


def _vacuum_after(job_pk: int) -> None:
    """A walk that rewrote rows left a dead row version behind for each: reclaim them once it has ended."""
    if ending.moved_any(job_pk):
        vacuum_data_keys.delay()


@shared_task(name="encryption.tasks.resume_stalled_rewraps")
def resume_stalled_rewraps() -> list[int]:
    """Queue every running walk whose worker died (its checkpoint went stale). Harmless if it did not."""
    stalled = ending.stalled_jobs()
    for job_pk in stalled:
        run_rewrap.delay(job_pk)
    return stalled


@shared_task(name="encryption.tasks.vacuum_data_keys")
def vacuum_data_keys() -> None:
    """Reclaim the row versions a walk left behind (every moved row was rewritten), and refresh statistics."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) data_keys")
