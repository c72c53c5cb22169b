"""What each key protects: key versions and data keys per KEK, counted on encryption's own tables."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q

from tenants.models import Tenant

from .models import DataKey, TenantKey, TenantKeyVersion, VersionStatus


@dataclass(frozen=True)
class KeyCoverage:
    key: TenantKey
    live_versions: int
    data_keys: int


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
