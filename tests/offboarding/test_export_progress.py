"""An export download's progress and audit: one ``tenant.exported`` per download; ready → streaming →
complete with the totals; a download abandoned half-way is ``interrupted`` with its reason and completes
when downloaded again; a download whose process died shows as interrupted, not forever downloading; only
the latest download of a part writes its state; the page and its htmx partial show it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from offboarding import exports
from offboarding.models import STALLED_AFTER, ExportPart, PartStatus
from tenants.models import Tenant
from tests.blobs.support import bearer, make_token
from tests.conftest import client_for
from tests.offboarding import export_support
from tests.offboarding.export_support import (
    MIB,
    check_files,
    exported_events,
    fetch,
    fresh_part,
    make_export,
    part_url,
    read_archive,
    upload,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = export_support.private_blob_root


def abandon(response: Any) -> None:
    """What a WSGI server does when the client goes away mid-body: close the response, which closes its
    iterator, then fires request_finished, which closes the database connection as at the end of any request
    (so tests that call this use committed data: ``transaction=True``)."""
    response.close()


# --- progress and audit ----------------------------------------------------------------------------------


def test_a_download_is_audited_once_and_its_progress_goes_ready_streaming_complete(
    tenant: Tenant, owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "PROGRESS_EVERY_BYTES", 1)  # write progress at every piece
    monkeypatch.setattr(exports, "PROGRESS_EVERY_SECONDS", 0)
    sent = [upload(owner, tenant, f"f{n}.bin", 3 * MIB) for n in range(3)]
    client = client_for(owner)
    export_row = make_export(client, "zip")
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.bytes, part.files) == (PartStatus.READY, 0, 9 * MIB, 3)
    detail = client.get(reverse("offboarding:export_detail", args=[export_row.pk]))
    assert (
        "not downloaded yet" in detail.content.decode()
        and 'hx-trigger="every 2s"' not in detail.content.decode()
    )

    response: Any = client.get(part_url(export_row, 1))
    assert len(exported_events(tenant)) == 1  # recorded before the first byte
    body = iter(response.streaming_content)
    next(body)
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.finished_at, part.error) == (PartStatus.STREAMING, 1, None, "")
    assert part.started_at is not None
    while fresh_part(export_row).files_sent < 1:
        next(body)
    part = fresh_part(export_row)
    assert part.status == PartStatus.STREAMING and 3 * MIB < part.bytes_sent < 9 * MIB
    # The page shows the part downloading and polls; the htmx partial is the table alone.
    page = client.get(reverse("offboarding:export_detail", args=[export_row.pk])).content.decode()
    assert "1 of 3 files sent" in page and 'hx-trigger="every 2s"' in page
    partial = client.get(reverse("offboarding:export_detail", args=[export_row.pk]), HTTP_HX_REQUEST="true")
    fragment = partial.content.decode()
    assert fragment.lstrip().startswith('<div id="export-parts"') and "<html" not in fragment
    assert "1 of 3 files sent" in fragment and f"{part.progress_percent} %" in fragment
    for _ in body:
        pass

    part = fresh_part(export_row)
    assert (part.status, part.files_sent, part.bytes_sent) == (PartStatus.COMPLETE, 3, 9 * MIB)
    assert part.finished_at is not None and part.error == ""
    (event,) = exported_events(tenant)
    assert event.payload == {
        "exportId": str(export_row.pk),
        "format": "zip",
        "part": 1,
        "parts": 1,
        "files": 3,
        "bytes": sum(s.size for s in sent),
    }
    assert event.actor_email == owner.email
    done = client.get(reverse("offboarding:export_detail", args=[export_row.pk]), HTTP_HX_REQUEST="true")
    assert "downloaded " in done.content.decode() and "hx-trigger" not in done.content.decode()
    status = client.get(reverse("offboarding:export")).content.decode()
    assert reverse("offboarding:export_detail", args=[export_row.pk]) in status


@pytest.mark.django_db(transaction=True)
def test_an_abandoned_download_is_interrupted_and_completes_when_downloaded_again(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, f"f{n}.bin", 2 * MIB) for n in range(3)]
    client = client_for(owner)
    export_row = make_export(client, "tar")
    response: Any = client.get(part_url(export_row, 1))
    assert next(iter(response.streaming_content))
    abandon(response)
    part = fresh_part(export_row)
    assert part.status == PartStatus.INTERRUPTED and part.finished_at is not None
    assert "the connection closed" in part.error and part.files_sent < 3
    page = client.get(reverse("offboarding:export_detail", args=[export_row.pk])).content.decode()
    assert f"interrupted after {part.files_sent} of 3 files" in page and "the connection closed" in page
    api = Client().get(
        reverse("offboarding:api_export", args=[export_row.pk]), **bearer(make_token(owner, tenant))
    )
    assert (
        api.json()["parts"][0]["status"] == "interrupted"
        and "connection closed" in api.json()["parts"][0]["error"]
    )

    fetch(client, part_url(export_row, 1), tmp_path / "part1.tar")
    check_files(read_archive(tmp_path / "part1.tar", "tar"), sent)
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.error, part.files_sent) == (PartStatus.COMPLETE, 2, "", 3)
    assert [e.payload["part"] for e in exported_events(tenant)] == [1, 1]  # one event per download
    page = client.get(reverse("offboarding:export_detail", args=[export_row.pk])).content.decode()
    assert "(2 times)" in page and "interrupted" not in page


def test_a_download_whose_process_died_shows_as_interrupted_not_forever_downloading(
    tenant: Tenant, owner: Any
) -> None:
    """A worker killed mid-download leaves the row "streaming": after STALLED_AFTER without progress the page
    and the API say interrupted, and the page stops polling."""
    upload(owner, tenant, "f.bin", 2 * MIB)
    client = client_for(owner)
    export_row = make_export(client, "zip")
    response: Any = client.get(part_url(export_row, 1))
    assert next(iter(response.streaming_content))  # streaming now; the "process" dies without a word
    detail = reverse("offboarding:export_detail", args=[export_row.pk])
    assert "hx-trigger" in client.get(detail).content.decode()  # live: the page polls
    ExportPart.objects.filter(pk=fresh_part(export_row).pk).update(
        progress_at=timezone.now() - STALLED_AFTER - timedelta(seconds=1)
    )
    page = client.get(detail).content.decode()
    assert "interrupted after" in page and "stopped making progress" in page and "hx-trigger" not in page
    api = Client().get(
        reverse("offboarding:api_export", args=[export_row.pk]), **bearer(make_token(owner, tenant))
    )
    assert api.json()["parts"][0]["status"] == "interrupted"
    assert fresh_part(export_row).status == PartStatus.STREAMING  # the row is not rewritten by reading it
    abandon(response)  # close the open stream (and its database cursor) before the test ends


@pytest.mark.django_db(transaction=True)
def test_only_the_latest_download_of_a_part_writes_its_state(
    tenant: Tenant, owner: Any, tmp_path: Path
) -> None:
    sent = [upload(owner, tenant, f"f{n}.bin", 2 * MIB) for n in range(3)]
    client = client_for(owner)
    export_row = make_export(client, "zip")
    stalled: Any = client.get(part_url(export_row, 1))
    assert next(iter(stalled.streaming_content))
    # The owner gives up waiting and downloads the part again; the stalled connection fails only later.
    fetch(client, part_url(export_row, 1), tmp_path / "again.zip")
    check_files(read_archive(tmp_path / "again.zip", "zip"), sent)
    abandon(stalled)
    part = fresh_part(export_row)
    assert (part.status, part.downloads, part.files_sent, part.error) == (PartStatus.COMPLETE, 2, 3, "")

    # An older download that finishes while a newer one streams does not mark the part complete either.
    older: Any = client.get(part_url(export_row, 1))
    older_body = iter(older.streaming_content)
    next(older_body)
    newer: Any = client.get(part_url(export_row, 1))
    assert next(iter(newer.streaming_content))
    for _ in older_body:
        pass
    part = fresh_part(export_row)
    assert (part.status, part.downloads) == (PartStatus.STREAMING, 4)
    abandon(newer)
    part = fresh_part(export_row)
    assert part.status == PartStatus.INTERRUPTED and "connection closed" in part.error
    assert len(exported_events(tenant)) == 4
