"""The "Key custody" view (``types=custody``): keys, seal and unseal, re-wrap, cloud KMS; nothing else."""

from __future__ import annotations

import csv
import fnmatch
import io
import re
from typing import Any

import pytest
from django.urls import reverse

from audit import chain, services
from audit.filters import PRESETS, expand_types
from audit.models import EventType
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

NAMED_CUSTODY = {
    "tenant.sealed",
    "tenant.unsealed",
    "tenant.cloud-kms-enabled",
    "tenant.cloud-kms-disabled",
    "rewrap.started",
    "rewrap.completed",
    "rewrap.failed",
    "rewrap.paused",
    "rewrap.resumed",
    "rewrap.cancelled",
}
# Every key event, today's and any added later (``tenant-kms.re-enabled``), by the wildcard.
CUSTODY = NAMED_CUSTODY | {t.value for t in EventType if fnmatch.fnmatchcase(t.value, "tenant-kms.*")}
NOT_CUSTODY = {
    "blob.uploaded",
    "blob.deleted",
    "membership.added",
    "membership.role-changed",
    "membership.removed",
    "api-token.created",
    "api-token.revoked",
}


def _record_one_of_each(tenant: Tenant) -> None:
    for kind in sorted(CUSTODY | NOT_CUSTODY):
        services.record(tenant, kind, payload={"note": kind})


def _types_on_page(html: bytes) -> list[str]:
    return re.findall(r'<code class="audit-type">([^<]+)</code>', html.decode())


def test_the_custody_preset_expands_to_every_custody_type() -> None:
    matched, errors = expand_types(["custody"])
    assert errors == []
    assert set(matched) == CUSTODY
    assert {"tenant-kms.registered", "tenant-kms.rotated", "tenant-kms.disabled"} <= set(matched)
    assert not set(matched) & NOT_CUSTODY


def test_a_key_event_added_later_joins_the_preset_by_its_wildcard() -> None:
    assert "tenant-kms.*" in PRESETS["custody"]
    assert fnmatch.fnmatchcase("tenant-kms.re-enabled", "tenant-kms.*")


def test_the_key_custody_view_lists_custody_events_only(tenant: Tenant, owner: Any, as_user: Any) -> None:
    _record_one_of_each(tenant)
    r = as_user(owner).get(reverse("audit:index"), {"types": "custody"})
    assert r.status_code == 200
    shown = _types_on_page(r.content)
    assert sorted(shown) == sorted(CUSTODY)  # each once, and nothing else
    assert 'value="custody"' in r.content.decode()  # the filter box keeps the preset's name


def test_the_page_links_to_the_key_custody_view(tenant: Tenant, owner: Any, as_user: Any) -> None:
    everything = as_user(owner).get(reverse("audit:index"), {"all": "1"}).content.decode()
    assert 'href="?types=custody"' in everything
    assert '<option value="custody">' in everything
    assert 'href="?types=tenant-kms.*"' not in everything
    # The page opens on that view, and links back to every event.
    assert 'href="?all=1"' in as_user(owner).get(reverse("audit:index")).content.decode()


def test_the_csv_export_of_the_custody_view_has_the_same_events(
    tenant: Tenant, owner: Any, as_user: Any
) -> None:
    _record_one_of_each(tenant)
    client = as_user(owner)
    page = client.get(reverse("audit:index"), {"types": "custody"}).content.decode()
    assert f'href="{reverse("audit:export_csv")}?types=custody"' in page
    response = client.get(reverse("audit:export_csv"), {"types": "custody"})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted(row["type"] for row in rows) == sorted(CUSTODY)
    exported = chain.head(tenant)
    assert exported is not None and exported.type == "audit.exported"
    assert exported.payload["filters"] == "types=custody"


def test_the_preset_combines_with_other_types_and_filters(tenant: Tenant, owner: Any, as_user: Any) -> None:
    _record_one_of_each(tenant)
    client = as_user(owner)
    both = client.get(reverse("audit:index"), {"types": "custody,blob.uploaded"})
    assert sorted(_types_on_page(both.content)) == sorted(CUSTODY | {"blob.uploaded"})
    nobody = client.get(reverse("audit:index"), {"types": "custody", "actor": "owner@acme.test"})
    assert _types_on_page(nobody.content) == []
