"""Static cloud credentials are refused with the field and the federated alternative, never the value.

Each shape is checked three ways: it is found, the refusal names the field but contains no piece of the
value, and logging it through :class:`RedactStaticCredentialsFilter` leaves no piece of it in the output.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from collections.abc import Iterator

import pytest
from django.http import QueryDict

from encryption.credentials import (
    ALTERNATIVES,
    Cloud,
    CredentialKind,
    RedactStaticCredentialsFilter,
    StaticCredentialRefused,
    find_static_credentials,
    refuse_static_credentials,
)

# Documentation examples and obviously fake values in the real shapes.
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_TEMP_KEY_ID = "ASIAY34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexamplesessiontokenvalue=="
AZURE_SECRET = "Xy48Q~kodoriExampleSecretValue0123456789"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7exampleKeyMaterial"
GCP_API_KEY = "AIzaSyExampleKodoriApiKey0123456789abcd"


def pem(label: str) -> str:
    return f"-----BEGIN {label}-----\n{PEM_BODY}\n-----END {label}-----\n"


SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "acme-prod",
    "private_key_id": "0123456789abcdef0123456789abcdef01234567",
    "private_key": pem("PRIVATE KEY"),
    "client_email": "kodori@acme-prod.iam.gserviceaccount.com",
}

# (payload, the field that must be named, the secret piece that must never appear, the cloud)
SHAPES = [
    pytest.param(
        {"aws_access_key_id": AWS_KEY_ID}, "aws_access_key_id", AWS_KEY_ID, Cloud.AWS, id="akia-named"
    ),
    pytest.param({"identity": AWS_TEMP_KEY_ID}, "identity", AWS_TEMP_KEY_ID, Cloud.AWS, id="asia-by-shape"),
    pytest.param({"group": "AGPAJ2UCCR6DPCEXAMPL"}, "group", "AGPAJ2UCCR6DPCEXAMPL", Cloud.AWS, id="agpa"),
    pytest.param(
        {"aws_secret_access_key": AWS_SECRET}, "aws_secret_access_key", AWS_SECRET, Cloud.AWS, id="secret"
    ),
    pytest.param({"secret_key": AWS_SECRET}, "secret_key", AWS_SECRET, Cloud.AWS, id="secret-key-name"),
    pytest.param({"value": AWS_SECRET}, "value", AWS_SECRET, Cloud.AWS, id="secret-by-shape"),
    pytest.param(
        {"config": f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"},
        "config",
        AWS_SECRET,
        Cloud.AWS,
        id="credentials-file",
    ),
    pytest.param(
        {"aws_session_token": AWS_SESSION_TOKEN}, "aws_session_token", AWS_SESSION_TOKEN, Cloud.AWS, id="sts"
    ),
    pytest.param({"blob": AWS_SESSION_TOKEN}, "blob", AWS_SESSION_TOKEN, Cloud.AWS, id="sts-by-shape"),
    pytest.param(
        {"client_secret": "legacy-secret"}, "client_secret", "legacy-secret", Cloud.AZURE, id="azure-named"
    ),
    pytest.param(
        {"azure": {"clientSecret": AZURE_SECRET}}, "azure.clientSecret", AZURE_SECRET, Cloud.AZURE, id="azure"
    ),
    pytest.param({"note": AZURE_SECRET}, "note", AZURE_SECRET, Cloud.AZURE, id="azure-by-shape"),
    pytest.param({"credentials": SERVICE_ACCOUNT}, "credentials", PEM_BODY, Cloud.GCP, id="sa-dict"),
    pytest.param(
        {"key_file": json.dumps(SERVICE_ACCOUNT)}, "key_file", PEM_BODY, Cloud.GCP, id="sa-json-string"
    ),
    pytest.param(
        {"gcp": {"key": json.dumps(SERVICE_ACCOUNT, indent=2)[:-40]}},
        "gcp.key",
        "0123456789abcdef0123",
        Cloud.GCP,
        id="sa-truncated-json",
    ),
    pytest.param({"google": {"api": GCP_API_KEY}}, "google.api", GCP_API_KEY, Cloud.GCP, id="gcp-api-key"),
    pytest.param({"notes": pem("RSA PRIVATE KEY")}, "notes", PEM_BODY, None, id="pem-rsa"),
    pytest.param({"notes": pem("EC PRIVATE KEY")}, "notes", PEM_BODY, None, id="pem-ec"),
    pytest.param({"notes": pem("OPENSSH PRIVATE KEY")}, "notes", PEM_BODY, None, id="pem-openssh"),
    pytest.param({"notes": pem("ENCRYPTED PRIVATE KEY")}, "notes", PEM_BODY, None, id="pem-encrypted"),
    pytest.param({"aws": {"pem": pem("PRIVATE KEY")}}, "aws.pem", PEM_BODY, Cloud.AWS, id="pem-under-aws"),
    pytest.param(
        {"password": "correct horse battery staple"}, "password", "horse battery", None, id="password"
    ),
    pytest.param({"secret": "s3cr3t-value"}, "secret", "s3cr3t-value", None, id="secret-word"),
    pytest.param({"access_key": "k-123456"}, "access_key", "k-123456", Cloud.AWS, id="access-key-word"),
    pytest.param(
        {"private_key": "opaque-key-blob"}, "private_key", "opaque-key-blob", None, id="private-key-word"
    ),
    pytest.param({"token": "opaque-token-value"}, "token", "opaque-token-value", None, id="token-word"),
    pytest.param(
        {"aws": {"profiles": [{"name": "prod", "creds": {"aws_secret_access_key": AWS_SECRET}}]}},
        "aws.profiles[0].creds.aws_secret_access_key",
        AWS_SECRET,
        Cloud.AWS,
        id="nested",
    ),
    pytest.param(
        {"tags": ["ok", ["deeper", AWS_KEY_ID]]}, "tags[1][1]", AWS_KEY_ID, Cloud.AWS, id="nested-list"
    ),
    pytest.param({AWS_KEY_ID: AWS_SECRET}, "<redacted name>", AWS_KEY_ID, Cloud.AWS, id="credential-as-key"),
]


def pieces(secret: str, size: int = 8) -> Iterator[str]:
    """Every run of ``size`` characters of the secret: "not even partially" means none of them appear."""
    return (secret[i : i + size] for i in range(max(1, len(secret) - size + 1)))


def assert_absent(secret: str, text: str) -> None:
    leaked = [piece for piece in pieces(secret) if piece in text]
    assert not leaked, f"credential fragments leaked: {leaked[:3]}"


@pytest.mark.parametrize(("payload", "field", "secret", "cloud"), SHAPES)
def test_it_refuses_static_credentials_naming_the_field_not_the_value(
    payload: dict[str, object], field: str, secret: str, cloud: Cloud | None
) -> None:
    with pytest.raises(StaticCredentialRefused) as info:
        refuse_static_credentials(payload)
    message = str(info.value)
    assert f"'{field}'" in message
    assert field in info.value.fields
    assert "Kodori never accepts or stores static credentials" in message
    for alternative in [ALTERNATIVES[cloud]] if cloud else ALTERNATIVES.values():
        assert alternative in message
    assert_absent(secret, message)
    assert_absent(secret, repr(info.value.findings))
    assert_absent(secret, repr(info.value.__reduce__()))


@pytest.mark.parametrize(("payload", "field", "secret", "cloud"), SHAPES)
def test_it_redacts_credentials_from_logs(
    payload: dict[str, object], field: str, secret: str, cloud: object
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactStaticCredentialsFilter())  # on the handler, as the module docstring says
    parent = logging.getLogger("kodori.test_credentials")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    parent.propagate = False  # keep the test's own output out of pytest's capture
    try:
        child = logging.getLogger("kodori.test_credentials.child")  # records from children are covered too
        child.info("registration payload %r", payload)
        child.warning("as JSON: %s", json.dumps(payload))
        try:
            raise ValueError(f"could not parse {payload!r}")
        except ValueError:
            child.exception("failed")
    finally:
        parent.removeHandler(handler)
        parent.propagate = True
    output = stream.getvalue()
    assert "[REDACTED]" in output
    assert_absent(secret, output)


def test_it_finds_the_kind_and_cloud_of_each_credential() -> None:
    found = find_static_credentials({"id": AWS_KEY_ID, "azure": {"password": "x"}}, "config")
    assert {(f.field, f.kind, f.cloud) for f in found} == {
        ("config.id", CredentialKind.AWS_ACCESS_KEY_ID, Cloud.AWS),
        ("config.azure.password", CredentialKind.SECRET_FIELD, Cloud.AZURE),
    }


def test_it_checks_a_single_fields_name_and_value() -> None:
    assert [f.kind for f in find_static_credentials("hunter2", "client_secret")] == [
        CredentialKind.AZURE_CLIENT_SECRET
    ]
    assert [f.kind for f in find_static_credentials(AWS_KEY_ID, "role_arn")] == [
        CredentialKind.AWS_ACCESS_KEY_ID
    ]


def test_it_sees_every_value_of_a_repeated_form_field() -> None:
    data = QueryDict(mutable=True)
    data.setlist("note", [AWS_KEY_ID, "harmless"])  # .items() would only show the last one
    with pytest.raises(StaticCredentialRefused) as info:
        refuse_static_credentials(data)
    assert info.value.fields == ("note",)


def test_it_names_every_offending_field_once() -> None:
    with pytest.raises(StaticCredentialRefused) as info:
        refuse_static_credentials({"a": AWS_KEY_ID, "b": pem("PRIVATE KEY"), "c": "fine"})
    assert info.value.fields == ("a", "b")


def test_it_does_not_echo_unprintable_field_names() -> None:
    with pytest.raises(StaticCredentialRefused) as info:
        refuse_static_credentials({"pass\r\nword": "x"})
    assert "\r" not in str(info.value) and "\n" not in str(info.value)


# --- What must not be flagged -------------------------------------------------------------------------------

WIF_CONFIG = {
    "type": "external_account",
    "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/k/providers/k",
    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    "token_url": "https://sts.googleapis.com/v1/token",
    "credential_source": {"file": "/var/run/kodori/token", "format": {"type": "text"}},
}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"role_arn": "arn:aws:iam::111122223333:role/kodori/Kodori-KMS"}, id="role-arn"),
        pytest.param(
            {"key_arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
            id="key-arn",
        ),
        pytest.param(
            {"key_arn": "arn:aws:kms:us-east-1:111122223333:alias/Prod/Tenants/Acme2024"}, id="alias-arn"
        ),
        pytest.param({"external_id": "b3f0c1d2e4a5968778695a4b3c2d1e0f"}, id="external-id-hex"),
        pytest.param({"external_id": "Ab3dEf7hIj9kLm1nOp2qRs4tUv6wXy8zAb0cDe2f"}, id="external-id-40-random"),
        pytest.param({"ExternalId": "kodori-acme-Q2xv3hT9mZ"}, id="external-id-camel"),
        pytest.param(
            {"key_url": "https://myvault.vault.azure.net/keys/tenant-kek/0123456789abcdef0123456789abcdef"},
            id="key-url",
        ),
        pytest.param(
            {"crypto_key": "projects/my-project/locations/global/keyRings/kodori/cryptoKeys/tenant-kek"},
            id="gcp-path",
        ),
        pytest.param({"directory_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}, id="directory-guid"),
        pytest.param({"checksum": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}, id="sha1-hex"),
        pytest.param({"gcp": WIF_CONFIG}, id="workload-identity-config"),
        pytest.param({"gcp": json.dumps(WIF_CONFIG)}, id="workload-identity-config-json"),
        pytest.param({"csrfmiddlewaretoken": "abcDEF123ghiJKL456mnoPQR789stuVWX"}, id="csrf-token"),
        pytest.param({"password": "", "client_secret": None, "use_secret": False}, id="empty-secret-fields"),
        pytest.param(
            {"name": "Acme Corp", "wrap_method": "customer_kms_aws", "region": "eu-west-1"}, id="plain"
        ),
        pytest.param({"key_id": "1234abcd-12ab-34cd-56ef-1234567890ab", "version": 3}, id="key-id"),
    ],
)
def test_it_does_not_flag_federated_configuration(payload: dict[str, object]) -> None:
    refuse_static_credentials(payload)
    assert find_static_credentials(payload, "config") == []


def test_it_leaves_log_lines_without_credentials_untouched() -> None:
    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    record = logging.LogRecord("kodori", logging.INFO, __file__, 1, "tenant %s uses %s", ("acme", arn), None)
    assert RedactStaticCredentialsFilter().filter(record) is True
    assert record.getMessage() == f"tenant acme uses {arn}"
    assert record.msg == "tenant %s uses %s"  # the template is kept for tools that group by it


def test_the_refusal_survives_pickling_without_the_value() -> None:
    with pytest.raises(StaticCredentialRefused) as info:
        refuse_static_credentials({"aws_secret_access_key": AWS_SECRET})
    restored = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own object, round-tripped in memory
    assert str(restored) == str(info.value)
    assert_absent(AWS_SECRET, str(restored))
