"""Re-wrap every kodori-managed key version under the current ``AUTH_SECRET``.

Rotation without losing data: put the new secret in ``AUTH_SECRET``, the old one in ``AUTH_SECRET_FALLBACKS``,
deploy, run this command, and once it reports 0 remaining, remove the old secret from the fallbacks. Only the
TKVs are re-wrapped (one row per tenant per version); data keys and blob bytes are untouched.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from encryption.keyring import cache
from encryption.models import TenantKeyVersion, VersionStatus, WrapMethod
from encryption.providers import KeyContext, ProviderError
from encryption.providers.local import GlobalKeyProvider


class Command(BaseCommand):
    help = "Re-wrap kodori-managed key versions under the current AUTH_SECRET (the old one in fallbacks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be re-wrapped; change nothing."
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        candidates = (
            TenantKeyVersion.objects.filter(kek__wrap_method=WrapMethod.GLOBAL)
            .exclude(status=VersionStatus.DESTROYED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        rewrapped = current = failed = 0
        for pk in candidates:
            with transaction.atomic():
                tkv = TenantKeyVersion.objects.select_for_update().get(pk=pk)
                provider = GlobalKeyProvider(tkv.tenant_id)
                wrapped = bytes(tkv.wrapped_key)
                if provider.wrapped_under_current_secret(wrapped):
                    current += 1
                    continue
                if dry_run:
                    rewrapped += 1
                    continue
                context = KeyContext(tenant_id=tkv.tenant_id, key_version=tkv.version)
                try:
                    tkv.wrapped_key = provider.wrap(provider.unwrap(wrapped, context), context)
                except ProviderError as exc:
                    failed += 1
                    self.stderr.write(f"tenant {tkv.tenant_id} version {tkv.version}: {exc}")
                    continue
                tkv.save(update_fields=["wrapped_key"])
                cache.discard(tkv.pk)
                rewrapped += 1
        verb = "would re-wrap" if dry_run else "re-wrapped"
        self.stdout.write(f"{verb} {rewrapped}, already current {current}, failed {failed}")
        if failed:
            raise SystemExit(1)
