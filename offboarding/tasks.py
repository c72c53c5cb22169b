"""Celery tasks of offboarding: the erasure of due tenants, and the removal of expired audit chains."""

from __future__ import annotations

from celery import shared_task

from . import erasure, retention


@shared_task(name="offboarding.tasks.erase_due_tenants")
def erase_due_tenants() -> list[str]:
    return erasure.erase_due()


@shared_task(name="offboarding.tasks.purge_expired_audit")
def purge_expired_audit() -> list[int]:
    return retention.purge_expired()
