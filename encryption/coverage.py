"""What each key protects, counted on encryption's own tables, and retiring what protects nothing.

Per KEK: its live key versions and data keys (the key history on /encryption); per key version: its data keys
(the coverage table). A retired version that no data key references has its key material destroyed (the row
stays as a tombstone); a retired KEK with no live version protects nothing and may be deleted from its KMS.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from tenants.models import Tenant

from . import identity, keyring, lifecycle
from .models import DataKeyCountDelta, KeyStatus, TenantKey, TenantKeyVersion, VersionStatus, WrapMethod


@dataclass(frozen=True)
class KeyCoverage:
    """A KEK with its live (not destroyed) key versions and the data keys they wrap.

    ``used_elsewhere``: another registration Kodori still uses, in this or any tenant, names the same key as
    the customer deletes it (``identity.deletion_unit``), so deleting it would cost data there.
    """

    key: TenantKey
    live_versions: int
    data_keys: int
    used_elsewhere: bool = False

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
        """Unreferenced, living in a KMS, and no registration Kodori still uses shares it: the customer (or
        operator) may delete it there."""
        return self.unreferenced and self.key.wrap_method != WrapMethod.GLOBAL and not self.used_elsewhere

    @property
    def actions(self) -> list[str]:
        """The lifecycle transitions an owner may start on this key (the buttons its row and page show)."""
        return [str(t) for t in lifecycle.actions(self.key.status)]


def holds_live_versions() -> Exists:
    """For a ``TenantKey`` queryset: the key still wraps a key version that is not destroyed."""
    return Exists(
        TenantKeyVersion.objects.filter(kek_id=OuterRef("pk")).exclude(status=VersionStatus.DESTROYED)
    )


def _in_use() -> Q:
    """Registrations Kodori still uses: pending or active, or holding key versions that are not destroyed."""
    return Q(status__in=[KeyStatus.PENDING, KeyStatus.ACTIVE]) | Q(holds_live_versions())


def used_elsewhere(key: TenantKey) -> bool:
    """Whether a registration other than ``key`` that Kodori still uses, in any tenant, shares its KMS key.

    Deliberately not tenant-scoped: one customer key may be registered by several tenants of one customer,
    and "safe to delete" must hold for all of them. It answers only yes or no, never which tenant.
    """
    if not key.canonical_id:
        return False
    unit = identity.deletion_unit(key.wrap_method, key.canonical_id.split("#", 1)[0])
    same = (
        Q(canonical_id__startswith=unit)
        if unit.endswith("/")
        else Q(canonical_id=unit) | Q(canonical_id__startswith=unit + "#")
    )
    return (
        TenantKey.objects.filter(wrap_method=key.wrap_method)
        .filter(same)
        .exclude(pk=key.pk)
        .filter(_in_use())
        .exists()
    )


def with_data_keys(versions: QuerySet[TenantKeyVersion]) -> list[tuple[TenantKeyVersion, int]]:
    """Each version with how many data keys it wraps now: its folded base plus its pending deltas (migration
    0005), in the one statement that reads the versions. Never a count over ``data_keys`` itself, which a
    million-file tenant would pay on every page."""
    pending = (
        DataKeyCountDelta.objects.filter(tkv_id=OuterRef("pk"))
        .values("tkv_id")
        .annotate(s=Sum("n"))
        .values("s")
    )
    annotated = versions.annotate(data_keys_now=F("data_key_count") + Coalesce(Subquery(pending), 0))
    return [(tkv, int(getattr(tkv, "data_keys_now"))) for tkv in annotated]  # noqa: B009 (an annotation)


def with_counts(keys: list[TenantKey], tenant_id: int) -> list[KeyCoverage]:
    """``keys`` (of one tenant) with their live versions and data keys, counted in two statements."""
    versions: dict[int, int] = {}
    data_keys: dict[int, int] = {}
    for tkv, n in with_data_keys(TenantKeyVersion.objects.filter(tenant_id=tenant_id, kek__in=keys)):
        versions[tkv.kek_id] = versions.get(tkv.kek_id, 0) + (tkv.status != VersionStatus.DESTROYED)
        data_keys[tkv.kek_id] = data_keys.get(tkv.kek_id, 0) + n
    rows = []
    for key in keys:
        row = KeyCoverage(key, versions.get(key.pk, 0), data_keys.get(key.pk, 0))
        if row.unreferenced and key.wrap_method != WrapMethod.GLOBAL:
            row = KeyCoverage(key, row.live_versions, row.data_keys, used_elsewhere(key))
        rows.append(row)
    return rows


def coverage_of(key: TenantKey) -> KeyCoverage:
    """One key's coverage (its page)."""
    return with_counts([key], key.tenant_id)[0]


@dataclass(frozen=True)
class VersionCoverage:
    """One key version of a tenant and how many data keys it wraps."""

    tkv: TenantKeyVersion
    data_keys: int

    @property
    def movable(self) -> int:
        """Data keys a re-wrap walk moves from here: those under a retired key (a key an owner disabled is
        left alone, as Kodori no longer opens it; older versions of the active key stay where they are)."""
        return self.data_keys if self.tkv.kek.status == KeyStatus.RETIRED else 0

    @property
    def status_label(self) -> str:
        """The version's state as it really is: an active version under a disabled or refusing key opens
        nothing, so it is never called simply "Active"."""
        kek, label = self.tkv.kek, self.tkv.get_status_display()
        if self.tkv.status == VersionStatus.DESTROYED:
            return label
        unreadable = ", its data keys unreadable" if self.data_keys else ""
        if kek.status == KeyStatus.DISABLED:
            return f"{label} — key disabled{unreadable}"
        if kek.refused_at is not None:
            return f"{label} — key refuses Kodori{unreadable}"
        return label

    @property
    def status_class(self) -> str:
        if self.tkv.status == VersionStatus.DESTROYED:
            return "status-muted"
        if self.tkv.kek.status == KeyStatus.DISABLED or self.tkv.kek.refused_at is not None:
            return "status-danger"
        return "status-ok" if self.tkv.status == VersionStatus.ACTIVE else "status-warn"

    @property
    def unused(self) -> bool:
        """A retired version that wraps nothing: a walk destroys it at once."""
        return self.tkv.status == VersionStatus.RETIRED and not self.data_keys


def version_coverage(tenant: Tenant) -> list[VersionCoverage]:
    """Every key version of ``tenant``, newest first, with its KEK and its data-key count."""
    versions = TenantKeyVersion.objects.for_tenant(tenant).select_related("kek").order_by("-version")
    return [VersionCoverage(tkv, n) for tkv, n in with_data_keys(versions)]


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
