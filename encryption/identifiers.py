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

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AZURE_LOGIN_HOSTS",
    "AwsKeyArn",
    "AwsRoleArn",
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

# Far above any real identifier (a role ARN with a 512-character path is the longest), far below abuse.
MAX_IDENTIFIER_LENGTH = 1024


class InvalidKeyIdentifier(ValueError):
    """A key identifier was refused; the message says why and what Kodori accepts (shown to customers)."""


def _refuse(problem: str, ok: str) -> InvalidKeyIdentifier:
    return InvalidKeyIdentifier(f"{problem}. {ok}")


def _check_text(value: object, what: str, ok: str) -> str:
    """Refuse, before any parsing, the characters no identifier of any cloud contains."""
    if not isinstance(value, str):
        raise _refuse(f"{what} must be text", ok)
    if not value:
        raise _refuse(f"{what} is empty", ok)
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise _refuse(f"{what} is too long ({MAX_IDENTIFIER_LENGTH} characters at most)", ok)
    if not value.isascii():
        raise _refuse(
            f"{what} contains non-ASCII characters (look-alike letters are refused; copy the identifier "
            "from your cloud console)",
            ok,
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _refuse(f"{what} contains spaces, line breaks or control characters", ok)
    if "%" in value or "\\" in value:
        raise _refuse(f"{what} contains '%' or '\\' (encoded or escaped characters are refused)", ok)
    return value


# --- AWS ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Partition:
    region: re.Pattern[str]
    dns_suffix: str  # botocore's partitions.json: kms.<region>.<suffix> and sts.<region>.<suffix>


_PARTITIONS: dict[str, _Partition] = {
    "aws": _Partition(re.compile(r"(?:us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d{1,2}"), "amazonaws.com"),
    "aws-cn": _Partition(re.compile(r"cn-[a-z]+-\d{1,2}"), "amazonaws.com.cn"),
    "aws-us-gov": _Partition(re.compile(r"us-gov-[a-z]+-\d{1,2}"), "amazonaws.com"),
    "aws-iso": _Partition(re.compile(r"us-iso-[a-z]+-\d{1,2}"), "c2s.ic.gov"),
    "aws-iso-b": _Partition(re.compile(r"us-isob-[a-z]+-\d{1,2}"), "sc2s.sgov.gov"),
    "aws-iso-e": _Partition(re.compile(r"eu-isoe-[a-z]+-\d{1,2}"), "cloud.adc-e.uk"),
    "aws-iso-f": _Partition(re.compile(r"us-isof-[a-z]+-\d{1,2}"), "csp.hci.ic.gov"),
    "aws-eusc": _Partition(re.compile(r"eusc-de-[a-z]+-\d{1,2}"), "amazonaws.eu"),
}
_PARTITION_LIST = ", ".join(_PARTITIONS)
_ACCOUNT = re.compile(r"\d{12}")
_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}")
_ALIAS = re.compile(r"[A-Za-z0-9/_-]{1,250}")
_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")
_ROLE_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_+=,.@-]+")

AWS_KEY_ACCEPTED = (
    "Kodori accepts a KMS key ARN, arn:<partition>:kms:<region>:<12-digit account>:key/<key id> "
    "(e.g. arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab, or key/mrk-<32 hex> "
    "for a multi-Region key), or an alias ARN such as arn:aws:kms:us-east-1:111122223333:alias/my-key; "
    f"partitions: {_PARTITION_LIST}"
)
AWS_ROLE_ACCEPTED = (
    "Kodori accepts an IAM role ARN, arn:<partition>:iam::<12-digit account>:role/<optional path/><name> "
    f"(e.g. arn:aws:iam::111122223333:role/kodori-kms); partitions: {_PARTITION_LIST}"
)


@dataclass(frozen=True)
class AwsKeyArn:
    """A customer managed KMS key named by its key ARN or alias ARN.

    ``resource_id`` is what follows ``key/`` (the key id) or ``alias/`` (the alias name); ``arn`` is the
    normalized ARN that Kodori passes as ``KeyId``.
    """

    partition: str
    region: str
    account: str
    resource_type: Literal["key", "alias"]
    resource_id: str
    arn: str


@dataclass(frozen=True)
class AwsRoleArn:
    """The IAM role Kodori assumes (with the tenant's ExternalId) to use the tenant's key."""

    partition: str
    account: str
    path: str  # "/" or "/segment/.../"
    name: str
    arn: str


def _split_arn(value: str, service: str, ok: str) -> list[str]:
    if not value.startswith("arn:"):
        if _KEY_ID.fullmatch(value.lower()) or value.startswith("alias/"):
            raise _refuse(
                "A bare key id or alias name is not enough: Kodori needs the full ARN, which carries the "
                "region and the account",
                ok,
            )
        raise _refuse("The value is not an ARN (it must start with 'arn:')", ok)
    parts = value.split(":", 5)
    if len(parts) != 6:
        raise _refuse("The ARN has too few ':'-separated parts", ok)
    partition = parts[1]
    if partition not in _PARTITIONS:
        raise _refuse(f"The ARN names an unknown partition (known: {_PARTITION_LIST})", ok)
    if parts[2] != service:
        raise _refuse(f"The ARN is for the '{parts[2][:20]}' service, not '{service}'", ok)
    if not _ACCOUNT.fullmatch(parts[4]):
        raise _refuse("The account in the ARN must be exactly 12 digits", ok)
    return parts


def parse_aws_key_arn(value: object) -> AwsKeyArn:
    """Parse ``arn:<partition>:kms:<region>:<account>:key/<id>`` or ``...:alias/<name>``."""
    ok = AWS_KEY_ACCEPTED
    text = _check_text(value, "The key ARN", ok)
    _, partition, _, region, account, resource = _split_arn(text, "kms", ok)
    if not _PARTITIONS[partition].region.fullmatch(region):
        owner = next((name for name, p in _PARTITIONS.items() if p.region.fullmatch(region)), None)
        problem = (
            f"The region '{region}' belongs to the {owner} partition, not {partition}"
            if owner
            else "The region in the ARN is missing or not a known AWS region format"
        )
        raise _refuse(problem, ok)
    kind, _, rest = resource.partition("/")
    if kind == "key":
        key_id = rest.lower()  # AWS issues lowercase ids; a pasted uppercase id names the same key
        if not _KEY_ID.fullmatch(key_id):
            raise _refuse("The key id must be a UUID or mrk- followed by 32 hex digits", ok)
        arn = f"arn:{partition}:kms:{region}:{account}:key/{key_id}"
        return AwsKeyArn(partition, region, account, "key", key_id, arn)
    if kind == "alias":
        if rest.startswith("aws/"):
            raise _refuse(
                "alias/aws/... names an AWS managed key, which cannot be shared with Kodori; create a "
                "customer managed key and give its ARN or alias ARN",
                ok,
            )
        if not _ALIAS.fullmatch(rest):
            raise _refuse(
                "The alias name may contain only letters, digits, '/', '_' and '-' (1-250 characters)",
                ok,
            )
        return AwsKeyArn(partition, region, account, "alias", rest, text)
    raise _refuse("The ARN must name a key (key/...) or an alias (alias/...)", ok)


def parse_aws_role_arn(value: object) -> AwsRoleArn:
    """Parse ``arn:<partition>:iam::<account>:role/<path/><name>``."""
    ok = AWS_ROLE_ACCEPTED
    text = _check_text(value, "The role ARN", ok)
    _, partition, _, region, account, resource = _split_arn(text, "iam", ok)
    if region:
        raise _refuse("An IAM role ARN has no region (arn:aws:iam::<account>:role/...)", ok)
    if not resource.startswith("role/"):
        raise _refuse("The ARN must name a role (role/...)", ok)
    *segments, name = resource[len("role/") :].split("/")
    if not _ROLE_NAME.fullmatch(name):
        raise _refuse("The role name must be 1-64 letters, digits or the characters _+=,.@-", ok)
    if not all(_ROLE_PATH_SEGMENT.fullmatch(s) for s in segments):
        raise _refuse("The role path must be '/'-separated letters, digits or _+=,.@-", ok)
    if segments and segments[0] in ("aws-service-role", "aws-reserved"):
        # Service-linked and IAM Identity Center roles trust only AWS services: Kodori can never assume them.
        raise _refuse("Roles under /aws-service-role/ or /aws-reserved/ cannot be assumed by Kodori", ok)
    path = "/" + "".join(f"{s}/" for s in segments)
    if len(path) > 512:
        raise _refuse("The role path is longer than 512 characters", ok)
    return AwsRoleArn(partition, account, path, name, text)


def check_aws_role_for_key(role: AwsRoleArn, key: AwsKeyArn) -> None:
    """Refuse a role and key in different partitions (credentials never cross partitions).

    Different accounts are fine: the key policy can grant a role of another account of the same partition.
    """
    if role.partition != key.partition:
        raise InvalidKeyIdentifier(
            f"The role is in the {role.partition} partition but the key is in {key.partition}; AWS "
            "credentials work only within one partition. Kodori accepts a role and a key of the same "
            "partition (their accounts may differ)."
        )


# --- Azure --------------------------------------------------------------------------------------------------

AzureCloud = Literal["public", "china", "usgov"]
# suffix -> (cloud, managed HSM?). A host is exactly one DNS label (the vault or HSM name) + one of these.
_AZURE_SUFFIXES: dict[str, tuple[AzureCloud, bool]] = {
    "vault.azure.net": ("public", False),
    "managedhsm.azure.net": ("public", True),
    "vault.azure.cn": ("china", False),
    "managedhsm.azure.cn": ("china", True),
    "vault.usgovcloudapi.net": ("usgov", False),
    "managedhsm.usgovcloudapi.net": ("usgov", True),
}
_RETIRED_AZURE_SUFFIXES = ("vault.microsoftazure.de", "managedhsm.microsoftazure.de")
AZURE_LOGIN_HOSTS: dict[AzureCloud, str] = {
    "public": "login.microsoftonline.com",
    "china": "login.chinacloudapi.cn",
    "usgov": "login.microsoftonline.us",
}
_VAULT_NAME = re.compile(r"[a-z][a-z0-9-]{1,22}[a-z0-9]")
_AZURE_KEY_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

AZURE_KEY_ACCEPTED = (
    "A key URL must look like https://<vault>.vault.azure.net/keys/<name>/<version>: https, no port, "
    "the vault name (3-24 letters, digits, hyphens), a key name and its 32-hex-digit version. Managed HSM "
    "(<hsm>.managedhsm.azure.net) and the Azure China (vault.azure.cn, managedhsm.azure.cn) and US "
    "Government (vault.usgovcloudapi.net, managedhsm.usgovcloudapi.net) clouds are accepted"
)
AZURE_DIRECTORY_ACCEPTED = (
    "Kodori accepts your Microsoft Entra directory (tenant) id, a GUID such as "
    "72f988bf-86f1-41af-91ab-2d7cd011db47 (Entra admin center > Overview > Tenant ID)"
)


@dataclass(frozen=True)
class AzureKeyUrl:
    """A versioned Key Vault or Managed HSM key; ``vault_url`` is what the SDK's clients are built with."""

    vault_url: str
    host: str
    name: str
    version: str
    managed_hsm: bool
    cloud: AzureCloud

    @property
    def key_id(self) -> str:
        """The normalized key URL (lowercase host and version)."""
        return f"{self.vault_url}/keys/{self.name}/{self.version}"


def _is_ip_like(host: str) -> bool:
    """True for anything a URL library or resolver might read as an IP address, in any notation."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.split(".")
    # 2130706433, 0x7f.1, 0177.0.0.1 ...; and, as in the WHATWG URL standard, a numeric last label.
    return all(_NUMERIC_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit()


def _check_azure_host(authority: str) -> tuple[str, AzureCloud, bool]:
    ok = AZURE_KEY_ACCEPTED
    if "@" in authority:
        raise _refuse("The key URL contains user information ('@' before the host)", ok)
    if authority.startswith("["):
        raise _refuse("The key URL's host is an IP address; Kodori contacts Key Vault only by name", ok)
    if ":" in authority:
        raise _refuse("The key URL names a port (or an IPv6 address); no port is accepted, not even :443", ok)
    host = authority.lower()
    if not host:
        raise _refuse("The key URL has no host", ok)
    if host.endswith("."):
        raise _refuse("The key URL's host ends with a dot", ok)
    if _is_ip_like(host):
        raise _refuse("The key URL's host is an IP address; Kodori contacts Key Vault only by name", ok)
    labels = host.split(".")
    if any(label.startswith("xn--") for label in labels):
        raise _refuse("The key URL's host is an internationalized (punycode xn--) name", ok)
    if any(host.endswith("." + retired) for retired in _RETIRED_AZURE_SUFFIXES):
        raise _refuse(
            "Microsoft Cloud Deutschland (microsoftazure.de) closed in October 2021; move the key to a "
            "Key Vault in public Azure (for example a Germany region)",
            ok,
        )
    vault, _, suffix = host.partition(".")
    if suffix not in _AZURE_SUFFIXES:
        raise _refuse(f"The host '{host[:80]}' is not a Key Vault or Managed HSM host", ok)
    if not _VAULT_NAME.fullmatch(vault) or "--" in vault:
        raise _refuse(
            "The vault name must be 3-24 letters, digits and single hyphens, start with a letter and end "
            "with a letter or digit",
            ok,
        )
    cloud, managed_hsm = _AZURE_SUFFIXES[suffix]
    return host, cloud, managed_hsm


def parse_azure_key_url(value: object) -> AzureKeyUrl:
    """Parse ``https://<vault>.<allow-listed suffix>/keys/<name>/<version>``."""
    ok = AZURE_KEY_ACCEPTED
    text = _check_text(value, "The key URL", ok)
    if "?" in text or "#" in text:
        raise _refuse("The key URL has a query ('?') or fragment ('#')", ok)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() != "https":
        raise _refuse("The key URL must start with https://", ok)
    authority, _, path = rest.partition("/")
    host, cloud, managed_hsm = _check_azure_host(authority)
    segments = path.split("/")
    if segments[0] in ("secrets", "certificates"):
        raise _refuse(f"This is a Key Vault {segments[0][:-1]} URL; Kodori needs a key (/keys/...)", ok)
    if segments[0] != "keys" or len(segments) < 2 or not segments[1]:
        raise _refuse("The path must be /keys/<name>/<version>", ok)
    if len(segments) == 2 or (len(segments) == 3 and not segments[2]):
        raise _refuse(
            "The key URL has no version. Kodori pins the version so the key material that protects your "
            "data cannot change underneath it; to rotate, create a new version and register its URL",
            ok,
        )
    if len(segments) != 3:
        raise _refuse("The path must be /keys/<name>/<version> with nothing after the version", ok)
    name, version = segments[1], segments[2]
    if not _AZURE_KEY_NAME.fullmatch(name):
        raise _refuse("The key name must be 1-127 letters, digits or hyphens", ok)
    if not _HEX32.fullmatch(version):
        raise _refuse("The key version must be 32 hexadecimal digits", ok)
    return AzureKeyUrl(f"https://{host}", host, name, version.lower(), managed_hsm, cloud)


def parse_azure_directory_id(value: object) -> str:
    """Parse a Microsoft Entra directory (tenant) id; returns the lowercase GUID."""
    ok = AZURE_DIRECTORY_ACCEPTED
    text = _check_text(value, "The directory id", ok)
    if text.lower() in ("common", "organizations", "consumers"):
        raise _refuse(f"'{text}' is a sign-in audience, not a directory", ok)
    if not _GUID.fullmatch(text):
        raise _refuse("The directory id must be a GUID (8-4-4-4-12 hex digits)", ok)
    if set(text) <= {"0", "-"}:
        raise _refuse("The all-zero GUID is not a directory", ok)
    return text.lower()


def login_host_for(key: AzureKeyUrl) -> str:
    """The Entra ID sign-in host Kodori uses for the federated credential in the key's cloud."""
    return AZURE_LOGIN_HOSTS[key.cloud]


# --- GCP ----------------------------------------------------------------------------------------------------

_PROJECT_ID = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_DOMAIN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
_PROJECT = re.compile(rf"(?:{_DOMAIN}:)?{_PROJECT_ID}")
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,62}")
_KMS_ID = re.compile(r"[A-Za-z0-9_-]{1,63}")
_VERSION_ID = re.compile(r"[1-9][0-9]{0,17}")
GCP_HOST = "cloudkms.googleapis.com"

GCP_KEY_ACCEPTED = (
    "Kodori accepts a CryptoKey resource name, projects/<project>/locations/<location>/keyRings/<ring>/"
    "cryptoKeys/<key>, optionally followed by /cryptoKeyVersions/<n> (e.g. projects/my-project/locations/"
    "europe-west1/keyRings/kodori/cryptoKeys/tenant-kek). The project is its ID (6-30 lowercase letters, "
    "digits, hyphens, or example.com:my-project); ring and key ids are 1-63 letters, digits, '_' or '-'"
)


@dataclass(frozen=True)
class GcpCryptoKey:
    """A Cloud KMS CryptoKey, or one of its versions when ``version`` is set; ``name`` is the full name."""

    project: str
    location: str
    key_ring: str
    crypto_key: str
    version: int | None
    name: str


def parse_gcp_crypto_key(value: object) -> GcpCryptoKey:
    """Parse ``projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>[/cryptoKeyVersions/<n>]``."""
    ok = GCP_KEY_ACCEPTED
    text = _check_text(value, "The CryptoKey name", ok)
    if "://" in text or text.startswith("//"):
        raise _refuse("Give the resource name, not a URL", ok)
    if ".." in text or "?" in text or "#" in text:
        raise _refuse("The CryptoKey name contains '..', '?' or '#'", ok)
    parts = text.split("/")
    if len(parts) not in (8, 10):
        raise _refuse("The CryptoKey name has the wrong number of '/'-separated parts", ok)
    collections = parts[0::2]
    expected = ["projects", "locations", "keyRings", "cryptoKeys", "cryptoKeyVersions"][: len(collections)]
    if collections != expected:
        raise _refuse(f"The CryptoKey name must read {'/<...>/'.join(expected)}/<...> (case matters)", ok)
    project, location, ring, key = parts[1], parts[3], parts[5], parts[7]
    if project.isdigit():
        raise _refuse("Give the project ID, not the project number", ok)
    if not _PROJECT.fullmatch(project) or project.endswith("-"):
        raise _refuse("The project ID is not valid", ok)
    if not _LOCATION.fullmatch(location):
        raise _refuse(
            "The location must be lowercase letters, digits and hyphens (e.g. global, us-east1)", ok
        )
    if not _KMS_ID.fullmatch(ring) or not _KMS_ID.fullmatch(key):
        raise _refuse("Key ring and key ids must be 1-63 letters, digits, '_' or '-'", ok)
    version = None
    if len(parts) == 10:
        if not _VERSION_ID.fullmatch(parts[9]):
            raise _refuse("The key version must be a positive whole number without leading zeros", ok)
        version = int(parts[9])
    return GcpCryptoKey(project, location, ring, key, version, text)


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
