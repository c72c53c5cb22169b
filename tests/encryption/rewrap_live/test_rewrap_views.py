"""The re-wrap on /encryption: starting it, the live card, pause/resume/cancel, the coverage table, and the
key history's "no longer referenced — safe to delete from your KMS". (Who may reach each URL is in the
access matrix, tests/encryption/routes.py; the walk itself is tested in test_rewrap*.py.)"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditEvent, EventType
from emulators.azure_keyvault import AzureKeyVaultEmulator
from encryption import keyring, services
from encryption.format import envelope
from encryption.models import (
    DataKey,
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
    WrapMethod,
)
from encryption.rewrap import walk
from tenants.models import Tenant
from tests.encryption.conftest import customer_key_url
from tests.encryption.support import rotate_kek

pytestmark = pytest.mark.django_db

INDEX = reverse("encryption:index")
START = reverse("encryption:rewrap_start")
SAFE = "No longer referenced — safe to delete from your KMS"


def data_keys(tenant: Tenant, n: int) -> dict[uuid.UUID, bytes]:
    keys = {}
    for _ in range(n):
        blob_id = uuid.uuid4()
        keys[blob_id], _row = keyring.new_data_key(tenant, blob_id, envelope.FORMAT_VERSION)
    return keys


@pytest.fixture
def rotated(tenant: Tenant) -> dict[uuid.UUID, bytes]:
    """Five data keys under version 1, then a rotation: version 2 is active and wraps nothing yet."""
    keys = data_keys(tenant, 5)
    rotate_kek(tenant)
    return keys


def card(html: str) -> str:
    match = re.search(r'<section id="rewrap".*?</section>', html, re.S)
    assert match, "no re-wrap card on the page"
    return match.group(0)


def test_it_offers_a_re_wrap_of_exactly_the_data_keys_under_older_versions(
    as_user: Any, owner: Any, rotated: dict[uuid.UUID, bytes]
) -> None:
    html = as_user(owner).get(INDEX).content.decode()
    assert "Re-wrap 5 data keys to the active key" in html
    assert 'id="rewrap"' not in html  # no job yet


def test_it_says_there_is_nothing_to_re_wrap_in_a_fresh_tenant(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    data_keys(tenant, 2)
    html = as_user(owner).get(INDEX).content.decode()
    assert "Nothing to re-wrap" in html and "rewrap_start" not in html and START not in html
    response = as_user(owner).post(START, follow=True)
    assert (
        "Nothing to re-wrap: every data key is already under the active key version."
        in response.content.decode()
    )
    assert not RewrapJob.objects.exists()


def test_an_owner_starts_a_re_wrap_and_sees_it_live(
    as_user: Any,
    owner: Any,
    tenant: Tenant,
    rotated: dict[uuid.UUID, bytes],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = as_user(owner).post(START)
    assert response.status_code == 302 and response["Location"].endswith("#rewrap")
    assert len(queued) == 1  # the walk is queued after commit
    job = RewrapJob.objects.get(tenant=tenant)
    assert job.status == RewrapStatus.RUNNING and job.total == 5 and job.started_by == owner
    event = AuditEvent.objects.get(tenant=tenant, type=EventType.REWRAP_STARTED)
    assert (
        event.actor_id == owner.pk
        and event.payload["dataKeys"] == 5
        and event.payload["versions"] == {"1": 5}
    )

    html = as_user(owner).get(INDEX).content.decode()
    shown = card(html)
    assert "Running" in shown and "0 of 5" in shown and 'hx-trigger="every 2s"' in shown
    assert "Pause" in shown and "Cancel" in shown
    assert "Re-wrap 5 data keys" not in html  # no second start while one is live

    # A second start is refused with the reason.
    response = as_user(owner).post(START, follow=True)
    assert "A re-wrap is already running" in response.content.decode()
    assert RewrapJob.objects.filter(tenant=tenant).count() == 1


def test_the_live_card_reloads_the_page_once_the_walk_has_finished(
    as_user: Any, owner: Any, tenant: Tenant, rotated: dict[uuid.UUID, bytes]
) -> None:
    job = services_start(tenant, owner)
    url = reverse("encryption:rewrap_progress", args=[job.pk])
    running = as_user(owner).get(url, HTTP_HX_REQUEST="true")
    assert running.status_code == 200 and "HX-Refresh" not in running
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    finished = as_user(owner).get(url, HTTP_HX_REQUEST="true")
    assert finished["HX-Refresh"] == "true"
    body = finished.content.decode()
    assert "Completed" in body and "5 of 5" in body and "hx-trigger" not in body
    assert "Key material of version 1 destroyed" in body


def coverage_rows(html: str) -> list[tuple[str, str]]:
    """(version, data keys) of each row of the coverage table."""
    section = html[html.index('id="coverage"') :]
    return re.findall(r"<td>Version (\d+)</td>.*?<td class=\"rewrap-count\">([\d,]+)</td>", section, re.S)


def services_start(tenant: Tenant, owner: Any) -> RewrapJob:
    from encryption import rewrap

    job = rewrap.start_rewrap(tenant, actor=owner)
    assert job is not None
    return job


@pytest.mark.parametrize(
    ("verb", "start", "end", "event"),
    [
        ("pause", RewrapStatus.RUNNING, RewrapStatus.PAUSED, EventType.REWRAP_PAUSED),
        ("resume", RewrapStatus.PAUSED, RewrapStatus.RUNNING, EventType.REWRAP_RESUMED),
        ("cancel", RewrapStatus.RUNNING, RewrapStatus.CANCELLED, EventType.REWRAP_CANCELLED),
        ("cancel", RewrapStatus.PAUSED, RewrapStatus.CANCELLED, EventType.REWRAP_CANCELLED),
    ],
)
def test_an_admin_pauses_resumes_and_cancels(
    as_user: Any,
    admin: Any,
    owner: Any,
    tenant: Tenant,
    rotated: dict[uuid.UUID, bytes],
    verb: str,
    start: RewrapStatus,
    end: RewrapStatus,
    event: EventType,
) -> None:
    job = services_start(tenant, owner)
    RewrapJob.objects.filter(pk=job.pk).update(status=start)
    response = as_user(admin).post(reverse(f"encryption:rewrap_{verb}", args=[job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == end
    assert AuditEvent.objects.get(tenant=tenant, type=event).actor_id == admin.pk
    assert "0 of 5 data keys" in response.content.decode()


def test_a_paused_walk_moves_nothing_until_it_is_resumed(
    as_user: Any, owner: Any, tenant: Tenant, rotated: dict[uuid.UUID, bytes]
) -> None:
    job = services_start(tenant, owner)
    as_user(owner).post(reverse("encryption:rewrap_pause", args=[job.pk]))
    assert walk.run_batch(job.pk) == walk.Outcome.STOPPED
    assert DataKey.objects.filter(tenant=tenant, tkv__version=1).count() == 5
    html = card(as_user(owner).get(INDEX).content.decode())
    assert "Paused" in html and "Resume" in html and "hx-trigger" not in html
    as_user(owner).post(reverse("encryption:rewrap_resume", args=[job.pk]))
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    assert DataKey.objects.filter(tenant=tenant, tkv__version=2).count() == 5


def test_a_finished_job_cannot_be_paused_and_the_page_says_why(
    as_user: Any, owner: Any, tenant: Tenant, rotated: dict[uuid.UUID, bytes]
) -> None:
    job = services_start(tenant, owner)
    walk.walk(job.pk)
    response = as_user(owner).post(reverse("encryption:rewrap_pause", args=[job.pk]), follow=True)
    assert "This re-wrap is completed; only a running one can be paused." in response.content.decode()
    assert not AuditEvent.objects.filter(type=EventType.REWRAP_PAUSED).exists()


def test_another_tenants_job_is_404_and_untouched(
    as_user: Any, outsider: Any, owner: Any, tenant: Tenant, rotated: dict[uuid.UUID, bytes]
) -> None:
    job = services_start(tenant, owner)
    for name in ("rewrap_pause", "rewrap_cancel"):
        assert as_user(outsider).post(reverse(f"encryption:{name}", args=[job.pk])).status_code == 404
    assert as_user(outsider).get(reverse("encryption:rewrap_progress", args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert job.status == RewrapStatus.RUNNING


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_cannot_start_one(
    request: Any, as_user: Any, rotated: dict[uuid.UUID, bytes], who: str
) -> None:
    assert as_user(request.getfixturevalue(who)).post(START).status_code == 403
    assert not RewrapJob.objects.exists()


def test_the_coverage_table_counts_data_keys_per_version(
    as_user: Any, owner: Any, tenant: Tenant, rotated: dict[uuid.UUID, bytes]
) -> None:
    data_keys(tenant, 3)  # under version 2
    html = as_user(owner).get(INDEX).content.decode()
    rows = coverage_rows(html)
    assert rows == [("2", "3"), ("1", "5")]
    job = services_start(tenant, owner)
    walk.walk(job.pk)
    html = as_user(owner).get(INDEX).content.decode()
    rows = coverage_rows(html)
    assert rows == [("2", "8"), ("1", "0")]
    assert "Destroyed" in html


def test_a_retired_customer_key_is_safe_to_delete_only_once_nothing_depends_on_it(
    as_user: Any, owner: Any, tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    keyring.cache.clear()
    first = services.register_key(
        tenant,
        WrapMethod.CUSTOMER_KMS_AZURE,
        customer_key_url(vault, "first"),
        {"directory_id": vault.directory_id},
        actor=owner,
    )
    services.verify_key(first.pk)
    keys = data_keys(tenant, 4)
    second = services.register_key(
        tenant,
        WrapMethod.CUSTOMER_KMS_AZURE,
        customer_key_url(vault, "second"),
        {"directory_id": vault.directory_id},
        actor=owner,
    )
    services.verify_key(second.pk)
    assert TenantKey.objects.get(pk=first.pk).status == KeyStatus.RETIRED

    html = as_user(owner).get(INDEX).content.decode()
    assert "4 files still depend on it" in html and SAFE not in html

    job = services_start(tenant, owner)
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED and job.done == 4
    assert job.unreferenced_keys == [first.pk]
    assert not TenantKeyVersion.objects.filter(kek=first).exclude(status=VersionStatus.DESTROYED).exists()

    html = as_user(owner).get(INDEX).content.decode()
    assert html.count(SAFE) == 1  # the first Azure key
    assert "still depend" not in html
    keyring.cache.clear()
    for blob_id, dek in keys.items():
        assert keyring.open_data_key(tenant, blob_id) == dek
    completed = AuditEvent.objects.get(tenant=tenant, type=EventType.REWRAP_COMPLETED)
    assert completed.payload["rewrapped"] == 4 and completed.payload["retiredKeyRowIds"] == [first.pk]


def test_a_retired_version_that_wraps_nothing_is_retired_by_an_empty_walk(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    keyring.active_tkv(tenant)
    rotate_kek(tenant)  # version 1 wraps no data key
    html = as_user(owner).get(INDEX).content.decode()
    assert "Retire 1 unused key version" in html and "Re-wrap 0" not in html
    as_user(owner).post(START)
    job = RewrapJob.objects.get(tenant=tenant)
    assert job.total == 0
    assert walk.walk(job.pk) == walk.Outcome.FINISHED
    job.refresh_from_db()
    assert job.status == RewrapStatus.COMPLETED and job.destroyed_versions == [1]
    assert TenantKeyVersion.objects.get(tenant=tenant, version=1).status == VersionStatus.DESTROYED
    assert "Nothing to re-wrap" in as_user(owner).get(INDEX).content.decode()


def test_data_keys_under_a_disabled_key_are_not_offered_and_the_page_says_why(
    as_user: Any, owner: Any, tenant: Tenant, rotated: dict[uuid.UUID, bytes]
) -> None:
    # The rotation made a second KEK active; the first (with 5 data keys under version 1) is then disabled.
    old = TenantKeyVersion.objects.get(tenant=tenant, version=1).kek
    services.disable_key(old, actor=owner)
    html = as_user(owner).get(INDEX).content.decode()
    assert "5 data keys stay under a disabled key" in html
    assert "Retired — key disabled, its data keys unreadable" in html  # the coverage row of version 1
    assert "Re-wrap 5" not in html and "Retire 1" not in html
    response = as_user(owner).post(START, follow=True)
    assert "Nothing to re-wrap" in response.content.decode()
    assert DataKey.objects.filter(tenant=tenant, tkv__version=1).count() == 5
