"""Azure Key Vault and Managed HSM key URLs, with an allow-list of hosts, and directory ids."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from .common import _check_text, _refuse

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
