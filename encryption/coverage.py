"""What each key protects, counted on encryption's own tables, and retiring what protects nothing.

Per KEK: its live key versions and data keys (the key history on /encryption); per key version: its data keys
(the coverage table). A retired version that no data key references has its key material destroyed (the row
stays as a tombstone); a retired KEK with no live version protects nothing and may be deleted from its KMS.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Q

from tenants.models import Tenant

from . import keyring
from .models import DataKey, KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod


@dataclass(frozen=True)
class KeyCoverage:
    """A KEK with its live (not destroyed) key versions and the data keys they wrap."""

    key: TenantKey
    live_versions: int
    data_keys: int

    @property
    def unreferenced(self) -> bool:
        """Retired (or disabled) and protecting nothing: Kodori will never call it again."""
        return (
            self.key.status in (KeyStatus.RETIRED, KeyStatus.DISABLED)
            and self.live_versions == 0
            and self.data_keys == 0
        )

    @property
    def deletable_in_kms(self) -> bool:
        """Unreferenced and living in a KMS: the customer (or operator) may delete it there."""
        return self.unreferenced and self.key.wrap_method != WrapMethod.GLOBAL


def key_coverage(tenant: Tenant) -> list[KeyCoverage]:
    """Every registered key of ``tenant``, newest first, with its live versions and data keys."""
    versions = dict(
        TenantKeyVersion.objects.for_tenant(tenant)
        .values("kek_id")
        .annotate(n=Count("id", filter=~Q(status=VersionStatus.DESTROYED)))
        .values_list("kek_id", "n")
    )
    data_keys = dict(
        DataKey.objects.for_tenant(tenant)
        .values("tkv__kek_id")
        .annotate(n=Count("id"))
        .values_list("tkv__kek_id", "n")
    )
    keys = TenantKey.objects.for_tenant(tenant).select_related("registered_by").order_by("-created_at", "-pk")
    return [KeyCoverage(key, versions.get(key.pk, 0), data_keys.get(key.pk, 0)) for key in keys]


@dataclass(frozen=True)
class VersionCoverage:
    """One key version of a tenant and how many data keys it wraps."""

    tkv: TenantKeyVersion
    data_keys: int

    @property
    def movable(self) -> int:
        """Data keys a re-wrap walk moves from here: not the active version, and its KEK can still open it
        (a key an owner disabled is left alone: Kodori no longer uses it for anything)."""
        return self.data_keys if self.tkv.status != VersionStatus.ACTIVE and self.tkv.kek.usable else 0

    @property
    def unused(self) -> bool:
        """A retired version that wraps nothing: a walk destroys it at once."""
        return self.tkv.status == VersionStatus.RETIRED and not self.data_keys


def version_coverage(tenant: Tenant) -> list[VersionCoverage]:
    """Every key version of ``tenant``, newest first, with its KEK and its data-key count."""
    counts = dict(
        DataKey.objects.for_tenant(tenant).values("tkv_id").annotate(n=Count("id")).values_list("tkv_id", "n")
    )
    versions = TenantKeyVersion.objects.for_tenant(tenant).select_related("kek").order_by("-version")
    return [VersionCoverage(tkv, counts.get(tkv.pk, 0)) for tkv in versions]


def destroy_unreferenced_versions(tenant: Tenant) -> list[tuple[int, int, int]]:
    """Erase the key material of every retired version no data key references; (id, version, kek) each.

    The row stays, as a tombstone the audit trail and the key history point to. A retired version never
    gains data keys again (uploads only wrap under the active one), so "nothing references it" is final.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tenant_key_versions t SET status = %s, wrapped_key = '\\x'::bytea, destroyed_at = now() "
            "WHERE t.tenant_id = %s AND t.status = %s "
            "AND NOT EXISTS (SELECT 1 FROM data_keys d WHERE d.tkv_id = t.id) "
            "RETURNING t.id, t.version, t.kek_id",
            [VersionStatus.DESTROYED, tenant.pk, VersionStatus.RETIRED],
        )
        destroyed = [(int(a), int(b), int(c)) for a, b, c in cursor.fetchall()]
    for pk, _, _ in destroyed:
        keyring.cache.discard(pk)
    return destroyed


def unreferenced_keys(tenant: Tenant, candidates: list[int]) -> list[int]:
    """Which of ``candidates`` (KEK ids) are retired or disabled with no live key version left."""
    live = TenantKeyVersion.objects.for_tenant(tenant).exclude(status=VersionStatus.DESTROYED)
    keys = (
        TenantKey.objects.for_tenant(tenant)
        .filter(pk__in=candidates, status__in=[KeyStatus.RETIRED, KeyStatus.DISABLED])
        .exclude(pk__in=live.values("kek_id"))
    )
    return sorted(keys.values_list("pk", flat=True))
