"""``manage.py verify_audit_chain [--tenant SLUG]``: exit 0 when every chain verifies, 1 naming the break."""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Verify audit hash chains from genesis, with their signed checkpoints. Exit 1 if any is broken."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="verify only this tenant's chain")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant with slug {options['tenant']!r}.", returncode=2)
        started = time.perf_counter()
        statuses = services.verify_chains(full=True, tenant=tenant)
        slugs = dict(Tenant.objects.values_list("pk", "slug"))
        broken = 0
        for status in statuses:
            slug = slugs.get(status.tenant_id, status.tenant_id)
            if status.ok:
                self.stdout.write(f"{slug}: OK, events #1..#{status.verified_seq} verified")
            else:
                broken += 1
                self.stdout.write(self.style.ERROR(f"{slug}: {status.broken}"))
        total = sum(s.verified_seq for s in statuses)
        self.stdout.write(f"{len(statuses)} chain(s), {total} events, {time.perf_counter() - started:.2f}s")
        if broken:
            sys.exit(1)
