"""In Chromium, with a real Celery worker and the local cloud emulators: every custody state an owner can
reach on /encryption reads true and has a way out. An owner disables the active AWS key (the tenant is sealed
and the page says "No active key — tenant sealed" with a Re-enable button), re-enables it (active again,
unsealed at once), registers it a second time by its alias (refused: one row per key), reads its full
identifier on the key page, and a failed registration can be retried and removed. Desktop and phone
screenshots of each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from emulators.dev import DevEmulators
from encryption import services
from encryption.models import KeyStatus, TenantKey, WrapMethod
from tenants.models import Tenant
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
# The first element whose box ends right of the viewport (what makes a page scroll sideways), outside boxes
# that scroll on their own unless it is positioned out of them.
_WIDEST = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1
    && (!e.closest('.table-scroll, pre') || getComputedStyle(e).position === 'absolute'))
  .map(e => e.tagName + '.' + e.className + ' ' + (e.textContent || '').trim().slice(0, 40))[0] || ''"""


def shots(page: Any, name: str, tmp_path: Path) -> None:
    """Desktop and phone screenshots; at phone width nothing may make the page scroll sideways."""
    target = Path(os.environ.get("KODORI_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(target / f"{name}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(target / f"{name}-phone.png"), full_page=True)
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, (
        f"{name}: the page scrolls sideways by {wide} px at 390 px wide: {page.evaluate(_WIDEST)}"
    )
    page.set_viewport_size({"width": 1280, "height": 900})


def row_of(page: Any, suffix: str) -> Any:
    """The key history's row of the key ending in ``suffix`` (by its Key cell: other rows may name it too,
    e.g. the rotation that replaced it)."""
    return page.locator("section[aria-labelledby=history] tbody tr").filter(
        has=page.locator("td:first-child", has_text=suffix)
    )


def register_aws(page: Any, base: str, key_arn: str, role_arn: str) -> None:
    page.goto(f"{base}/encryption/register/aws")
    page.get_by_label("KMS key ARN or alias ARN").fill(key_arn)
    page.get_by_label("Role ARN Kodori assumes").fill(role_arn)
    page.get_by_role("button", name="Register and verify").click()


def test_an_owner_disables_re_enables_and_cannot_duplicate_a_key(
    clouds: DevEmulators,
    worker_process: Any,
    live_server: Any,
    page: Any,
    owner: Any,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    assert clouds.aws is not None
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    key_arn = clouds.aws.create_key(alias="alias/acme-custody")
    role_arn = clouds.aws.create_tenant_role("acme-custody", services.external_id_for(tenant), key_arn)
    suffix = key_arn[-12:]
    base = live_server.url
    sign_in(page, base, "owner@acme.test")

    register_aws(page, base, key_arn, role_arn)
    page.wait_for_url(f"{base}/encryption")
    row_of(page, suffix).get_by_text("Active", exact=True).wait_for(timeout=30_000)

    # Disabling the active key seals the tenant; the confirmation says it can be undone.
    row_of(page, suffix).get_by_role("link", name="Disable").click()
    assert "you can undo this" in page.content().lower()
    page.get_by_label("Type the tenant's short name to confirm").fill(tenant.slug)
    page.get_by_role("button", name="Disable the key").click()
    page.wait_for_url(f"{base}/encryption")
    page.get_by_text("No active key — tenant sealed").wait_for()
    assert page.get_by_role("button", name="Retry now").count() == 0  # a probe cannot help here
    shots(page, "custody-1-no-active-key", tmp_path)

    # The way out: re-enable (Kodori probes first), the tenant is unsealed at once.
    page.locator("#current-key ~ ul").get_by_role("button", name="Re-enable").click()
    page.wait_for_url(f"{base}/encryption")
    row_of(page, suffix).get_by_text("Active", exact=True).wait_for()
    assert "re-enabled and verified" in page.content()
    tenant.refresh_from_db()
    assert not tenant.is_sealed
    shots(page, "custody-2-re-enabled", tmp_path)

    # Registering the same key again (here by its alias) never makes a second row.
    register_aws(page, base, key_arn.rsplit(":", 1)[0] + ":alias/acme-custody", role_arn)
    assert "already has this key" in page.content()
    assert TenantKey.objects.filter(tenant=tenant, wrap_method=WrapMethod.CUSTOMER_KMS_AWS).count() == 1
    shots(page, "custody-3-duplicate-refused", tmp_path)

    # The key page shows the full identifier and the role, with copy buttons.
    key = TenantKey.objects.get(tenant=tenant, wrap_method=WrapMethod.CUSTOMER_KMS_AWS)
    page.goto(f"{base}/encryption/keys/{key.pk}")
    assert page.locator(f"#key-id-{key.pk}").inner_text() == key_arn
    assert page.locator(f"#role-{key.pk}").inner_text() == role_arn
    assert page.get_by_role("button", name="Copy key identifier").is_visible()
    shots(page, "custody-4-key-page", tmp_path)

    # A registration whose role does not trust Kodori fails; it can be retried or removed.
    other_key = clouds.aws.create_key(alias="alias/acme-untrusted")
    untrusted = clouds.aws.create_tenant_role("acme-untrusted", "not-the-tenants-external-id", other_key)
    register_aws(page, base, other_key, untrusted)
    page.wait_for_url(f"{base}/encryption")
    row_of(page, other_key[-12:]).get_by_text("Verification failed", exact=True).wait_for(timeout=30_000)
    assert row_of(page, other_key[-12:]).get_by_role("button", name="Retry verification").is_visible()
    shots(page, "custody-5-failed-registration", tmp_path)
    row_of(page, other_key[-12:]).get_by_role("link", name="Remove").click()
    page.get_by_role("button", name="Remove").click()
    page.wait_for_url(f"{base}/encryption")
    assert row_of(page, other_key[-12:]).count() == 0
    assert TenantKey.objects.filter(tenant=tenant, status=KeyStatus.FAILED).count() == 0
