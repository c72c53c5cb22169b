"""The export API and who may use it: create, status, part download with its headers, errors as JSON;
only the tenant's owners reach its exports, by the API or the pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from offboarding.models import Export
from tenants.models import Tenant
from tests.blobs.support import bearer, make_token
from tests.conftest import client_for
from tests.offboarding import export_support
from tests.offboarding.export_support import (
    _unchanged,
    check_files,
    make_export,
    part_url,
    read_archive,
    upload,
)

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = export_support.private_blob_root


# --- the API and who may use it ----------------------------------------------------------------------------


def test_the_api_makes_reports_and_streams_an_export(tenant: Tenant, owner: Any, tmp_path: Path) -> None:
    sent = [upload(owner, tenant, "a.txt", 1234), upload(owner, tenant, "empty.txt", 0)]
    api, auth = Client(), bearer(make_token(owner, tenant))
    created = api.post(reverse("offboarding:api_exports") + "?format=tar", **auth)
    assert created.status_code == 201
    body = created.json()
    export_row = Export.objects.get(pk=body["id"])
    part_path = reverse("offboarding:api_export_part", args=[body["id"], 1])
    assert body["url"] == reverse("offboarding:api_export", args=[body["id"]])
    assert (body["format"], body["files"], body["bytes"], body["complete"]) == ("tar", 2, 1234, False)
    assert body["parts"] == [
        {
            "number": 1,
            "files": 2,
            "bytes": 1234,
            "status": "ready",
            "files_sent": 0,
            "bytes_sent": 0,
            "downloads": 0,
            "error": None,
            "url": part_path,
        }
    ]
    assert api.get(body["url"], **auth).json() == body

    response: Any = api.get(part_path, **auth)
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    stamp = export_row.snapshot_at.strftime("%Y%m%d-%H%M%S")
    assert response["Content-Disposition"] == f'attachment; filename="kodori-export-acme-{stamp}-part1.tar"'
    assert (response["X-Export-Files"], response["X-Export-Bytes"]) == ("2", "1234")
    (tmp_path / "part1.tar").write_bytes(b"".join(response.streaming_content))
    check_files(read_archive(tmp_path / "part1.tar", "tar"), sent)

    after = api.get(body["url"], **auth).json()
    assert after["complete"] is True
    assert {k: after["parts"][0][k] for k in ("status", "files_sent", "bytes_sent", "downloads")} == {
        "status": "complete",
        "files_sent": 2,
        "bytes_sent": 1234,
        "downloads": 1,
    }
    listed = api.get(reverse("offboarding:api_exports"), **auth).json()["exports"]
    assert [e["id"] for e in listed] == [body["id"]]

    rar = api.post(reverse("offboarding:api_exports") + "?format=rar", **auth)
    assert rar.status_code == 400 and rar["Content-Type"] == "application/json"
    assert rar.json()["error"] == {"code": "bad_request", "message": "format must be zip or tar."}
    zipped = api.post(reverse("offboarding:api_exports"), **auth)  # zip unless told otherwise
    assert zipped.status_code == 201 and zipped.json()["format"] == "zip"
    assert Export.objects.filter(tenant=tenant).count() == 2


def test_only_the_tenants_owners_reach_its_exports(
    tenant: Tenant, owner: Any, member: Any, outsider: Any, other_tenant: Tenant
) -> None:
    upload(owner, tenant, "a.txt", 10)
    export_row = make_export(client_for(owner))
    api = Client()
    status_url = reverse("offboarding:api_export", args=[export_row.pk])
    part_api = reverse("offboarding:api_export_part", args=[export_row.pk, 1])
    for url, method in [(reverse("offboarding:api_exports"), "post"), (status_url, "get"), (part_api, "get")]:
        answer = getattr(api, method)(url, **bearer(make_token(member, tenant)))
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", url
        assert getattr(api, method)(url).status_code == 401
    outsider_auth = bearer(make_token(outsider, other_tenant))
    for url in [status_url, part_api, reverse("offboarding:api_export", args=["not-a-uuid"])]:
        answer = api.get(url, **outsider_auth)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", url
    owner_auth = bearer(make_token(owner, tenant))
    missing_part = api.get(reverse("offboarding:api_export_part", args=[export_row.pk, 2]), **owner_auth)
    assert missing_part.status_code == 404

    pages = [
        reverse("offboarding:export"),
        reverse("offboarding:export_detail", args=[export_row.pk]),
        part_url(export_row, 1),
    ]
    for url in pages:
        assert client_for(member).get(url).status_code == 403, url
    for url in pages[1:]:
        assert client_for(outsider).get(url).status_code == 404, url
    assert client_for(owner).get(part_url(export_row, 2)).status_code == 404
    _unchanged(export_row, tenant)
