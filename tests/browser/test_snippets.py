"""In Chromium: an owner copies each policy and command on /encryption/register/<cloud> with its Copy
button, and what lands on the clipboard works as pasted (the AWS policies parse as JSON and carry the tenant's
values).

Screenshots at desktop width and at 390 px go where the other browser tests put theirs
(``KODORI_SCREENSHOT_DIR``, else the test's temporary directory)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from encryption import services
from tenants.models import Tenant
from tests.browser.test_encryption import shot
from tests.browser.test_shell import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KODORI_ARN = "arn:aws:iam::999988887777:role/kodori-web"
KODORI_APP = "8c2b7e4a-1f0d-4c1e-9a57-3f6d2b9e0c11"
GCP_MEMBER = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/subject/s"
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
AZURE_KEY = "https://contoso-keys.vault.azure.net/keys/tenant-kek/0123456789abcdef0123456789abcdef"
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
GCP_KEY = "projects/acme-prod/locations/europe-west1/keyRings/kodori/cryptoKeys/tenant-kek"


@pytest.fixture
def deployment() -> Iterator[None]:
    """Kodori's own identities in each cloud, as a configured deployment shows them."""
    with override_settings(
        KODORI_AWS_PRINCIPAL_ARN=KODORI_ARN,
        KODORI_AZURE_CLIENT_ID=KODORI_APP,
        KODORI_GCP_PRINCIPAL=GCP_MEMBER,
        KODORI_GCP_SERVICE_ACCOUNT="",
        KODORI_GCP_TENANT_SERVICE_ACCOUNT="",
    ):
        yield


def copy_each(page: Any) -> dict[str, str]:
    """Click every snippet's Copy button; what the clipboard then holds, by the snippet's element id."""
    copied = {}
    for button in page.locator("button[data-copy-snippet]").all():
        assert button.is_visible()  # copy.js shows the buttons it can serve
        button.click()
        status = button.locator("xpath=following-sibling::*[@role='status']")
        status.get_by_text("Copied").wait_for()
        target = button.get_attribute("data-copy-snippet")
        copied[target] = page.evaluate("navigator.clipboard.readText()")
        assert copied[target] == page.locator(f"#{target}").text_content()  # exactly what the page shows
    assert copied
    return copied


# Elements that stick out past the viewport's right edge, innermost first; what a scroll box clips is fine.
STICKING_OUT = """() => {
  if (document.documentElement.scrollWidth <= window.innerWidth) return [];
  const scrolls = (el) => ["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(el).overflowX);
  const insideScroller = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (scrolls(a)) return true;
    }
    return false;
  };
  const sticksOut = (el) => {
    const box = el.getBoundingClientRect();
    return box.left + (scrolls(el) ? box.width : el.scrollWidth) > window.innerWidth + 1;
  };
  return [...document.body.querySelectorAll("*")]
    .filter((el) => !insideScroller(el) && sticksOut(el))
    .reverse()
    .map((el) => `${el.tagName.toLowerCase()}.${el.className}: ${el.textContent.trim().slice(0, 60)}`);
}"""


def wider_than_the_viewport(page: Any) -> list[str]:
    """[] when the page does not scroll sideways: long snippets scroll inside their own box."""
    return list(page.evaluate(STICKING_OUT))


def test_an_owner_copies_working_snippets_for_each_cloud(
    live_server: Any, page: Any, owner: Any, tenant: Tenant, deployment: None, tmp_path: Path
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    external_id = services.external_id_for(tenant)
    base = live_server.url
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    sign_in(page, base, "owner@acme.test")

    # AWS: Kodori's values on the first visit; the key once typed (a region contradicting the ARN is refused,
    # so the page comes back with the owner's values instead of registering).
    page.goto(f"{base}/encryption/register/aws")
    shot(page, "snippets-aws-desktop", tmp_path)
    copied = copy_each(page)
    trust = json.loads(copied["snippet-aws-trust-policy"])["Statement"][0]
    assert trust["Principal"] == {"AWS": KODORI_ARN}
    assert trust["Condition"]["StringEquals"]["sts:ExternalId"] == external_id
    permissions = json.loads(copied["snippet-aws-permission-policy"])["Statement"]
    assert [s["Resource"] for s in permissions] == ["<YOUR_KEY_ARN>", "<YOUR_KEY_ARN>"]
    page.get_by_label("KMS key ARN or alias ARN").fill(KEY_ARN)
    page.get_by_label("Region").fill("us-east-1")
    page.get_by_label("Role ARN Kodori assumes").fill("arn:aws:iam::111122223333:role/kodori-kms")
    page.get_by_role("button", name="Register and verify").click()
    page.get_by_role("alert").filter(has_text="region").wait_for()
    copied = copy_each(page)
    wrap, describe = json.loads(copied["snippet-aws-permission-policy"])["Statement"]
    assert wrap["Resource"] == describe["Resource"] == KEY_ARN
    assert wrap["Condition"]["StringEquals"] == {"kms:EncryptionContext:kodori:tenant": str(tenant.pk)}
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "snippets-aws-390", tmp_path)
    assert wider_than_the_viewport(page) == []
    page.set_viewport_size({"width": 1280, "height": 720})

    # Azure and GCP register at once when every value is valid, so they are shown with cloud KMS switched off:
    # the page then refuses the registration and shows the owner's values in the commands.
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=False)
    page.goto(f"{base}/encryption/register/azure")
    page.get_by_label("Key URL").fill(AZURE_KEY)
    page.get_by_label("Directory (tenant) id").fill(DIRECTORY)
    page.get_by_role("button", name="Register and verify").click()
    page.get_by_role("alert").filter(has_text="Cloud KMS is not switched on").wait_for()
    shot(page, "snippets-azure-desktop", tmp_path)
    copied = copy_each(page)
    assert copied["snippet-azure-consent"] == (
        f"https://login.microsoftonline.com/{DIRECTORY}/adminconsent?client_id={KODORI_APP}"
    )
    assert f'--assignee "{KODORI_APP}"' in copied["snippet-azure-role"]
    assert "/vaults/contoso-keys/keys/tenant-kek" in copied["snippet-azure-role"]
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "snippets-azure-390", tmp_path)
    assert wider_than_the_viewport(page) == []
    page.set_viewport_size({"width": 1280, "height": 720})

    page.goto(f"{base}/encryption/register/gcp")
    page.get_by_label("CryptoKey resource name").fill(GCP_KEY)
    page.get_by_role("button", name="Register and verify").click()
    page.get_by_role("alert").filter(has_text="Cloud KMS is not switched on").wait_for()
    shot(page, "snippets-gcp-desktop", tmp_path)
    text = copy_each(page)["snippet-gcp-bindings"]
    assert text.count(f'gcloud kms keys add-iam-policy-binding "{GCP_KEY}"') == 2
    assert text.count(f'--member="{GCP_MEMBER}"') == 2
    assert '--role="roles/cloudkms.cryptoKeyEncrypterDecrypter"' in text and "roles/cloudkms.viewer" in text
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "snippets-gcp-390", tmp_path)
    assert wider_than_the_viewport(page) == []


def test_without_javascript_the_snippets_are_plain_text_and_no_copy_button_shows(
    live_server: Any, browser: Any, owner: Any, deployment: None
) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, live_server.url, "owner@acme.test")
        page.goto(f"{live_server.url}/encryption/register/aws")
        assert page.locator("#snippet-aws-permission-policy").text_content().count("<YOUR_KEY_ARN>") == 2
        assert page.locator("button[data-copy-snippet]").count() == 2
        assert not any(b.is_visible() for b in page.locator("button[data-copy-snippet]").all())
    finally:
        context.close()
