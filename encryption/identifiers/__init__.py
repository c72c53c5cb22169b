"""Strict parsers for the key identifiers a tenant gives Kodori (customer-managed KMS keys).

A tenant types a key identifier; Kodori's servers then connect to the KMS that identifier names. If the
parser were lenient, a tenant could make Kodori connect to a host of their choosing (server-side request
forgery): the cloud metadata endpoint, an internal service, or their own server posing as a KMS. So every
parser here accepts only the exact documented shape, and :func:`endpoint_host_for` derives the one host
Kodori will contact from the parsed parts: a fixed ``kms.<region>.<partition suffix>`` for AWS, the
allow-listed Key Vault / Managed HSM host for Azure, ``cloudkms.googleapis.com`` for GCP. Endpoint overrides
for local emulators are deployment settings, applied by the providers, never something a tenant can set.

Every refusal is an :class:`InvalidKeyIdentifier` whose message says what is wrong and then what is
accepted: customers read these messages on the key registration page and in API responses.

Decisions (also in ``docs/identifiers.md``):

- Input is taken exactly as given: no trimming, no unquoting. Forms already strip surrounding whitespace;
  anything else (spaces, line breaks, control characters, non-ASCII, ``%``, ``\\``) is refused.
- Azure: any explicit port is refused, even ``:443`` (Key Vault is only ever on 443, and one rule is easier
  to audit than "443 is fine"). A version is required: it pins the key material; rotation registers a new
  version. Sovereign clouds: Azure China and Azure US Government, for Key Vault and Managed HSM.
  ``vault.microsoftazure.de`` (Microsoft Cloud Deutschland) closed in October 2021 and is refused by name.
- AWS: key and alias ARNs only (a bare key id or alias lacks the region and account); aliases under
  ``alias/aws/`` (AWS managed keys) are refused because only customer managed keys can be shared.
- GCP: project IDs, and domain-scoped project IDs (``example.com:my-project``), which Google still serves
  for older projects; project numbers are refused so the stored name matches what the console shows.
"""

from __future__ import annotations

from .aws import (
    _PARTITIONS,
    AWS_KEY_ACCEPTED,
    AWS_ROLE_ACCEPTED,
    AwsKeyArn,
    AwsRoleArn,
    check_aws_role_for_key,
    parse_aws_key_arn,
    parse_aws_role_arn,
)
from .azure import (
    AZURE_DIRECTORY_ACCEPTED,
    AZURE_KEY_ACCEPTED,
    AZURE_LOGIN_HOSTS,
    AzureCloud,
    AzureKeyUrl,
    login_host_for,
    parse_azure_directory_id,
    parse_azure_key_url,
)
from .common import MAX_IDENTIFIER_LENGTH, InvalidKeyIdentifier
from .gcp import GCP_HOST, GCP_KEY_ACCEPTED, GcpCryptoKey, parse_gcp_crypto_key

__all__ = [
    "AWS_KEY_ACCEPTED",
    "AWS_ROLE_ACCEPTED",
    "AZURE_DIRECTORY_ACCEPTED",
    "AZURE_KEY_ACCEPTED",
    "AZURE_LOGIN_HOSTS",
    "GCP_HOST",
    "GCP_KEY_ACCEPTED",
    "MAX_IDENTIFIER_LENGTH",
    "AwsKeyArn",
    "AwsRoleArn",
    "AzureCloud",
    "AzureKeyUrl",
    "GcpCryptoKey",
    "InvalidKeyIdentifier",
    "aws_dns_suffix",
    "check_aws_role_for_key",
    "endpoint_host_for",
    "login_host_for",
    "parse_aws_key_arn",
    "parse_aws_role_arn",
    "parse_azure_directory_id",
    "parse_azure_key_url",
    "parse_gcp_crypto_key",
    "sts_host_for",
]

# --- Where Kodori connects ----------------------------------------------------------------------------------


def endpoint_host_for(identifier: AwsKeyArn | AzureKeyUrl | GcpCryptoKey) -> str:
    """The only host Kodori contacts in production to use this key (emulators come from settings only)."""
    if isinstance(identifier, AwsKeyArn):
        return f"kms.{identifier.region}.{aws_dns_suffix(identifier.partition)}"
    if isinstance(identifier, AzureKeyUrl):
        return identifier.host
    if isinstance(identifier, GcpCryptoKey):
        return GCP_HOST
    raise TypeError(f"not a parsed key identifier: {type(identifier).__name__}")


def sts_host_for(key: AwsKeyArn) -> str:
    """The regional STS host Kodori calls to assume the tenant's role for this key."""
    return f"sts.{key.region}.{aws_dns_suffix(key.partition)}"


def aws_dns_suffix(partition: str) -> str:
    """The domain of a partition's regional endpoints (``amazonaws.com``, ``amazonaws.com.cn`` ...)."""
    return _PARTITIONS[partition].dns_suffix
