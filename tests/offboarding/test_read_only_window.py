"""The read-only window between scheduling and erasure: every write (uploads, deletes, key changes by the
services and on the encryption pages) is refused with a message that says so and stores nothing, while
downloads and exports go on; after cancelling, every write works again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent, EventType
from blobs.models import Blob
from encryption import keyring, rewrap
from encryption import services as key_services
from encryption.lifecycle import KeyCustodyError
from encryption.models import KeyStatus, RewrapJob, RewrapStatus, TenantKey, WrapMethod
from offboarding import services
from offboarding.models import Export, Via
from tenants.lifecycle import due_text
from tenants.models import Tenant, TenantState
from tests.blobs.support import bearer, make_blob, make_token, pattern, stored_files
from tests.conftest import client_for
from tests.offboarding import deletion_support
from tests.offboarding.deletion_support import Capture, events, fresh, messages_of, schedule

pytestmark = pytest.mark.django_db


# Every test's objects in its own directory (an autouse fixture: bound here, it applies to this module).
_private_blob_root = deletion_support.private_blob_root


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


# --- The read-only window -----------------------------------------------------------------------------------


def _refusal_text(tenant: Tenant) -> str:
    when = due_text(fresh(tenant).deletion_due_at)
    return f"Acme Corp is scheduled for deletion on {when} and is read-only"


def test_uploads_are_refused_on_the_page_and_the_api_storing_nothing(
    owner: Any, member: Any, tenant: Tenant, blob_root: Path, committed: Capture
) -> None:
    make_blob(member, b"before")
    schedule(tenant, owner, committed)
    stored_before, uploaded_before = stored_files(blob_root), len(events(tenant, EventType.BLOB_UPLOADED))
    refusal = _refusal_text(tenant)
    client = client_for(member)

    form = client.get(reverse("blobs:upload")).content.decode()
    assert "Uploads are closed." in form and due_text(fresh(tenant).deletion_due_at) in form

    page = client.post(reverse("blobs:upload"), {"file": SimpleUploadedFile("new.txt", b"new file")})
    assert page.status_code == 409 and refusal in page.content.decode()

    raw = client.post(
        reverse("blobs:upload") + "?name=new.txt", b"new file", content_type="application/octet-stream"
    )
    assert raw.status_code == 409 and raw.json()["error"]["code"] == "tenant_read_only"

    api = Client().post(
        reverse("blobs:api_blobs") + "?name=new.txt",
        b"new file",
        content_type="application/octet-stream",
        **bearer(make_token(member)),
    )
    assert api.status_code == 409 and api["Content-Type"] == "application/json"
    assert api.json()["error"]["code"] == "tenant_read_only"
    assert api.json()["error"]["message"].startswith(refusal)

    assert list(Blob.objects.for_tenant(tenant).values_list("name", flat=True)) == ["hello.txt"]
    assert stored_files(blob_root) == stored_before
    assert len(events(tenant, EventType.BLOB_UPLOADED)) == uploaded_before


def test_deletes_are_refused_and_not_offered_while_downloads_and_exports_go_on(
    owner: Any, member: Any, tenant: Tenant, committed: Capture
) -> None:
    data = pattern(70_000)
    blob = make_blob(member, data, name="keep.bin")
    schedule(tenant, owner, committed)
    refusal = _refusal_text(tenant)
    client = client_for(member)
    token = bearer(make_token(member))

    detail = client.get(reverse("blobs:detail", args=[blob.pk])).content.decode()
    assert reverse("blobs:delete", args=[blob.pk]) not in detail
    page = client.post(reverse("blobs:delete", args=[blob.pk]))
    assert page.status_code == 409 and refusal in page.content.decode()
    api = Client().delete(reverse("blobs:api_blob", args=[blob.pk]), **token)
    assert api.status_code == 409 and api.json()["error"]["code"] == "tenant_read_only"
    assert Blob.objects.filter(pk=blob.pk).exists()
    assert events(tenant, EventType.BLOB_DELETED) == []

    full = client.get(reverse("blobs:download", args=[blob.pk]))
    assert full.status_code == 200 and body(full) == data
    part = client.get(reverse("blobs:download", args=[blob.pk]), HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206 and body(part) == data[100:200]
    api_full = Client().get(reverse("blobs:api_blob", args=[blob.pk]), **token)
    assert api_full.status_code == 200 and body(api_full) == data
    api_part = Client().get(reverse("blobs:api_blob", args=[blob.pk]), HTTP_RANGE="bytes=-10", **token)
    assert api_part.status_code == 206 and body(api_part) == data[-10:]
    head = Client().head(reverse("blobs:api_blob", args=[blob.pk]), **token)
    assert head.status_code == 200 and head["Content-Length"] == str(len(data))
    page_head = client.head(reverse("blobs:download", args=[blob.pk]))
    assert page_head.status_code == 200 and page_head["Content-Length"] == str(len(data))

    export_page = client_for(owner).post(reverse("offboarding:export"), {"format": "zip"})
    assert export_page.status_code == 302
    export_api = Client().post(reverse("offboarding:api_exports"), **bearer(make_token(owner)))
    assert export_api.status_code == 201 and export_api.json()["files"] == 1
    assert Export.objects.for_tenant(tenant).count() == 2


AZURE_URL = "https://contoso-keys.vault.azure.net/keys/{name}/" + "cd" * 16
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _azure_row(tenant: Tenant, status: KeyStatus, name: str) -> TenantKey:
    """A customer key registration already in ``status`` (no KMS is called before a refusal)."""
    url = AZURE_URL.format(name=name)
    return TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_AZURE,
        key_id=url,
        canonical_id=url,
        config={"directory_id": DIRECTORY},
        status=status,
    )


class Keys:
    """A tenant with one key in each state an owner can act on, and a paused re-wrap with work left."""

    def __init__(self, tenant: Tenant, owner: Any) -> None:
        make_blob(owner, b"under the first key")
        self.retired = keyring.active_tkv(tenant).kek
        self.active = TenantKey.objects.create(
            tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING
        )
        key_services.activate_key(self.active, actor=owner)
        self.disabled = _azure_row(tenant, KeyStatus.DISABLED, "disabled")
        self.failed = _azure_row(tenant, KeyStatus.FAILED, "failed")
        self.failed_too = _azure_row(tenant, KeyStatus.FAILED, "failed-too")
        job = rewrap.start_rewrap(tenant, actor=owner)
        assert job is not None
        self.job = rewrap.pause_rewrap(job, actor=owner)

    def action_urls(self) -> list[str]:
        """The buttons of the key history, one per key in a state that has one."""
        return [
            reverse("encryption:disable", args=[self.active.pk]),
            reverse("encryption:activate", args=[self.retired.pk]),
            reverse("encryption:enable", args=[self.disabled.pk]),
            reverse("encryption:retry_key", args=[self.failed.pk]),
            reverse("encryption:remove", args=[self.failed.pk]),
        ]

    def statuses(self) -> dict[str, str]:
        keys = [self.retired, self.active, self.disabled, self.failed, self.failed_too]
        found = dict(TenantKey.objects.filter(pk__in=[k.pk for k in keys]).values_list("pk", "status"))
        return {k.label: found.get(k.pk, "removed") for k in keys} | {
            "job": RewrapJob.objects.get(pk=self.job.pk).status
        }


def _reloaded(key: TenantKey) -> TenantKey:
    return TenantKey.objects.select_related("tenant").get(pk=key.pk)


def test_every_key_change_is_refused_by_the_services(owner: Any, tenant: Tenant, committed: Capture) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    keys = Keys(fresh(tenant), owner)
    schedule(tenant, owner, committed)
    before, seq = keys.statuses(), AuditEvent.objects.filter(tenant=tenant).count()
    refusal = _refusal_text(tenant)
    attempts: list[Callable[[], Any]] = [
        lambda: key_services.register_or_restore(
            fresh(tenant),
            WrapMethod.CUSTOMER_KMS_AZURE,
            AZURE_URL.format(name="new"),
            {"directory_id": DIRECTORY},
            actor=owner,
        ),
        lambda: key_services.disable_key(_reloaded(keys.active), actor=owner),
        lambda: key_services.disable_key(_reloaded(keys.retired), actor=owner),
        lambda: key_services.re_enable_key(_reloaded(keys.disabled), actor=owner),
        lambda: key_services.make_active(_reloaded(keys.retired), actor=owner),
        lambda: key_services.retry_key(_reloaded(keys.failed), actor=owner),
        lambda: key_services.remove_key(_reloaded(keys.failed), actor=owner),
    ]
    for attempt in attempts:
        with pytest.raises(KeyCustodyError) as refused:
            attempt()
        assert str(refused.value).startswith(refusal)
    with pytest.raises(rewrap.RewrapError, match="No re-wrap can start while the tenant is scheduled"):
        rewrap.start_rewrap(fresh(tenant), actor=owner)
    with pytest.raises(rewrap.RewrapError, match="No re-wrap can resume while the tenant is scheduled"):
        rewrap.resume_rewrap(keys.job, actor=owner)
    assert keys.statuses() == before
    assert AuditEvent.objects.filter(tenant=tenant).count() == seq


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_the_encryption_pages_refuse_every_key_change_with_the_message(
    request: pytest.FixtureRequest, owner: Any, tenant: Tenant, committed: Capture, role: str
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    keys = Keys(fresh(tenant), owner)
    schedule(tenant, owner, committed)
    before, seq = keys.statuses(), AuditEvent.objects.filter(tenant=tenant).count()
    refusal = _refusal_text(tenant).replace("'", "&#x27;")
    client = client_for(request.getfixturevalue(role))

    index = client.get(reverse("encryption:index")).content.decode()
    assert "Key changes are closed" in index
    assert not [url for url in keys.action_urls() if url in index]  # no button offers what is refused

    register = client.post(
        reverse("encryption:register", args=["azure"]),
        {"key_id": AZURE_URL.format(name="new"), "directory_id": DIRECTORY},
    )
    assert register.status_code == 400 and refusal in register.content.decode()
    posts = [
        ("encryption:disable", keys.active, {"confirm": tenant.slug}),
        ("encryption:disable", keys.retired, {"confirm": ""}),
        ("encryption:enable", keys.disabled, {}),
        ("encryption:activate", keys.retired, {}),
        ("encryption:retry_key", keys.failed, {}),
        ("encryption:remove", keys.failed, {}),
    ]
    for name, key, data in posts:
        response = client.post(reverse(name, args=[key.pk]), data, follow=True)
        assert response.redirect_chain[-1][0] == reverse("encryption:index"), name
        assert messages_of(response) and messages_of(response)[0].startswith(_refusal_text(tenant)), name
    start = client.post(reverse("encryption:rewrap_start"), follow=True)
    resume = client.post(reverse("encryption:rewrap_resume", args=[keys.job.pk]), follow=True)
    assert messages_of(start) == [
        "No re-wrap can start while the tenant is scheduled for deletion or being erased."
    ]
    assert messages_of(resume) == [
        "No re-wrap can resume while the tenant is scheduled for deletion or being erased."
    ]
    assert keys.statuses() == before
    assert AuditEvent.objects.filter(tenant=tenant).count() == seq


def test_after_cancelling_every_write_works_again(
    owner: Any, member: Any, tenant: Tenant, blob_root: Path, committed: Capture
) -> None:
    keys = Keys(tenant, owner)
    schedule(tenant, owner, committed)
    with committed():
        services.cancel_deletion(tenant, actor=owner, via=Via.OWNER)
    assert fresh(tenant).state == TenantState.ACTIVE

    uploaded = Client().post(
        reverse("blobs:api_blobs") + "?name=after.txt",
        b"written again",
        content_type="text/plain",
        **bearer(make_token(member)),
    )
    assert uploaded.status_code == 201, uploaded.content
    blob_id = uploaded.json()["id"]
    page = client_for(member)
    detail = page.get(reverse("blobs:detail", args=[blob_id])).content.decode()
    assert reverse("blobs:delete", args=[blob_id]) in detail
    with committed():
        deleted = page.post(reverse("blobs:delete", args=[blob_id]))
    assert deleted.status_code == 302 and not Blob.objects.filter(pk=blob_id).exists()

    manager = client_for(owner)
    index = manager.get(reverse("encryption:index")).content.decode()
    assert [url for url in keys.action_urls() if url in index] == keys.action_urls()
    assert manager.post(reverse("encryption:rewrap_resume", args=[keys.job.pk])).status_code == 302
    disabled = manager.post(reverse("encryption:disable", args=[keys.retired.pk]), {"confirm": ""})
    assert disabled.status_code == 302
    assert manager.post(reverse("encryption:retry_key", args=[keys.failed.pk])).status_code == 302
    assert manager.post(reverse("encryption:remove", args=[keys.failed_too.pk])).status_code == 302
    assert keys.statuses() == {
        keys.retired.label: KeyStatus.DISABLED,
        keys.active.label: KeyStatus.ACTIVE,
        keys.disabled.label: KeyStatus.DISABLED,
        keys.failed.label: KeyStatus.PENDING,
        keys.failed_too.label: "removed",
        "job": RewrapStatus.RUNNING,
    }
    assert [e.type for e in AuditEvent.objects.filter(tenant=tenant).order_by("-seq")[:5]] == [
        EventType.TENANT_KMS_REMOVED,
        EventType.TENANT_KMS_DISABLED,
        EventType.REWRAP_RESUMED,
        EventType.BLOB_DELETED,
        EventType.BLOB_UPLOADED,
    ]
