"""Scrub stored blobs now: authenticate every chunk, report damaged or missing objects per tenant.

    $ python manage.py scrub_blobs [--tenant SLUG] [--limit N] [--rate BYTES_PER_SEC] [--restart]

Continues the running pass (of every tenant, or of ``--tenant``'s blobs, a pass of its own) where the last
run, the periodic task's or this command's, stopped, and goes on until the pass ends or ``--limit`` blobs are
done. Reads are paced to ``--rate`` bytes per second (default ``BLOB_SCRUB_BYTES_PER_SECOND``; 0: no limit).
``--restart`` abandons the running pass and starts a new one from the first blob. Prints, per tenant, how
many blobs were checked (ok, damaged, missing) and not checked (and why), then every damaged or missing blob:
tenant, blob id, name, damage, chunk.

Exit status: 0 no damage found; 1 damage found (the blobs are listed); 2 usage error (an unknown tenant too);
3 another scrub holds the lock, nothing was checked; 4 the blob store failed twice in a row, the run stopped.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from blobs import scrub
from tenants.models import Tenant

DAMAGE_FOUND = 1
USAGE = 2
LOCKED = 3
STORE_FAILED = 4


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Authenticate every chunk of every stored blob (rate-limited, resumable) and report damaged or "
        "missing blobs per tenant. Exit 0: no damage; 1: damage found; 3: another scrub is running; 4: the "
        "blob store failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="only this tenant's blobs (a pass of their own)")
        parser.add_argument(
            "--limit", type=_positive, metavar="N", help="stop after N blobs; the next run continues"
        )
        parser.add_argument(
            "--rate",
            type=_non_negative,
            metavar="BYTES_PER_SEC",
            help="read at most this many bytes a second (0: no limit; default BLOB_SCRUB_BYTES_PER_SECOND)",
        )
        parser.add_argument("--restart", action="store_true", help="abandon the running pass, start anew")

    def handle(
        self,
        *args: Any,
        tenant: str | None = None,
        limit: int | None = None,
        rate: int | None = None,
        restart: bool = False,
        **options: Any,
    ) -> None:
        scope = None
        if tenant is not None:
            scope = Tenant.objects.filter(slug=tenant).first()
            if scope is None:
                raise CommandError(f"There is no tenant {tenant!r}.", returncode=USAGE)
        report = scrub.run(tenant=scope, limit=limit, rate=rate, restart=restart)
        if report is None:
            self.stderr.write(
                "Another scrub is running (the periodic task or a command); nothing was checked."
            )
            raise SystemExit(LOCKED)
        for line in report.lines():
            self.stdout.write(line)
        if report.damage_found:
            raise SystemExit(DAMAGE_FOUND)
        if report.stopped == scrub.Stop.STORAGE:
            raise SystemExit(STORE_FAILED)
