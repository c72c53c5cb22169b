"""The key history on ``/encryption`` in keyset pages, each key linked to the rotations that made it active
and to the re-wrap walks to it; a walk's page with its summary (true to the ``RewrapJob`` row), what failed
and what to do, and the way back to the rotation."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from django.urls import reverse

from audit import pages, payloads, services
from audit.models import AuditEvent, EventType
from encryption import history, keyring
from encryption.models import (
    KeyStatus,
    RewrapJob,
    RewrapStatus,
    TenantKey,
    TenantKeyVersion,
    VersionStatus,
    WrapMethod,
)
from encryption.walk_summary import duration, summarize
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

INDEX = "/encryption"
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-a1b2c3d4e{:03d}"


def text(html: bytes) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.decode())))


def audit_link(seq: int) -> str:
    """The link to the rotation's audit event, as a template writes it (``&`` escaped)."""
    return pages.event_url(seq, custody=True).replace("&", "&amp;")


def key_rows(html: bytes) -> list[int]:
    return [int(pk) for pk in re.findall(rb'<tr id="key-(\d+)">', html)]


def links(html: bytes) -> dict[str, str]:
    found = re.findall(rb'<a class="button small" href="([^"]+)" rel="(first|prev|next|last)">', html)
    return {rel.decode(): href.decode().replace("&amp;", "&") for href, rel in found}


def failed_keys(tenant: Tenant, n: int) -> list[int]:
    """``n`` registrations that failed verification (they protect nothing), oldest first."""
    return [
        TenantKey.objects.create(
            tenant=tenant,
            wrap_method=WrapMethod.CUSTOMER_KMS_AWS,
            key_id=ARN.format(i),
            canonical_id=ARN.format(i),
            status=KeyStatus.FAILED,
            config={"region": "eu-west-1"},
        ).pk
        for i in range(n)
    ]


# --- Pages ------------------------------------------------------------------------------------------------


def test_a_long_key_history_has_first_previous_next_last(
    as_user: Any, owner: Any, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "PAGE_SIZE", 4)
    managed = keyring.active_tkv(tenant).kek_id
    ids = [managed, *failed_keys(tenant, 9)]  # ten keys, newest last
    newest_first = ids[::-1]
    client = as_user(owner)
    first = client.get(INDEX)
    assert key_rows(first.content) == newest_first[:4]
    assert set(links(first.content)) == {"next", "last"}
    second = client.get(links(first.content)["next"])
    assert key_rows(second.content) == newest_first[4:8]
    assert set(links(second.content)) == {"first", "prev", "next", "last"}
    last = client.get(links(second.content)["last"])
    assert key_rows(last.content) == newest_first[6:]  # the oldest keys, a full page of them
    assert set(links(last.content)) == {"first", "prev"}
    assert key_rows(client.get(links(last.content)["prev"]).content) == newest_first[2:6]
    assert key_rows(client.get(links(last.content)["first"]).content) == newest_first[:4]
    # The rest of the page does not page: the current key is still the managed one.
    assert "Kodori-managed" in text(last.content)


def test_a_short_key_history_has_no_pager(as_user: Any, owner: Any, tenant: Tenant) -> None:
    keyring.active_tkv(tenant)
    failed_keys(tenant, 3)
    html = as_user(owner).get(INDEX).content
    assert len(key_rows(html)) == 4
    assert links(html) == {}


def test_history_cursors_are_opaque_and_lead_back_to_the_history(
    as_user: Any, owner: Any, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    ids = failed_keys(tenant, 3)
    nxt = links(as_user(owner).get(INDEX).content)["next"]
    assert nxt.startswith(f"{INDEX}?after=") and nxt.endswith("#history")
    cursor = nxt.split("after=")[1].split("#")[0]
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == f'["key",{ids[1]}]'.encode()


@pytest.mark.parametrize("cursor", ["garbage", pages.encode("audit", 3), "-1"])
def test_a_damaged_history_cursor_gives_the_first_page_and_says_so(
    as_user: Any, owner: Any, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, cursor: str
) -> None:
    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    ids = failed_keys(tenant, 3)
    r = as_user(owner).get(INDEX, {"after": cursor})
    assert r.status_code == 200
    assert key_rows(r.content) == [ids[2], ids[1]]
    assert "That page link of the key history is out of date or damaged" in text(r.content)


def test_a_history_cursor_never_shows_another_tenants_keys(
    as_user: Any, outsider: Any, tenant: Tenant, other_tenant: Tenant
) -> None:
    acme = failed_keys(tenant, 3)
    html = as_user(outsider).get(INDEX, {"after": pages.encode("key", acme[-1] + 1)}).content
    assert not set(key_rows(html)) & set(acme)
    assert b"1234abcd-12ab-34cd-56ef-a1b2c3d4e" not in html


def test_an_empty_key_history_says_what_will_appear_and_where_to_go(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    r = as_user(owner).get(INDEX)
    page = text(r.content)
    assert "No key has been used yet: the first upload provisions the Kodori-managed key" in page
    assert f'href="{reverse("blobs:list")}"' in r.content.decode()


# --- Rotations linked to their walks --------------------------------------------------------------------


@pytest.fixture
def rotated(tenant: Tenant, owner: Any) -> dict[str, Any]:
    """A managed key (versions 1-3), rotated to an AWS key (version 4), and the walk that moved 1,234,567
    data keys from version 3 to 4; its rotation event."""
    old = keyring.active_tkv(tenant)
    TenantKeyVersion.objects.filter(pk=old.pk).update(status=VersionStatus.RETIRED)
    for v in (2, 3):
        TenantKeyVersion.objects.create(
            tenant=tenant, kek=old.kek, version=v, wrapped_key=b"w", status=VersionStatus.RETIRED
        )
    TenantKey.objects.filter(pk=old.kek_id).update(status=KeyStatus.RETIRED)
    new = TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_AWS,
        key_id=ARN.format(1),
        canonical_id=ARN.format(1),
        status=KeyStatus.ACTIVE,
    )
    target = TenantKeyVersion.objects.create(tenant=tenant, kek=new, version=4, wrapped_key=b"w")
    payload = payloads.key_rotated(
        from_provider="global",
        from_key_id="",
        to_provider=new.wrap_method,
        to_key_id=new.key_id,
        from_key_row_id=old.kek_id,
        to_key_row_id=new.pk,
    )
    event = services.record(tenant, EventType.TENANT_KMS_ROTATED, actor=owner, payload=payload)
    assert event is not None
    job = RewrapJob.objects.create(
        tenant=tenant,
        status=RewrapStatus.COMPLETED,
        target_tkv=target,
        total=1_234_567,
        done=1_234_567,
        versions={"3": {"version": 3, "kek": old.kek_id, "total": 1_234_567, "done": 1_234_567}},
        destroyed_versions=[3],
    )
    started = event.created_at + timedelta(seconds=1)
    RewrapJob.objects.filter(pk=job.pk).update(
        created_at=started, finished_at=started + timedelta(seconds=62)
    )
    job.refresh_from_db()
    return {"key": new, "old": old.kek_id, "job": job, "event": event, "started": started}


def test_the_summary_is_the_rows_numbers(rotated: dict[str, Any]) -> None:
    job = rotated["job"]
    finished = job.finished_at.strftime("%H:%M UTC on %Y-%m-%d")
    assert summarize(job).headline == (
        "Re-wrapped 1,234,567 data keys from key version 3 to 4 in 1 min 02 s (19,912 per second), "
        f"finished {finished}."
    )


def test_the_key_history_links_the_rotation_and_its_walk(
    as_user: Any, owner: Any, rotated: dict[str, Any]
) -> None:
    key, job, event = rotated["key"], rotated["job"], rotated["event"]
    html = as_user(owner).get(INDEX).content.decode()
    row = html[html.index(f'<tr id="key-{key.pk}">') :].split("</tr>")[0]
    assert f'href="{reverse("encryption:rewrap_progress", args=[job.pk])}">Re-wrap #{job.pk}</a>' in row
    assert "completed, 1,234,567 of 1,234,567 data keys" in row
    assert f'href="{audit_link(event.seq)}">Rotated from kodori-managed' in row
    # The older key was rotated away from, not to: it has neither.
    older = html[html.index(f'<tr id="key-{rotated["old"]}">') :].split("</tr>")[0]
    assert "Re-wrap #" not in older and "Rotated from" not in older


def test_the_walk_page_has_its_summary_and_links_back_to_the_rotation(
    as_user: Any, owner: Any, admin: Any, rotated: dict[str, Any]
) -> None:
    key, job, event = rotated["key"], rotated["job"], rotated["event"]
    for user in (owner, admin):
        r = as_user(user).get(reverse("encryption:rewrap_progress", args=[job.pk]))
        assert r.status_code == 200
        html = r.content.decode()
        assert "<html" in html  # a page of its own, not the card alone
        assert "Re-wrapped 1,234,567 data keys from key version 3 to 4 in 1 min 02 s" in text(r.content)
        assert f'href="{reverse("encryption:key", args=[key.pk])}"' in html
        assert f'href="{audit_link(event.seq)}">audit event #{event.seq}</a>' in html
        assert f'href="{reverse("encryption:index")}"' in html
    # The audit link opens the page that shows the rotation.
    audit = as_user(owner).get(pages.event_url(event.seq, custody=True).split("#")[0]).content.decode()
    assert f'<tr id="event-{event.seq}">' in audit


def test_polled_by_htmx_the_walk_is_the_card_alone(as_user: Any, owner: Any, rotated: dict[str, Any]) -> None:
    url = reverse("encryption:rewrap_progress", args=[rotated["job"].pk])
    r = as_user(owner).get(url, HTTP_HX_REQUEST="true")
    assert "<html" not in r.content.decode() and r["HX-Refresh"] == "true"
    assert "Re-wrapped 1,234,567 data keys" in text(r.content)


def test_another_tenants_walk_is_not_found_and_members_are_refused(
    as_user: Any, outsider: Any, member: Any, rotated: dict[str, Any]
) -> None:
    url = reverse("encryption:rewrap_progress", args=[rotated["job"].pk])
    assert as_user(outsider).get(url).status_code == 404
    assert as_user(member).get(url).status_code == 403


def test_time_spent_paused_is_not_counted(
    tenant: Tenant, rotated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rotated["job"]
    paused = services.record(
        tenant, EventType.REWRAP_PAUSED, payload=payloads.rewrap_control(job_id=job.pk, rewrapped=5, total=9)
    )
    assert paused is not None
    resumed_at = paused.created_at + timedelta(seconds=30)
    monkeypatch.setattr("django.utils.timezone.now", lambda: resumed_at)
    payload = payloads.rewrap_control(job_id=job.pk, rewrapped=5, total=9)
    services.record(tenant, EventType.REWRAP_RESUMED, payload=payload)
    # Another walk's pause is not this one's.
    services.record(
        tenant,
        EventType.REWRAP_PAUSED,
        payload=payloads.rewrap_control(job_id=job.pk + 1, rewrapped=1, total=2),
    )
    start = paused.created_at - timedelta(seconds=20)
    RewrapJob.objects.filter(pk=job.pk).update(
        created_at=start, finished_at=resumed_at + timedelta(seconds=12)
    )
    job.refresh_from_db()
    headline = summarize(job).headline
    assert "in 32 s, not counting 30 s paused (38,580 per second)" in headline


def test_a_failed_walk_says_what_failed_and_what_to_do(
    as_user: Any, owner: Any, rotated: dict[str, Any]
) -> None:
    job = rotated["job"]
    versions = {"3": {"version": 3, "kek": 1, "total": 10, "done": 4, "error": "the key refuses Kodori"}}
    RewrapJob.objects.filter(pk=job.pk).update(
        status=RewrapStatus.FAILED,
        done=4,
        total=10,
        unreadable=2,
        versions=versions,
        last_error="6 data keys under key version 3: the key refuses Kodori",
    )
    page = text(as_user(owner).get(reverse("encryption:rewrap_progress", args=[job.pk])).content)
    assert "Failed after re-wrapping 4 of 10 data keys from key version 3 to 4 in 1 min 02 s" in page
    assert "What failed: 6 data keys under key version 3: the key refuses Kodori" in page
    assert "What to do: A key named above refused Kodori: restore Kodori's access" in page
    assert "2 data keys did not authenticate" in page
    assert not re.search(r"Re-wrapped [\d,]+ data keys", page)  # never called a success


def test_a_cancelled_walk_says_what_stays_where(rotated: dict[str, Any]) -> None:
    job = rotated["job"]
    RewrapJob.objects.filter(pk=job.pk).update(status=RewrapStatus.CANCELLED, done=100, total=300)
    job.refresh_from_db()
    summary = summarize(job)
    assert summary.headline.startswith("Cancelled after re-wrapping 100 of 300 data keys from key version 3")
    assert "the others still open under their own key version" in summary.advice


def test_a_live_walk_has_no_summary_yet(rotated: dict[str, Any]) -> None:
    job = rotated["job"]
    RewrapJob.objects.filter(pk=job.pk).update(status=RewrapStatus.RUNNING, finished_at=None, done=5)
    job.refresh_from_db()
    assert summarize(job).headline == ""


def test_a_walk_with_nothing_to_move_says_so(rotated: dict[str, Any]) -> None:
    job = rotated["job"]
    RewrapJob.objects.filter(pk=job.pk).update(total=0, done=0, versions={})
    job.refresh_from_db()
    assert summarize(job).headline.startswith("No data key needed moving to key version 4; finished ")


def test_the_rotation_found_is_the_one_before_the_walk(
    tenant: Tenant, rotated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    after_the_walk_started = rotated["started"] + timedelta(seconds=5)
    monkeypatch.setattr("django.utils.timezone.now", lambda: after_the_walk_started)
    later = services.record(tenant, EventType.TENANT_KMS_ROTATED, payload=rotated["event"].payload)
    assert later is not None
    found = summarize(rotated["job"]).rotation
    assert found is not None and found.seq == rotated["event"].seq
    assert AuditEvent.objects.for_tenant(tenant).filter(type=EventType.TENANT_KMS_ROTATED).count() == 2


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.42, "0.4 s"), (9.94, "9.9 s"), (42.4, "42 s"), (62, "1 min 02 s"), (3599.4, "59 min 59 s"),
     (7500, "2 h 05 min")],
)  # fmt: skip
def test_durations_read_like_a_person_writes_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
