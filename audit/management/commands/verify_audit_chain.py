"""``manage.py verify_audit_chain [--tenant SLUG]``: verify chains from genesis; say what is broken.

Exit 0 when every chain verifies (past breaks people acknowledged, which are listed); 1 when any chain has an
open break, found now or kept from before and not acknowledged, even if the rows were put back since; 2 for
an unknown tenant; 3 when the chains verify but the witness of signed checkpoints could not be read.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services
from audit.presenters import break_line, break_row
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Verify audit hash chains from genesis, with their signed checkpoints and the witness. Exit 1 while "
        "any chain has an open break (until it is acknowledged), 3 if the witness cannot be read."
    )

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
        broken = unreadable = 0
        for status in statuses:
            slug = slugs.get(status.tenant_id, status.tenant_id)
            seen = status.full_verified_at
            if status.ok:
                count = len(status.acknowledged)
                past = f", past {count} acknowledged break(s)" if count else ""
                self.stdout.write(f"{slug}: OK, events #1..#{status.verified_seq} verified{past}")
            else:
                broken += 1
                self.stdout.write(self.style.ERROR(f"{slug}: {status.broken}"))
                for brk in status.breaks:
                    self.stdout.write(self.style.ERROR(f"  open: {break_line(break_row(brk, None, seen))}"))
            for brk in status.acknowledged:
                row = break_row(brk, status.proofs.get(brk.pk), seen)
                self.stdout.write(f"  acknowledged: {break_line(row)}")
            if status.witness_error:
                unreadable += 1
                self.stdout.write(self.style.WARNING(f"  the witness cannot be read: {status.witness_error}"))
        total = sum(s.verified_seq for s in statuses)
        self.stdout.write(f"{len(statuses)} chain(s), {total} events, {time.perf_counter() - started:.2f}s")
        if broken:
            sys.exit(1)
        if unreadable:
            sys.exit(3)
