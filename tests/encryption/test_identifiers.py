"""Key identifiers: every cloud's valid forms are accepted and normalized; hostile ones are refused.

The hostile lists are the SSRF catalogue: a tenant must never make Kodori connect to a host it chose. Each
refusal must say what is wrong (the ``reason`` fragment) and what is accepted (the parser's accepted text).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encryption.identifiers import (
    AWS_KEY_ACCEPTED,
    AWS_ROLE_ACCEPTED,
    AZURE_DIRECTORY_ACCEPTED,
    AZURE_KEY_ACCEPTED,
    GCP_KEY_ACCEPTED,
    AwsKeyArn,
    GcpCryptoKey,
    InvalidKeyIdentifier,
    check_aws_role_for_key,
    endpoint_host_for,
    login_host_for,
    parse_aws_key_arn,
    parse_aws_role_arn,
    parse_azure_directory_id,
    parse_azure_key_url,
    parse_gcp_crypto_key,
    sts_host_for,
)

KEY_UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"
VERSION = "0123456789abcdef0123456789abcdef"
KEY_PATH = f"/keys/tenant-kek/{VERSION}"
VAULT = "https://myvault.vault.azure.net"
GCP_KEY = "projects/my-project/locations/europe-west1/keyRings/kodori/cryptoKeys/tenant-kek"
AZURE_HOST = re.compile(
    r"[a-z][a-z0-9-]{1,22}[a-z0-9]\.(?:vault|managedhsm)\.(?:azure\.net|azure\.cn|usgovcloudapi\.net)"
)


def refused(parse: object, value: object, accepted: str) -> str:
    with pytest.raises(InvalidKeyIdentifier) as info:
        parse(value)  # type: ignore[operator]
    message = str(info.value)
    assert message.endswith(accepted), "every refusal must say what is accepted"
    return message


# --- Azure: accepted ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cloud", "managed_hsm"),
    [
        (f"{VAULT}{KEY_PATH}", "public", False),
        (f"https://myhsm.managedhsm.azure.net{KEY_PATH}", "public", True),
        (f"https://myvault.vault.azure.cn{KEY_PATH}", "china", False),
        (f"https://myhsm.managedhsm.azure.cn{KEY_PATH}", "china", True),
        (f"https://myvault.vault.usgovcloudapi.net{KEY_PATH}", "usgov", False),
        (f"https://myhsm.managedhsm.usgovcloudapi.net{KEY_PATH}", "usgov", True),
    ],
    ids=["public", "public-hsm", "china", "china-hsm", "usgov", "usgov-hsm"],
)
def test_it_accepts_key_vault_and_managed_hsm_urls_in_every_cloud(
    url: str, cloud: str, managed_hsm: bool
) -> None:
    key = parse_azure_key_url(url)
    assert (key.cloud, key.managed_hsm, key.name, key.version) == (cloud, managed_hsm, "tenant-kek", VERSION)
    assert key.key_id == url
    assert endpoint_host_for(key) == key.host == url.split("/")[2]
    assert key.vault_url == f"https://{key.host}"


def test_it_normalizes_case_of_scheme_host_and_version() -> None:
    key = parse_azure_key_url(f"HTTPS://MyVault.Vault.Azure.NET/keys/Tenant-KEK/{VERSION.upper()}")
    assert key.key_id == f"{VAULT}/keys/Tenant-KEK/{VERSION}"


@pytest.mark.parametrize("vault", ["abc", "a-b-c", "v" * 24, "vault1"])
def test_it_accepts_vault_names_at_the_limits(vault: str) -> None:
    assert parse_azure_key_url(f"https://{vault}.vault.azure.net/keys/{'k' * 127}/{VERSION}").host.startswith(
        vault
    )


def test_it_names_the_sign_in_host_of_the_keys_cloud() -> None:
    assert login_host_for(parse_azure_key_url(f"{VAULT}{KEY_PATH}")) == "login.microsoftonline.com"
    assert (
        login_host_for(parse_azure_key_url(f"https://v01.vault.azure.cn{KEY_PATH}"))
        == "login.chinacloudapi.cn"
    )


# --- Azure: refused (the SSRF catalogue) --------------------------------------------------------------------

HOST_IP = "host is an IP address"
NOT_KV = "is not a Key Vault or Managed HSM host"
PORT = "port"
HTTPS = "must start with https://"
USERINFO = "user information"
CONTROL = "spaces, line breaks or control characters"
ENCODED = "encoded or escaped"
NON_ASCII = "non-ASCII"
PUNYCODE = "punycode"

HOSTILE_AZURE = [
    # Other schemes, and none.
    pytest.param(f"http://myvault.vault.azure.net{KEY_PATH}", HTTPS, id="http"),
    pytest.param(f"HTTP://myvault.vault.azure.net{KEY_PATH}", HTTPS, id="http-uppercase"),
    pytest.param("file:///etc/passwd", HTTPS, id="file"),
    pytest.param(f"gopher://myvault.vault.azure.net{KEY_PATH}", HTTPS, id="gopher"),
    pytest.param(f"ftp://myvault.vault.azure.net{KEY_PATH}", HTTPS, id="ftp"),
    pytest.param("javascript:alert(1)//myvault.vault.azure.net", HTTPS, id="javascript"),
    pytest.param(f"//myvault.vault.azure.net{KEY_PATH}", HTTPS, id="scheme-relative"),
    pytest.param(f"myvault.vault.azure.net{KEY_PATH}", HTTPS, id="no-scheme"),
    # Cloud metadata endpoints, in every notation.
    pytest.param(f"https://169.254.169.254{KEY_PATH}", HOST_IP, id="metadata-ipv4"),
    pytest.param(f"https://[fd00:ec2::254]{KEY_PATH}", HOST_IP, id="metadata-aws-ipv6"),
    pytest.param(f"https://metadata.google.internal{KEY_PATH}", NOT_KV, id="metadata-gcp-name"),
    pytest.param(f"https://metadata{KEY_PATH}", NOT_KV, id="metadata-short-name"),
    pytest.param(f"https://2852039166{KEY_PATH}", HOST_IP, id="metadata-decimal"),
    pytest.param(f"https://0xA9FEA9FE{KEY_PATH}", HOST_IP, id="metadata-hex"),
    pytest.param(f"https://0xa9.0xfe.0xa9.0xfe{KEY_PATH}", HOST_IP, id="metadata-dotted-hex"),
    pytest.param(f"https://0251.0376.0251.0376{KEY_PATH}", HOST_IP, id="metadata-octal"),
    pytest.param(f"https://169.254.43518{KEY_PATH}", HOST_IP, id="metadata-two-part"),
    pytest.param(f"https://[::ffff:169.254.169.254]{KEY_PATH}", HOST_IP, id="metadata-ipv4-mapped-ipv6"),
    pytest.param(f"https://[::ffff:a9fe:a9fe]{KEY_PATH}", HOST_IP, id="metadata-ipv4-mapped-hex"),
    pytest.param(f"https://169.254.169.254.nip.io{KEY_PATH}", NOT_KV, id="metadata-wildcard-dns"),
    # Loopback, private and link-local.
    pytest.param(f"https://localhost{KEY_PATH}", NOT_KV, id="localhost"),
    pytest.param(f"https://127.0.0.1{KEY_PATH}", HOST_IP, id="loopback"),
    pytest.param(f"https://2130706433{KEY_PATH}", HOST_IP, id="loopback-decimal"),
    pytest.param(f"https://0x7f.1{KEY_PATH}", HOST_IP, id="loopback-hex-short"),
    pytest.param(f"https://0177.0.0.1{KEY_PATH}", HOST_IP, id="loopback-octal"),
    pytest.param(f"https://127.1{KEY_PATH}", HOST_IP, id="loopback-short"),
    pytest.param(f"https://0.0.0.0{KEY_PATH}", HOST_IP, id="any-address"),
    pytest.param(f"https://127.0.0.1.nip.io{KEY_PATH}", NOT_KV, id="loopback-wildcard-dns"),
    pytest.param(f"https://myvault.vault.azure.net.127.0.0.1.nip.io{KEY_PATH}", NOT_KV, id="suffix-then-nip"),
    pytest.param(f"https://10.0.0.1{KEY_PATH}", HOST_IP, id="private-10"),
    pytest.param(f"https://172.16.0.1{KEY_PATH}", HOST_IP, id="private-172-16"),
    pytest.param(f"https://192.168.1.1{KEY_PATH}", HOST_IP, id="private-192-168"),
    pytest.param(f"https://169.254.0.1{KEY_PATH}", HOST_IP, id="link-local"),
    pytest.param(f"https://[::1]{KEY_PATH}", HOST_IP, id="ipv6-loopback"),
    pytest.param(f"https://[::]{KEY_PATH}", HOST_IP, id="ipv6-any"),
    pytest.param(f"https://[fe80::1]{KEY_PATH}", HOST_IP, id="ipv6-link-local"),
    pytest.param(f"https://[fe80::1%25eth0]{KEY_PATH}", ENCODED, id="ipv6-zone-id"),
    pytest.param(f"https://::1{KEY_PATH}", PORT, id="ipv6-unbracketed"),
    pytest.param(f"https://1.2.3.4.vault.azure.net.5{KEY_PATH}", HOST_IP, id="numeric-last-label"),
    # Userinfo tricks.
    pytest.param(f"https://myvault.vault.azure.net@evil.com{KEY_PATH}", USERINFO, id="userinfo-suffix-first"),
    pytest.param(f"https://evil.com@myvault.vault.azure.net{KEY_PATH}", USERINFO, id="userinfo-vault-last"),
    pytest.param(f"https://user:pw@myvault.vault.azure.net{KEY_PATH}", USERINFO, id="userinfo-password"),
    pytest.param(f"https://myvault.vault.azure.net\\@evil.com{KEY_PATH}", ENCODED, id="backslash-userinfo"),
    # Suffix tricks.
    pytest.param(f"https://evil.com.vault.azure.net.attacker.io{KEY_PATH}", NOT_KV, id="suffix-in-middle"),
    pytest.param(f"https://x.vault.azure.net.evil.com{KEY_PATH}", NOT_KV, id="suffix-then-evil"),
    pytest.param(f"https://xvault.azure.net{KEY_PATH}", NOT_KV, id="suffix-without-dot"),
    pytest.param(f"https://evil.com/.vault.azure.net{KEY_PATH}", NOT_KV, id="suffix-in-path"),
    pytest.param(f"https://a.b.vault.azure.net{KEY_PATH}", NOT_KV, id="extra-label"),
    pytest.param(f"https://evil.com.vault.azure.net{KEY_PATH}", NOT_KV, id="dotted-vault-name"),
    pytest.param(f"https://vault.azure.net{KEY_PATH}", NOT_KV, id="bare-suffix"),
    pytest.param(f"https://.vault.azure.net{KEY_PATH}", "vault name", id="empty-vault-label"),
    pytest.param(f"https://myvault.vault.azure.com{KEY_PATH}", NOT_KV, id="wrong-tld"),
    pytest.param(f"https://myvault.vault.azure.net.{KEY_PATH}", "ends with a dot", id="trailing-dot"),
    pytest.param(
        f"https://myvault.vault.microsoftazure.de{KEY_PATH}", "closed in October 2021", id="germany"
    ),
    # Ports, even the right one.
    pytest.param(f"https://myvault.vault.azure.net:443{KEY_PATH}", PORT, id="port-443"),
    pytest.param(f"https://myvault.vault.azure.net:8443{KEY_PATH}", PORT, id="port-8443"),
    pytest.param(f"https://myvault.vault.azure.net:{KEY_PATH}", PORT, id="port-empty"),
    # Look-alikes: Cyrillic letters, their punycode forms, full-width dots.
    pytest.param(f"https://myvault.v\u0430ult.azure.net{KEY_PATH}", NON_ASCII, id="cyrillic-suffix"),
    pytest.param(f"https://myvault.xn--vult-53d.azure.net{KEY_PATH}", PUNYCODE, id="punycode-suffix"),
    pytest.param(f"https://myv\u0430ult.vault.azure.net{KEY_PATH}", NON_ASCII, id="cyrillic-vault"),
    pytest.param(f"https://xn--myvult-5nf.vault.azure.net{KEY_PATH}", PUNYCODE, id="punycode-vault"),
    pytest.param(f"https://myvault.vault.xn--zure-43d.net{KEY_PATH}", PUNYCODE, id="punycode-azure"),
    pytest.param(f"https://myvault\u3002vault.azure.net{KEY_PATH}", NON_ASCII, id="fullwidth-dot"),
    # Encodings, injection, control characters, length.
    pytest.param(f"https://myvault.vault.azure.net%2f@evil.com{KEY_PATH}", ENCODED, id="encoded-slash-host"),
    pytest.param(f"https://myvault.vault.azure.net/keys%2ftenant-kek/{VERSION}", ENCODED, id="encoded-slash"),
    pytest.param(f"https://%6dyvault.vault.azure.net{KEY_PATH}", ENCODED, id="percent-encoded-letter"),
    pytest.param(f"{VAULT}{KEY_PATH}\r\nHost: evil.com", CONTROL, id="crlf-injection"),
    pytest.param(f"https://myvault.vault.azure.net\x00.evil.com{KEY_PATH}", CONTROL, id="null-byte"),
    pytest.param(f"{VAULT}/keys/tenant\tkek/{VERSION}", CONTROL, id="tab"),
    pytest.param(f" {VAULT}{KEY_PATH}", CONTROL, id="leading-space"),
    pytest.param(f"{VAULT}/keys/{'k' * 5000}/{VERSION}", "too long", id="overlong"),
    pytest.param(f"{VAULT}{KEY_PATH}?api-version=7.4", "query", id="query"),
    pytest.param(f"{VAULT}{KEY_PATH}#frag", "fragment", id="fragment"),
    # Paths that are not a versioned key.
    pytest.param(f"{VAULT}/keys/tenant-kek", "no version", id="versionless"),
    pytest.param(f"{VAULT}/keys/tenant-kek/", "no version", id="versionless-slash"),
    pytest.param(f"{VAULT}/keys/../secrets/x/{VERSION}", "nothing after the version", id="dot-dot"),
    pytest.param(f"{VAULT}/secrets/db-password/{VERSION}", "secret URL", id="secret-url"),
    pytest.param(f"{VAULT}{KEY_PATH}/wrapkey", "nothing after the version", id="operation-suffix"),
    pytest.param(f"{VAULT}/keys/tenant-kek/not-a-version", "32 hexadecimal", id="bad-version"),
    pytest.param(f"{VAULT}/keys/tenant_kek/{VERSION}", "key name", id="underscore-in-name"),
    pytest.param(f"https://my--vault.vault.azure.net{KEY_PATH}", "vault name", id="double-hyphen-vault"),
    pytest.param(f"https://{'v' * 25}.vault.azure.net{KEY_PATH}", "vault name", id="vault-too-long"),
    pytest.param(f"https://1vault.vault.azure.net{KEY_PATH}", "vault name", id="vault-starts-with-digit"),
    pytest.param("", "empty", id="empty"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_AZURE)
def test_it_refuses_hostile_key_urls(url: str, reason: str) -> None:
    message = refused(parse_azure_key_url, url, AZURE_KEY_ACCEPTED)
    assert reason in message
    assert "https://<vault>.vault.azure.net/keys/<name>/<version>" in message


def test_it_explains_why_a_version_is_required() -> None:
    message = refused(parse_azure_key_url, f"{VAULT}/keys/tenant-kek", AZURE_KEY_ACCEPTED)
    assert "pins the version" in message and "create a new version" in message


@pytest.mark.parametrize(
    "value", [None, b"https://myvault.vault.azure.net", 42], ids=["none", "bytes", "int"]
)
def test_it_refuses_values_that_are_not_text(value: object) -> None:
    assert "must be text" in refused(parse_azure_key_url, value, AZURE_KEY_ACCEPTED)


URL_ALPHABET = "htps:/.@[]%\\?#:-~_ \r\n\x00\u0430myvaultzrencos0123456789abcdefk"


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=URL_ALPHABET, max_size=120),
        st.tuples(st.integers(0, 80), st.text(alphabet=URL_ALPHABET, min_size=1, max_size=4)).map(
            lambda cut: f"{VAULT}{KEY_PATH}"[: cut[0]] + cut[1] + f"{VAULT}{KEY_PATH}"[cut[0] :]
        ),
    )
)
def test_it_never_yields_a_host_outside_the_allow_list(url: str) -> None:
    try:
        key = parse_azure_key_url(url)
    except InvalidKeyIdentifier:
        return
    assert AZURE_HOST.fullmatch(endpoint_host_for(key))


# --- Azure directory id -------------------------------------------------------------------------------------


def test_it_normalizes_a_directory_id_to_lowercase() -> None:
    assert (
        parse_azure_directory_id("72F988BF-86F1-41AF-91AB-2D7CD011DB47")
        == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("common", "sign-in audience", id="common"),
        pytest.param("organizations", "sign-in audience", id="organizations"),
        pytest.param("contoso.onmicrosoft.com", "GUID", id="domain-name"),
        pytest.param("{72f988bf-86f1-41af-91ab-2d7cd011db47}", "GUID", id="braces"),
        pytest.param("72f988bf86f141af91ab2d7cd011db47", "GUID", id="no-hyphens"),
        pytest.param("00000000-0000-0000-0000-000000000000", "all-zero", id="nil-guid"),
        pytest.param("72f988bf-86f1-41af-91ab-2d7cd011db47\n", CONTROL, id="newline"),
        pytest.param("\u0667" * 8 + "-86f1-41af-91ab-2d7cd011db47", NON_ASCII, id="arabic-digits"),
    ],
)
def test_it_refuses_what_is_not_a_directory_id(value: str, reason: str) -> None:
    assert reason in refused(parse_azure_directory_id, value, AZURE_DIRECTORY_ACCEPTED)


# --- AWS: accepted ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partition", "region", "host"),
    [
        ("aws", "us-east-1", "kms.us-east-1.amazonaws.com"),
        ("aws", "il-central-1", "kms.il-central-1.amazonaws.com"),
        ("aws-cn", "cn-north-1", "kms.cn-north-1.amazonaws.com.cn"),
        ("aws-us-gov", "us-gov-west-1", "kms.us-gov-west-1.amazonaws.com"),
        ("aws-iso", "us-iso-east-1", "kms.us-iso-east-1.c2s.ic.gov"),
        ("aws-iso-b", "us-isob-east-1", "kms.us-isob-east-1.sc2s.sgov.gov"),
        ("aws-iso-e", "eu-isoe-west-1", "kms.eu-isoe-west-1.cloud.adc-e.uk"),
        ("aws-iso-f", "us-isof-south-1", "kms.us-isof-south-1.csp.hci.ic.gov"),
        ("aws-eusc", "eusc-de-east-1", "kms.eusc-de-east-1.amazonaws.eu"),
    ],
)
def test_it_accepts_key_arns_in_every_partition(partition: str, region: str, host: str) -> None:
    arn = f"arn:{partition}:kms:{region}:111122223333:key/{KEY_UUID}"
    key = parse_aws_key_arn(arn)
    assert key == AwsKeyArn(partition, region, "111122223333", "key", KEY_UUID, arn)
    assert endpoint_host_for(key) == host
    assert sts_host_for(key) == host.replace("kms.", "sts.", 1)


def test_it_accepts_a_multi_region_key_and_normalizes_its_case() -> None:
    key = parse_aws_key_arn(f"arn:aws:kms:eu-west-1:111122223333:key/mrk-{VERSION.upper()}")
    assert key.resource_id == f"mrk-{VERSION}"
    assert key.arn == f"arn:aws:kms:eu-west-1:111122223333:key/mrk-{VERSION}"


def test_it_accepts_alias_arns_with_slashes() -> None:
    key = parse_aws_key_arn("arn:aws:kms:us-west-2:111122223333:alias/kodori/tenants/acme_kek-1")
    assert (key.resource_type, key.resource_id) == ("alias", "kodori/tenants/acme_kek-1")
    assert endpoint_host_for(key) == "kms.us-west-2.amazonaws.com"


HOSTILE_AWS_KEYS = [
    pytest.param(KEY_UUID, "full ARN", id="bare-key-id"),
    pytest.param("alias/my-key", "full ARN", id="bare-alias"),
    pytest.param(f"mrk-{VERSION}", "full ARN", id="bare-mrk"),
    pytest.param("https://kms.us-east-1.amazonaws.com/", "not an ARN", id="url"),
    pytest.param(
        "arn:aws:kms:us-east-1:111122223333:alias/aws/s3", "AWS managed key", id="aws-managed-alias"
    ),
    pytest.param(
        f"arn:aws:kms:cn-north-1:111122223333:key/{KEY_UUID}", "aws-cn partition", id="cn-region-in-aws"
    ),
    pytest.param(
        f"arn:aws-cn:kms:us-east-1:111122223333:key/{KEY_UUID}", "aws partition", id="us-region-in-cn"
    ),
    pytest.param(
        f"arn:aws:kms:us-gov-west-1:111122223333:key/{KEY_UUID}", "aws-us-gov", id="gov-region-in-aws"
    ),
    pytest.param(
        f"arn:aws-evil:kms:us-east-1:111122223333:key/{KEY_UUID}", "unknown partition", id="partition"
    ),
    pytest.param(f"arn:aws:kms:169.254.169.254:111122223333:key/{KEY_UUID}", "region", id="region-ip"),
    pytest.param(f"arn:aws:kms:us-east-1.evil.com:111122223333:key/{KEY_UUID}", "region", id="region-host"),
    pytest.param(f"arn:aws:kms:localhost:111122223333:key/{KEY_UUID}", "region", id="region-localhost"),
    pytest.param(f"arn:aws:kms::111122223333:key/{KEY_UUID}", "region", id="region-empty"),
    pytest.param(f"arn:aws:kms:us-east-1:11112222333:key/{KEY_UUID}", "12 digits", id="account-short"),
    pytest.param(f"arn:aws:kms:us-east-1:11112222333x:key/{KEY_UUID}", "12 digits", id="account-letters"),
    pytest.param("arn:aws:s3:::my-bucket", "'s3' service", id="s3-arn"),
    pytest.param("arn:aws:iam::111122223333:role/kodori", "'iam' service", id="role-arn-as-key"),
    pytest.param("arn:aws:kms:us-east-1:111122223333:key/not-a-uuid", "UUID", id="key-id"),
    pytest.param(f"arn:aws:kms:us-east-1:111122223333:key/{KEY_UUID}/../x", "UUID", id="key-dot-dot"),
    pytest.param("arn:aws:kms:us-east-1:111122223333:alias/a:b", "alias name", id="alias-colon"),
    pytest.param("arn:aws:kms:us-east-1:111122223333:alias/my key", CONTROL, id="alias-space"),
    pytest.param("arn:aws:kms:us-east-1:111122223333:grant/abc", "key (key/...)", id="grant"),
    pytest.param(f"arn:aws:kms:us-east-1:111122223333:key/{KEY_UUID}\n", CONTROL, id="newline"),
    pytest.param("arn:aws:kms", "too few", id="truncated"),
]


@pytest.mark.parametrize(("arn", "reason"), HOSTILE_AWS_KEYS)
def test_it_refuses_hostile_key_arns(arn: str, reason: str) -> None:
    assert reason in refused(parse_aws_key_arn, arn, AWS_KEY_ACCEPTED)


# --- AWS roles ----------------------------------------------------------------------------------------------


def test_it_accepts_role_arns_with_and_without_a_path() -> None:
    plain = parse_aws_role_arn("arn:aws:iam::111122223333:role/kodori-kms")
    assert (plain.partition, plain.account, plain.path, plain.name) == (
        "aws",
        "111122223333",
        "/",
        "kodori-kms",
    )
    nested = parse_aws_role_arn("arn:aws-us-gov:iam::111122223333:role/byok/kodori/Kodori+KMS@acme")
    assert (nested.path, nested.name) == ("/byok/kodori/", "Kodori+KMS@acme")


def test_it_allows_a_role_in_another_account_of_the_same_partition() -> None:
    role = parse_aws_role_arn("arn:aws:iam::444455556666:role/kodori")
    check_aws_role_for_key(role, parse_aws_key_arn(f"arn:aws:kms:us-east-1:111122223333:key/{KEY_UUID}"))


def test_it_refuses_a_role_and_key_in_different_partitions() -> None:
    role = parse_aws_role_arn("arn:aws:iam::111122223333:role/kodori")
    key = parse_aws_key_arn(f"arn:aws-cn:kms:cn-north-1:111122223333:key/{KEY_UUID}")
    with pytest.raises(InvalidKeyIdentifier, match="same partition"):
        check_aws_role_for_key(role, key)


@pytest.mark.parametrize(
    ("arn", "reason"),
    [
        pytest.param("arn:aws:iam::111122223333:user/bob", "role (role/...)", id="user"),
        pytest.param("arn:aws:iam:us-east-1:111122223333:role/x", "no region", id="region"),
        pytest.param(
            "arn:aws:iam::111122223333:role/aws-service-role/x.amazonaws.com/y", "cannot be assumed", id="slr"
        ),
        pytest.param(
            "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/y", "cannot be assumed", id="sso"
        ),
        pytest.param("arn:aws:sts::111122223333:assumed-role/x/y", "'sts' service", id="assumed-role"),
        pytest.param(f"arn:aws:iam::111122223333:role/{'r' * 65}", "1-64", id="name-too-long"),
        pytest.param("arn:aws:iam::111122223333:role/a//b", "role path", id="empty-path-segment"),
        pytest.param("arn:aws:iam::111122223333:role/", "1-64", id="no-name"),
        pytest.param("kodori-kms", "not an ARN", id="bare-name"),
    ],
)
def test_it_refuses_what_is_not_an_assumable_role_arn(arn: str, reason: str) -> None:
    assert reason in refused(parse_aws_role_arn, arn, AWS_ROLE_ACCEPTED)


# --- GCP ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "project", "location", "version"),
    [
        (GCP_KEY, "my-project", "europe-west1", None),
        (f"{GCP_KEY}/cryptoKeyVersions/7", "my-project", "europe-west1", 7),
        (
            "projects/example.com:my-project/locations/global/keyRings/r_1/cryptoKeys/K-2",
            "example.com:my-project",
            "global",
            None,
        ),
        (
            "projects/acme-prod-123/locations/nam-eur-asia1/keyRings/kr/cryptoKeys/kek",
            "acme-prod-123",
            "nam-eur-asia1",
            None,
        ),
        (
            "projects/acme-prod/locations/europe/keyRings/kr/cryptoKeys/kek/cryptoKeyVersions/12",
            "acme-prod",
            "europe",
            12,
        ),
    ],
    ids=["key", "version", "domain-scoped", "multi-region", "location-europe"],
)
def test_it_accepts_crypto_key_names(name: str, project: str, location: str, version: int | None) -> None:
    key = parse_gcp_crypto_key(name)
    assert (key.project, key.location, key.version, key.name) == (project, location, version, name)
    assert endpoint_host_for(key) == "cloudkms.googleapis.com"


def test_it_splits_a_crypto_key_name_into_its_parts() -> None:
    assert parse_gcp_crypto_key(f"{GCP_KEY}/cryptoKeyVersions/3") == GcpCryptoKey(
        "my-project", "europe-west1", "kodori", "tenant-kek", 3, f"{GCP_KEY}/cryptoKeyVersions/3"
    )


HOSTILE_GCP = [
    pytest.param(f"https://cloudkms.googleapis.com/v1/{GCP_KEY}", "not a URL", id="https-url"),
    pytest.param(f"//cloudkms.googleapis.com/{GCP_KEY}", "not a URL", id="full-resource-name"),
    pytest.param(f"http://169.254.169.254/{GCP_KEY}", "not a URL", id="metadata-url"),
    pytest.param("projects/../locations/global/keyRings/r/cryptoKeys/k", "'..'", id="dot-dot"),
    pytest.param(f"{GCP_KEY}?alt=json", "'?'", id="query"),
    pytest.param(f"{GCP_KEY}#x", "'#'", id="fragment"),
    pytest.param(GCP_KEY.replace("/locations", "%2Flocations"), ENCODED, id="encoded-slash"),
    pytest.param(f"{GCP_KEY} ", CONTROL, id="trailing-space"),
    pytest.param(f"/{GCP_KEY}", "number of", id="leading-slash"),
    pytest.param(f"{GCP_KEY}/", "number of", id="trailing-slash"),
    pytest.param(GCP_KEY.replace("my-project", "123456789012"), "project number", id="project-number"),
    pytest.param(GCP_KEY.replace("my-project", "My-Project"), "project ID", id="project-uppercase"),
    pytest.param(GCP_KEY.replace("my-project", "abc"), "project ID", id="project-short"),
    pytest.param(GCP_KEY.replace("my-project", "my-project-"), "project ID", id="project-trailing-hyphen"),
    pytest.param(GCP_KEY.replace("my-project", "metadata.google.internal:"), "project ID", id="domain-no-id"),
    pytest.param(GCP_KEY.replace("keyRings", "keyrings"), "case matters", id="collection-case"),
    pytest.param(GCP_KEY.replace("europe-west1", "EUROPE-WEST1"), "location", id="location-case"),
    pytest.param(GCP_KEY.replace("tenant-kek", "tenant.kek"), "ids must be", id="key-dot"),
    pytest.param(GCP_KEY.replace("tenant-kek", "k" * 64), "ids must be", id="key-too-long"),
    pytest.param(f"{GCP_KEY}/cryptoKeyVersions/0", "positive whole number", id="version-zero"),
    pytest.param(f"{GCP_KEY}/cryptoKeyVersions/01", "positive whole number", id="version-leading-zero"),
    pytest.param(f"{GCP_KEY}/cryptoKeyVersions/latest", "positive whole number", id="version-word"),
    pytest.param("projects/my-project/locations/global/keyRings/kodori", "number of", id="key-ring-only"),
]


@pytest.mark.parametrize(("name", "reason"), HOSTILE_GCP)
def test_it_refuses_hostile_crypto_key_names(name: str, reason: str) -> None:
    assert reason in refused(parse_gcp_crypto_key, name, GCP_KEY_ACCEPTED)


# --- One host per identifier --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="arnws-:kmiuscetgofb0123456789/.@_", max_size=90))
def test_it_derives_aws_hosts_only_from_validated_parts(arn: str) -> None:
    try:
        key = parse_aws_key_arn(arn)
    except InvalidKeyIdentifier:
        return
    assert re.fullmatch(r"kms\.[a-z]+(?:-[a-z]+)+-\d{1,2}\.[a-z.-]+", endpoint_host_for(key))


def test_it_refuses_to_name_a_host_for_anything_else() -> None:
    with pytest.raises(TypeError):
        endpoint_host_for("https://evil.example")  # type: ignore[arg-type]
