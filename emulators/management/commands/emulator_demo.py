"""Give the demo tenants their keys in the running emulators and print what to paste into /encryption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emulators.dev import EmulatorControl, EmulatorError, demo_key_lines
from encryption.services import external_id_for
from tenants.management.commands.seed_demo import TENANTS
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Create or update, in the running AWS emulator, each demo tenant's key (alias/kodori-demo-<slug>) "
        "and role (kodori-demo-<slug>, trusting Kodori with the tenant's ExternalId); then print the key "
        "identifiers of all three emulators to paste into the registration forms. Safe to re-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tenant",
            action="append",
            dest="slugs",
            metavar="SLUG",
            help="a tenant to provision (repeatable; default: the demo tenants seed_demo creates)",
        )
        parser.add_argument(
            "--state-dir",
            default=str(Path(settings.DEV_STATE_DIR) / "emulators"),
            help="the emulators' state directory (to find the Azure emulator when not in make run)",
        )

    def handle(self, *args: Any, slugs: list[str] | None, state_dir: str, **options: Any) -> None:
        slugs = slugs or [slug for slug, _ in TENANTS]
        found = {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}
        missing = [slug for slug in slugs if slug not in found]
        if missing:
            raise CommandError(f"No tenant {', '.join(missing)}: run `manage.py seed_demo` first.")
        rows = [(slug, found[slug].name, external_id_for(found[slug])) for slug in slugs]
        try:
            keys = EmulatorControl(Path(state_dir)).demo_keys(rows)
        except EmulatorError as err:
            raise CommandError(str(err)) from None
        for line in demo_key_lines(keys):
            self.stdout.write(line)
