"""The key pages: one key's page (full identifier for owners and admins only), the current-key card of a
sealed tenant, the coverage table under disabled and refusing keys, the disable confirmation, and the
lifecycle buttons (exactly what the lifecycle allows, each behind CSRF)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from emulators.azure_keyvault import AzureKeyVaultEmulator
from emulators.azure_keyvault_store import DEFAULT_GRANT
from encryption import health, lifecycle, services
from encryption.models import KeyStatus, TenantKey, WrapMethod
from encryption.sealing import Trigger
from tenants.models import Tenant
from tests.blobs.support import make_blob
from tests.encryption.support import active_azure_key, enable_cloud_kms, fresh

pytestmark = pytest.mark.django_db

AWS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
AWS_ROLE = "arn:aws:iam::111122223333:role/kodori-access"
VERBS = ("enable", "activate", "retry_key", "remove", "disable")
BUTTONS = {
    "make-active": ">Make active</button>",
    "re-enable": ">Re-enable</button>",
    "retry": ">Retry verification</button>",
    "disable": ">Disable</a>",
    "remove": ">Remove</a>",
}


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    return enable_cloud_kms(tenant)


@pytest.fixture
def aws_key(cloud_tenant: Tenant, owner: Any) -> TenantKey:
    """A registered (pending) AWS key: registering a key ARN calls nothing at AWS."""
    return services.register_key(
        cloud_tenant, WrapMethod.CUSTOMER_KMS_AWS, AWS_KEY, {"role_arn": AWS_ROLE}, actor=owner
    )


def row_in(tenant: Tenant, status: KeyStatus, name: str = "k") -> TenantKey:
    url = f"https://contoso-keys.vault.azure.net/keys/{name}/{'cd' * 16}"
    return TenantKey.objects.create(
        tenant=tenant,
        wrap_method=WrapMethod.CUSTOMER_KMS_AZURE,
        key_id=url,
        canonical_id=url,
        config={"directory_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"},
        status=status,
    )


def page(client: Client, name: str, key: TenantKey | None = None) -> str:
    response = client.get(reverse(f"encryption:{name}", args=[key.pk] if key else []))
    assert response.status_code == 200
    return response.content.decode()


# --- One key's page, and who may see it --------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_owners_and_admins_see_the_full_identifier_and_role_with_copy_buttons(
    request: Any, as_user: Any, aws_key: TenantKey, who: str
) -> None:
    html = page(as_user(request.getfixturevalue(who)), "key", aws_key)
    assert f'<code id="key-id-{aws_key.pk}" class="identifier">{AWS_KEY}</code>' in html
    assert f'<code id="role-{aws_key.pk}" class="identifier">{AWS_ROLE}</code>' in html
    assert f'data-copy-snippet="key-id-{aws_key.pk}"' in html
    assert f'data-copy-snippet="role-{aws_key.pk}"' in html
    assert "kodori/copy.js" in html
    assert aws_key.config["external_id"] in html and "eu-west-1" in html


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_get_403_for_every_key_url(
    request: Any, as_user: Any, aws_key: TenantKey, who: str
) -> None:
    client = as_user(request.getfixturevalue(who))
    assert client.get(reverse("encryption:key", args=[aws_key.pk])).status_code == 403
    for verb in VERBS:
        assert client.post(reverse(f"encryption:{verb}", args=[aws_key.pk])).status_code == 403
    assert fresh(aws_key).status == KeyStatus.PENDING


def test_another_tenants_owner_gets_404_for_every_key_url(
    as_user: Any, outsider: Any, aws_key: TenantKey
) -> None:
    client = as_user(outsider)
    response = client.get(reverse("encryption:key", args=[aws_key.pk]))
    assert response.status_code == 404 and AWS_KEY not in response.content.decode()
    for verb in VERBS:
        assert client.post(reverse(f"encryption:{verb}", args=[aws_key.pk])).status_code == 404
    assert TenantKey.objects.filter(pk=aws_key.pk, status=KeyStatus.PENDING).exists()


def test_audit_payloads_name_keys_by_their_suffix_only(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    first = active_azure_key(cloud_tenant, vault, "first", owner)
    second = active_azure_key(cloud_tenant, vault, "second", owner)
    client = as_user(owner)
    client.post(reverse("encryption:disable", args=[second.pk]), {"confirm": cloud_tenant.slug})
    client.post(reverse("encryption:enable", args=[second.pk]))
    client.post(reverse("encryption:disable", args=[first.pk]))
    vault.revoke(kodori_app.client_id)
    client.post(reverse("encryption:retry"))
    payloads = list(
        AuditEvent.objects.filter(tenant=cloud_tenant).order_by("seq").values_list("type", "payload")
    )
    kinds = {kind for kind, _ in payloads}
    assert {
        "tenant-kms.disabled",
        "tenant.sealed",
        "tenant-kms.re-enabled",
        "tenant-kms.unreachable",
    } <= kinds
    dumped = json.dumps(payloads)
    for key in (first, second):
        assert key.key_id not in dumped and key.key_id[-12:] in dumped
        assert key.key_id.split("/keys/")[0] not in dumped  # not even the vault's host


# --- The current-key card and the coverage table -----------------------------------------------------------


def test_a_tenant_whose_active_key_was_disabled_is_told_it_has_no_active_key_and_offered_re_enable(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    key = active_azure_key(cloud_tenant, vault, "only", owner)
    client = as_user(owner)
    client.post(reverse("encryption:disable", args=[key.pk]), {"confirm": cloud_tenant.slug})
    html = page(client, "index")
    card = html[html.index('id="current-key"') : html.index('id="history"')]
    assert "No active key — tenant sealed" in card
    enable = reverse("encryption:enable", args=[key.pk])
    assert key.label in card
    assert re.search(rf'<form [^>]*action="{enable}".*?<button [^>]*>Re-enable[^<]*</button>', card, re.S)
    assert "Retry now" not in card  # nothing to retry: no key is active
    assert "Your own Cloud KMS key" not in card  # no method is claimed for a tenant without a key

    response = client.post(enable, follow=True)
    assert "re-enabled and verified: it is the active key again" in response.content.decode()
    assert fresh(key).status == KeyStatus.ACTIVE
    assert "No active key" not in page(client, "index")


@pytest.mark.parametrize("status", [KeyStatus.PENDING, KeyStatus.FAILED])
def test_a_tenant_whose_first_key_is_not_verified_yet_is_not_told_it_is_sealed(
    cloud_tenant: Tenant, as_user: Any, owner: Any, status: KeyStatus
) -> None:
    """Before its first upload a tenant has no key at all; registering one that is still being verified (or
    failed) takes nothing away: files can be uploaded (under the Kodori-managed key) and the page must not
    claim the tenant is sealed."""
    row_in(cloud_tenant, status)
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed
    html = page(as_user(owner), "index")
    card = html[html.index('id="current-key"') : html.index('id="history"')]
    assert "tenant sealed" not in card and "neither read nor written" not in card
    make_blob(owner, b"uploads work", "works.txt")  # what the card would have denied
    cloud_tenant.refresh_from_db()
    assert not cloud_tenant.is_sealed


def coverage_rows(html: str) -> dict[int, tuple[str, str]]:
    """Key version number -> (status class, status label) from the coverage table."""
    table = html[html.index('id="coverage"') :]
    found = re.findall(r'<td>Version (\d+)</td>\s*<td><span class="status ([\w-]+)">([^<]*)</span>', table)
    return {int(version): (css, label) for version, css, label in found}


def test_the_coverage_table_never_calls_a_version_of_an_unusable_key_plainly_active(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    vault.revoke(kodori_app.client_id)
    for name in ("a", "b", "c"):
        vault.grant(kodori_app.client_id, DEFAULT_GRANT, key=name)
    a = active_azure_key(cloud_tenant, vault, "a", owner)  # version 1
    b = active_azure_key(cloud_tenant, vault, "b", owner)  # version 2
    c = active_azure_key(cloud_tenant, vault, "c", owner)  # version 3
    client = as_user(owner)
    assert coverage_rows(page(client, "index")) == {
        3: ("status-ok", "Active"),
        2: ("status-warn", "Retired"),
        1: ("status-warn", "Retired"),
    }

    services.disable_key(fresh(a), actor=owner)
    vault.revoke(kodori_app.client_id, key="b")
    assert health.probe_key(b.pk, trigger=Trigger.SCHEDULE) is False
    services.disable_key(fresh(c), actor=owner)
    assert coverage_rows(page(client, "index")) == {
        # No data keys under them here, so none is called unreadable; none is plain "Active" either.
        3: ("status-danger", "Active — key disabled"),
        2: ("status-danger", "Retired — key refuses Kodori"),
        1: ("status-danger", "Retired — key disabled"),
    }


# --- Disabling, and the buttons of each state ---------------------------------------------------------------


def test_the_disable_page_says_the_key_can_be_re_enabled(
    cloud_tenant: Tenant, vault: AzureKeyVaultEmulator, kodori_app: Any, owner: Any, as_user: Any
) -> None:
    old = active_azure_key(cloud_tenant, vault, "old", owner)
    active = active_azure_key(cloud_tenant, vault, "new", owner)
    client = as_user(owner)
    for key, back_as in ((active, "the active key again"), (old, "retired again")):
        html = page(client, "disable", key)
        assert "Nothing is deleted, and you can undo this." in html
        assert "Re-enable the key from the key history at any time" in html and back_as in html
        assert "does not touch the key in your KMS" in html
    assert "seals Acme Corp at once" in page(client, "disable", active)

    refused = client.post(reverse("encryption:disable", args=[active.pk]), {"confirm": "not-the-slug"})
    assert refused.status_code == 400 and "Type acme to confirm" in refused.content.decode()
    assert fresh(active).status == KeyStatus.ACTIVE
    done = client.post(reverse("encryption:disable", args=[active.pk]), {"confirm": "acme"}, follow=True)
    assert "You can re-enable it from the key history at any time." in done.content.decode()
    assert fresh(active).status == KeyStatus.DISABLED

    again = client.get(reverse("encryption:disable", args=[active.pk]), follow=True)
    assert "cannot be disabled" in again.content.decode()


@pytest.mark.parametrize("status", list(KeyStatus))
def test_each_page_offers_exactly_the_buttons_the_lifecycle_allows(
    cloud_tenant: Tenant, as_user: Any, owner: Any, status: KeyStatus
) -> None:
    key = row_in(cloud_tenant, status)
    expected = {str(t) for t in lifecycle.actions(status)}
    client = as_user(owner)
    key_page = page(client, "key", key)
    index = page(client, "index")
    row = index[index.index(f'<tr id="key-{key.pk}">') :]
    row = row[: row.index("</tr>")]
    for action, button in BUTTONS.items():
        assert (button in key_page) == (action in expected), (action, status)
        assert (button in row) == (action in expected), (action, status)


@pytest.mark.parametrize(
    "status", [KeyStatus.ACTIVE, KeyStatus.RETIRED, KeyStatus.DISABLED, KeyStatus.PENDING]
)
def test_the_remove_page_refuses_keys_that_did_not_fail(
    cloud_tenant: Tenant, as_user: Any, owner: Any, status: KeyStatus
) -> None:
    key = row_in(cloud_tenant, status)
    response = as_user(owner).post(reverse("encryption:remove", args=[key.pk]), follow=True)
    assert "Only a registration that failed verification can be removed" in response.content.decode()
    assert fresh(key).status == status


# --- CSRF ---------------------------------------------------------------------------------------------------


def csrf_token(client: Client, key: TenantKey) -> str:
    html = page(client, "key", key)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("verb", VERBS)
def test_every_key_action_needs_a_csrf_token(cloud_tenant: Tenant, owner: Any, verb: str) -> None:
    status = {"enable": KeyStatus.DISABLED, "activate": KeyStatus.RETIRED, "disable": KeyStatus.RETIRED}
    key = row_in(cloud_tenant, status.get(verb, KeyStatus.FAILED))
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(reverse(f"encryption:{verb}", args=[key.pk]))
    assert response.status_code == 403
    assert fresh(key).status == status.get(verb, KeyStatus.FAILED)
    assert not AuditEvent.objects.filter(tenant=cloud_tenant).exists()


def test_with_a_csrf_token_retry_and_remove_go_through(cloud_tenant: Tenant, owner: Any) -> None:
    retried, removed = (
        row_in(cloud_tenant, KeyStatus.FAILED, "r1"),
        row_in(cloud_tenant, KeyStatus.FAILED, "r2"),
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    token = csrf_token(client, retried)
    assert (
        client.post(
            reverse("encryption:retry_key", args=[retried.pk]), {"csrfmiddlewaretoken": token}
        ).status_code
        == 302
    )
    assert fresh(retried).status == KeyStatus.PENDING
    assert (
        client.post(
            reverse("encryption:remove", args=[removed.pk]), {"csrfmiddlewaretoken": token}
        ).status_code
        == 302
    )
    assert not TenantKey.objects.filter(pk=removed.pk).exists()
