"""Client-side helpers for the AWS emulator tests: Kodori's AssumeRole + KMS construction, isolation from real
AWS configuration.

``tenant_kms`` is the construction ``docs/emulators.md`` prescribes for Kodori's AWS provider: keep the two in
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulators.aws import AwsKmsEmulator

REGION = "us-east-1"
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})
AMBIENT_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)  # fmt: skip


def isolate_from_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Empty config and credential files, no ambient credentials, no instance metadata service."""
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in AMBIENT_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class Tenant:
    key_arn: str
    role_arn: str
    role_name: str
    external_id: str


def sts_client(endpoint_url: str, config: Config | None = None) -> Any:
    """Kodori's STS client: its own identity from the default chain, the emulator as endpoint."""
    return boto3.session.Session(region_name=REGION).client("sts", endpoint_url=endpoint_url, config=config)


def tenant_kms(
    endpoint_url: str, tenant: Tenant, config: Config | None = None, external_id: str | None = None
) -> Any:
    """Exactly what Kodori's provider does: AssumeRole with the tenant's ExternalId, KMS with the session."""
    credentials = sts_client(endpoint_url).assume_role(
        RoleArn=tenant.role_arn,
        RoleSessionName="kodori-tenant-acme",
        ExternalId=external_id or tenant.external_id,
        DurationSeconds=900,
    )["Credentials"]
    return boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=config or NO_RETRIES,
    )


def customer_root_client(emulator: AwsKmsEmulator, service: str) -> Any:
    """The customer account's own administrator, as when they edit their key or role themselves."""
    key, secret = emulator.customer_root
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=emulator.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=NO_RETRIES,
    )


def error_code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])
