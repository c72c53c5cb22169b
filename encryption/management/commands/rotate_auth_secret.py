"""Re-wrap every kodori-managed key version under the current ``AUTH_SECRET``.

Rotation without losing data: put the new secret in ``AUTH_SECRET``, the old one in ``AUTH_SECRET_FALLBACKS``,
deploy, run this command, and once it reports 0 remaining, remove the old secret from the fallbacks. Only the
TKVs are re-wrapped (one row per tenant per version); data keys and blob bytes are untouched.

Each tenant is one transaction: its versions are re-wrapped and, if any were, one
``tenant-kms.auth-secret-rotated`` event is appended to its audit chain in the same transaction, so the
chain says when the keys came under the new secret. The event carries the versions and the fingerprints
already stored in the wrapped values (docs/audit.md), never a secret.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import QuerySet

from audit import payloads
from audit.models import EventType
from audit.services import record
from encryption.keyring import cache
from encryption.models import TenantKeyVersion, VersionStatus, WrapMethod
from encryption.providers import KeyContext, ProviderError
from encryption.providers.local import HEADER_SIZE, MAGIC, GlobalKeyProvider
from tenants.models import Tenant


def _fingerprint(wrapped: bytes) -> str:
    """The stored tag naming the secret that wrapped a value (hex): public, reveals only equality."""
    return wrapped[len(MAGIC) : HEADER_SIZE].hex()


class Command(BaseCommand):
    help = "Re-wrap kodori-managed key versions under the current AUTH_SECRET (the old one in fallbacks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be re-wrapped; change nothing."
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        tenant_ids = self._candidates().order_by("tenant_id").values_list("tenant_id", flat=True).distinct()
        totals = {"rewrapped": 0, "current": 0, "failed": 0}
        for tenant_id in tenant_ids:
            with transaction.atomic():
                for name, count in self._rotate_tenant(tenant_id, dry_run=dry_run).items():
                    totals[name] += count
        verb = "would re-wrap" if dry_run else "re-wrapped"
        self.stdout.write(
            f"{verb} {totals['rewrapped']}, already current {totals['current']}, failed {totals['failed']}"
        )
        if totals["failed"]:
            raise SystemExit(1)

    def _candidates(self) -> QuerySet[TenantKeyVersion]:
        """Every kodori-managed version that still holds key material."""
        return TenantKeyVersion.objects.filter(kek__wrap_method=WrapMethod.GLOBAL).exclude(
            status=VersionStatus.DESTROYED
        )

    def _rotate_tenant(self, tenant_id: int, *, dry_run: bool) -> dict[str, int]:
        """Re-wrap one tenant's versions and record the event, inside the caller's transaction."""
        provider = GlobalKeyProvider(tenant_id)
        versions: list[int] = []
        previous: set[str] = set()
        current = failed = 0
        new_fingerprint = ""
        # of=("self",): lock the version rows only, not the KEK rows the filter joins.
        tkvs = self._candidates().filter(tenant_id=tenant_id).select_for_update(of=("self",))
        for tkv in tkvs.order_by("version"):
            wrapped = bytes(tkv.wrapped_key)
            if provider.wrapped_under_current_secret(wrapped):
                current += 1
                continue
            if dry_run:
                versions.append(tkv.version)
                continue
            context = KeyContext(tenant_id=tenant_id, key_version=tkv.version)
            try:
                tkv.wrapped_key = provider.wrap(provider.unwrap(wrapped, context), context)
            except ProviderError as exc:
                failed += 1
                self.stderr.write(f"tenant {tenant_id} version {tkv.version}: {exc}")
                continue
            tkv.save(update_fields=["wrapped_key"])
            cache.discard(tkv.pk)
            versions.append(tkv.version)
            previous.add(_fingerprint(wrapped))
            new_fingerprint = _fingerprint(bytes(tkv.wrapped_key))
        if versions and not dry_run:
            payload = payloads.auth_secret_rotated(
                versions=versions,
                kek_fingerprint=new_fingerprint,
                previous_kek_fingerprints=sorted(previous),
                failed=failed,
            )
            tenant = Tenant.objects.get(pk=tenant_id)
            record(tenant, EventType.TENANT_KMS_AUTH_SECRET_ROTATED, payload=payload)
        return {"rewrapped": len(versions), "current": current, "failed": failed}
