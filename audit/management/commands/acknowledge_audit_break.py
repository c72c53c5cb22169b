"""``manage.py acknowledge_audit_break --tenant SLUG --seq N --reason TEXT --operator NAME``: an operator
acknowledges a break of a tenant's audit chain, recorded as an ``audit.break-acknowledged`` event.

Without ``--seq`` (or ``--break``) it lists the tenant's open breaks and exits 1. ``--kind`` picks one of
several breaks found at the same position; ``--break`` names one by its id (the Django admin shows ids).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import chain, services
from audit.models import AcknowledgedVia, BreakKind, ChainBreak
from audit.presenters import break_line, break_row
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Acknowledge a break of a tenant's audit chain with a reason (recorded in the tenant's audit log)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", required=True)
        parser.add_argument("--seq", type=int, help="the first bad sequence number of the break")
        parser.add_argument("--kind", choices=BreakKind.values, help="which break at that position")
        parser.add_argument("--break", dest="break_id", type=int, metavar="ID", help="the break's id")
        parser.add_argument("--reason", default="", help="what happened and what was done (recorded)")
        parser.add_argument("--operator", default="", help="who you are (recorded, with the reason)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with slug {options['tenant']!r}.", returncode=2)
        open_ = [b for b in ChainBreak.objects.for_tenant(tenant) if chain.acknowledgement(b) is None]
        if options["seq"] is None and options["break_id"] is None:
            self._list(tenant, open_)
            sys.exit(1 if open_ else 0)
        chosen = [
            b
            for b in open_
            if (options["break_id"] is None or b.pk == options["break_id"])
            and (options["seq"] is None or b.first_bad_seq == options["seq"])
            and (options["kind"] is None or b.kind == options["kind"])
        ]
        if not chosen:
            self._list(tenant, open_)
            raise CommandError("No open break of this tenant matches; the open ones are listed above.")
        if len(chosen) > 1:
            self._list(tenant, chosen)
            raise CommandError("Several open breaks match: give --kind or --break.")
        if not options["operator"].strip():
            raise CommandError("Give --operator: who acknowledges the break is recorded with it.")
        try:
            reason, operator = options["reason"], options["operator"]
            brk = services.acknowledge_break(
                chosen[0], reason=reason, via=AcknowledgedVia.OPERATOR, operator=operator
            )
        except services.AcknowledgementError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{tenant.slug}: the break at {brk.span} ({brk.kind}) is acknowledged; recorded as event "
            f"#{brk.ack_seq}. Later verifications pass over exactly this finding; any other is reported."
        )

    def _list(self, tenant: Tenant, breaks: list[ChainBreak]) -> None:
        if not breaks:
            self.stdout.write(f"{tenant.slug}: no open break")
        for brk in breaks:
            self.stdout.write(f"{tenant.slug}: break {brk.pk}: {break_line(break_row(brk, None, None))}")
