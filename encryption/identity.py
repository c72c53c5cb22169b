"""Which KMS key a registration names: its canonical identity, and the unit a customer deletes in the KMS.

Two identifiers can name one key. Kodori compares canonical identities, never the strings customers typed:

- AWS: an alias ARN names whatever key the alias points at; ``DescribeKey`` (through the tenant's role)
  resolves it to the key ARN at registration. A key ARN is its own identity.
- Azure: a versioned key URL pins one version's key material, and each version is what a registration uses
  (new versions are how Key Vault rotates). The host is compared case-insensitively, as DNS does. A
  versionless URL is refused at parsing, so it never becomes a second name for a registered version.
- GCP: a CryptoKey and any of its versions decrypt the same ciphertexts (the version is inside them), so a
  key-version path is cut to its CryptoKey.

What a customer *deletes* is coarser for Azure: Key Vault deletes a key with all its versions, so
:func:`deletion_unit` of an Azure registration is the versionless key. "Safe to delete from your KMS" asks
that no registration Kodori still uses, in any tenant, shares the deletion unit.
"""

from __future__ import annotations

from .identifiers import parse_aws_key_arn, parse_azure_key_url, parse_gcp_crypto_key
from .models import WrapMethod


def canonical_id(wrap_method: str, key_id: str, *, resolved_aws_key_arn: str = "") -> str:
    """The canonical identity of a customer key identifier (already validated); "" for Kodori's own keys.

    For an AWS alias ARN the caller passes ``resolved_aws_key_arn`` (what ``DescribeKey`` answered).
    """
    method = WrapMethod(wrap_method)
    if method == WrapMethod.CUSTOMER_KMS_AWS:
        key = parse_aws_key_arn(key_id)
        if key.resource_type == "alias":
            if not resolved_aws_key_arn:
                raise ValueError("an alias ARN needs the key ARN DescribeKey resolved it to")
            return parse_aws_key_arn(resolved_aws_key_arn).arn
        return key.arn
    if method == WrapMethod.CUSTOMER_KMS_AZURE:
        url = parse_azure_key_url(key_id)
        return f"https://{url.host.lower()}/keys/{url.name.lower()}/{url.version.lower()}"
    if method == WrapMethod.CUSTOMER_KMS_GCP:
        gcp = parse_gcp_crypto_key(key_id)
        ring = f"projects/{gcp.project}/locations/{gcp.location}/keyRings/{gcp.key_ring}"
        return f"{ring}/cryptoKeys/{gcp.crypto_key}"
    return ""


def deletion_unit(wrap_method: str, canonical: str) -> str:
    """What the customer deletes in their KMS for this canonical identity (a prefix for Azure versions)."""
    if WrapMethod(wrap_method) == WrapMethod.CUSTOMER_KMS_AZURE and canonical:
        return canonical.rsplit("/", 1)[0] + "/"
    return canonical
