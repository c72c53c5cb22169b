"""The policies and commands the key registration page (/encryption/register/<cloud>) gives owners to copy.

Each snippet is built from what Kodori knows (its own principal, the tenant's id and ExternalId) and what the
owner submitted in the form when the page comes back refused. A value Kodori does not know stays a visible
``<PLACEHOLDER>``, named as in the guides (docs/byok-aws.md, docs/byok-azure.md, docs/byok-gcp.md), so a
pasted snippet fails loudly instead of granting the wrong thing. JSON is built with :func:`json.dumps`, so it
always parses.

Submitted values reach a snippet only once the strict identifier parsers accept them (``identifiers``): a
snippet never echoes arbitrary text into a shell command, and a half-typed or refused value leaves the
placeholder in place. Values in shell commands are double-quoted, so a placeholder left unfilled reaches the
CLI as text it refuses, never as a ``<``/``>`` redirection.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.safestring import SafeString, mark_safe

from tenants.models import Tenant

from . import services
from .identifiers import (
    AZURE_LOGIN_HOSTS,
    InvalidKeyIdentifier,
    parse_aws_key_arn,
    parse_azure_directory_id,
    parse_azure_key_url,
    parse_gcp_crypto_key,
)
from .providers.base import KeyContext
from .providers.gcp import tenant_service_account

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
# The encryption-context entry naming the tenant, exactly as Kodori sends it (KeyContext.as_dict).
TENANT_CONTEXT_KEY = "kodori:tenant"
AZURE_RBAC_ROLE = "Key Vault Crypto Service Encryption User"
AZURE_HSM_ROLE = "Managed HSM Crypto Service Encryption User"
GCP_ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
GCP_VIEWER = "roles/cloudkms.viewer"


@dataclass(frozen=True)
class Snippet:
    """One block to copy: ``slug`` names it in the page, ``language`` is json, sh or url."""

    slug: str
    title: str
    language: str
    text: str
    note: str = ""
    placeholders: list[str] = field(init=False)

    def __post_init__(self) -> None:
        found = list(dict.fromkeys(_PLACEHOLDER.findall(self.text)))
        object.__setattr__(self, "placeholders", found)

    @property
    def html(self) -> SafeString:
        """The text escaped for an element's content: ``&``, ``<`` and ``>`` only.

        Quotes mean nothing outside an attribute, so they stay as typed and the page source reads like the
        snippet (``"sts:ExternalId"``, not ``&quot;sts:ExternalId&quot;``).
        """
        escaped = self.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return mark_safe(escaped)  # noqa: S308 - every character HTML gives meaning to in text is escaped


@dataclass(frozen=True)
class Fact:
    """A value shown beside the snippets; ``unset`` says why it is missing when ``value`` is empty."""

    label: str
    value: str
    unset: str = "not configured in this deployment: ask Kodori support"


def _submitted(form: Any, name: str) -> str:
    """What the owner typed into ``name`` ("" when the form is unbound or has no such field)."""
    if not form.is_bound or name not in form.fields:
        return ""
    return str(form[name].value() or "").strip()


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


# --- AWS ----------------------------------------------------------------------------------------------------


def aws_external_id(tenant: Tenant) -> str:
    """The tenant's ExternalId, generated only once support has switched cloud KMS on ("" until then)."""
    return services.external_id_for(tenant) if tenant.cloud_kms_enabled else ""


def aws_policy_resource(submitted_key: str) -> str:
    """The key ARN the policy names; from an alias ARN only the account and region are known.

    IAM matches the key an alias points at, never the alias, so an alias ARN cannot be the ``Resource``.
    """
    try:
        key = parse_aws_key_arn(submitted_key)
    except InvalidKeyIdentifier:
        return "<YOUR_KEY_ARN>"
    if key.resource_type == "key":
        return key.arn
    return f"arn:{key.partition}:kms:{key.region}:{key.account}:key/<YOUR_KEY_ID>"


def aws_trust_policy(tenant: Tenant) -> Snippet:
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KodoriAssumesThisRoleForOneTenant",
                "Effect": "Allow",
                "Principal": {"AWS": settings.KODORI_AWS_PRINCIPAL_ARN or "<KODORI_PRINCIPAL_ARN>"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"sts:ExternalId": aws_external_id(tenant) or "<YOUR_EXTERNAL_ID>"}
                },
            }
        ],
    }
    return Snippet("aws-trust-policy", "Trust policy of the role", "json", _json(document))


def aws_permission_policy(tenant: Tenant, submitted_key: str = "") -> Snippet:
    resource = aws_policy_resource(submitted_key)
    # KeyError here means KeyContext renamed its tenant entry: the condition would then deny every call.
    tenant_context = KeyContext(tenant_id=tenant.pk, key_version=0).as_dict()[TENANT_CONTEXT_KEY]
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KodoriWrapsThisTenantsKeys",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt"],
                "Resource": resource,
                "Condition": {
                    "StringEquals": {f"kms:EncryptionContext:{TENANT_CONTEXT_KEY}": tenant_context}
                },
            },
            {
                # DescribeKey carries no encryption context, so a context condition would deny it.
                "Sid": "KodoriReadsThisKeysMetadata",
                "Effect": "Allow",
                "Action": "kms:DescribeKey",
                "Resource": resource,
            },
        ],
    }
    note = (
        "An alias is not a Resource IAM matches: give the id of the key the alias points at."
        if "<YOUR_KEY_ID>" in resource
        else ""
    )
    return Snippet("aws-permission-policy", "Permission policy of the role", "json", _json(document), note)


# --- Azure --------------------------------------------------------------------------------------------------


def azure_client_id() -> str:
    return str(settings.KODORI_AZURE_CLIENT_ID) or "<KODORI_APP_ID>"


def azure_consent_url(submitted_directory: str = "", submitted_key: str = "") -> Snippet:
    try:
        directory = parse_azure_directory_id(submitted_directory)
    except InvalidKeyIdentifier:
        directory = "<YOUR_DIRECTORY_ID>"
    try:
        login_host = AZURE_LOGIN_HOSTS[parse_azure_key_url(submitted_key).cloud]
    except InvalidKeyIdentifier:
        login_host = AZURE_LOGIN_HOSTS["public"]
    url = f"https://{login_host}/{directory}/adminconsent?client_id={azure_client_id()}"
    return Snippet(
        "azure-consent",
        "Admin consent for Kodori's application in your directory",
        "url",
        url,
        "Open it signed in as a Cloud Application Administrator or Application Administrator.",
    )


def azure_role_assignment(submitted_key: str = "") -> Snippet:
    try:
        key = parse_azure_key_url(submitted_key)
    except InvalidKeyIdentifier:
        key = None
    if key is not None and key.managed_hsm:
        text = (
            "az keyvault role assignment create \\\n"
            f'  --hsm-name "{key.host.partition(".")[0]}" \\\n'
            f'  --role "{AZURE_HSM_ROLE}" \\\n'
            f'  --assignee "{azure_client_id()}" \\\n'
            f'  --scope "/keys/{key.name}"'
        )
        return Snippet("azure-role", "Grant Kodori's application the key (Managed HSM)", "sh", text)
    vault, name = (key.host.partition(".")[0], key.name) if key else ("<YOUR_VAULT>", "<YOUR_KEY_NAME>")
    scope = (
        "/subscriptions/<YOUR_SUBSCRIPTION_ID>/resourceGroups/<YOUR_RESOURCE_GROUP>"
        f"/providers/Microsoft.KeyVault/vaults/{vault}/keys/{name}"
    )
    text = (
        "az role assignment create \\\n"
        f'  --role "{AZURE_RBAC_ROLE}" \\\n'
        f'  --assignee "{azure_client_id()}" \\\n'
        f'  --scope "{scope}"'
    )
    return Snippet("azure-role", "Grant Kodori's application the key", "sh", text)


# --- GCP ----------------------------------------------------------------------------------------------------


def gcp_member(tenant: Tenant) -> str:
    """The IAM member Kodori's calls for this tenant act as ("" when this deployment does not say).

    The service account Kodori impersonates for the tenant when there is one: granting the federated
    principal behind it would not let those calls through.
    """
    service_account = tenant_service_account(tenant.pk)
    if service_account:
        return f"serviceAccount:{service_account}"
    return str(settings.KODORI_GCP_PRINCIPAL)


def gcp_crypto_key(submitted_key: str) -> str:
    """The CryptoKey to bind on: IAM policies live on the key, so a submitted version path is cut to it."""
    try:
        key = parse_gcp_crypto_key(submitted_key)
    except InvalidKeyIdentifier:
        return "projects/<YOUR_PROJECT_ID>/locations/<LOCATION>/keyRings/<KEY_RING>/cryptoKeys/<KEY_NAME>"
    return key.name.split("/cryptoKeyVersions/")[0]


def gcp_bindings(tenant: Tenant, submitted_key: str = "") -> Snippet:
    key, member = gcp_crypto_key(submitted_key), gcp_member(tenant) or "<KODORI_MEMBER>"

    def binding(role: str) -> str:
        return (
            f'gcloud kms keys add-iam-policy-binding "{key}" \\\n  --member="{member}" \\\n  --role="{role}"'
        )

    text = (
        "# Kodori encrypts and decrypts with this key, and nothing else.\n"
        f"{binding(GCP_ENCRYPTER_DECRYPTER)}\n"
        "\n"
        "# Kodori's verification probe reads the key's metadata (GetCryptoKey, GetCryptoKeyVersion)\n"
        "# to check that the version it encrypts with is enabled, and to say which one is not.\n"
        "# This role reads metadata only, on this key only: it cannot encrypt, decrypt or change\n"
        "# anything.\n"
        f"{binding(GCP_VIEWER)}"
    )
    return Snippet("gcp-bindings", "IAM bindings on the key", "sh", text)


# --- The page -----------------------------------------------------------------------------------------------


def register_context(cloud: str, tenant: Tenant, form: Any) -> dict[str, Any]:
    """``facts`` and ``snippets`` for the registration page of ``cloud``."""
    key = _submitted(form, "key_id")
    facts: list[Fact]
    snippets: list[Snippet]
    if cloud == "aws":
        facts = [
            Fact("Kodori's principal", settings.KODORI_AWS_PRINCIPAL_ARN),
            Fact("Your ExternalId", aws_external_id(tenant), "shown once Cloud KMS is switched on"),
            Fact("Your Kodori tenant id", str(tenant.pk)),
        ]
        snippets = [aws_trust_policy(tenant), aws_permission_policy(tenant, key)]
    elif cloud == "azure":
        facts = [Fact("Kodori's application (client) id", settings.KODORI_AZURE_CLIENT_ID)]
        snippets = [azure_consent_url(_submitted(form, "directory_id"), key), azure_role_assignment(key)]
    elif cloud == "gcp":
        facts = [Fact("Kodori's member", gcp_member(tenant))]
        snippets = [gcp_bindings(tenant, key)]
    else:
        raise ValueError(f"unknown cloud {cloud!r}")
    return {"facts": facts, "snippets": snippets}
