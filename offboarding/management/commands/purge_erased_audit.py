"""``manage.py purge_erased_audit``: remove the audit chains of erased tenants whose retention has passed.

The beat task does the same daily; run this as the audit tables' owner where the application's role is not.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from offboarding import retention


class Command(BaseCommand):
    help = (
        "Remove the audit chains of erased tenants past TENANT_AUDIT_RETENTION_DAYS, keeping a signed record."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        due = retention.expired()
        for deletion in due:
            retention.purge(deletion)
            self.stdout.write(f"tenant {deletion.tenant_id} ({deletion.tenant.slug}): audit chain removed")
        self.stdout.write(f"{len(due)} chain(s) removed.")
