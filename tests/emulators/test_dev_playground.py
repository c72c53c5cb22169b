"""`make run`'s emulators as a playground: demo keys and roles per tenant, kept across restarts, printed
ready to paste, and switched off and on again from the command line."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.test import override_settings

from emulators.dev import DevEmulators, provision_demo_tenant, start_all
from encryption import keyring
from encryption.forms import FORMS
from encryption.models import TenantKey, WrapMethod
from encryption.providers import KeyContext, ProviderError, provider_for
from encryption.providers import aws as aws_provider
from encryption.providers import azure as azure_provider
from encryption.providers.aws import AwsKeyProvider
from encryption.services import external_id_for, validate_registration
from tenants.models import Tenant

CTX = KeyContext(tenant_id=7, key_version=1)


@contextmanager
def kodori_pointed_at(running: DevEmulators, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kodori's settings and environment as `make run` sets them for its web and worker processes."""
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in running.env.items():
        monkeypatch.setenv(name, value)
    kodori = {name: value for name, value in running.env.items() if name.startswith("KODORI_")}
    with override_settings(**kodori):
        # Cached clients and role sessions would carry the previous emulator's credentials.
        keyring.cache.clear()
        aws_provider.reset_clients()
        azure_provider.reset_clients()
        try:
            yield
        finally:
            aws_provider.reset_clients()
            azure_provider.reset_clients()


def assume(running: DevEmulators, role_arn: str, external_id: str) -> dict[str, Any]:
    assert running.aws is not None
    key, secret = running.aws.kodori_credentials
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=running.aws.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    return dict(
        sts.assume_role(RoleArn=role_arn, RoleSessionName="kodori-test", ExternalId=external_id)[
            "Credentials"
        ]
    )


def test_the_aws_demo_key_and_role_survive_a_restart(
    tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    external_id = external_id_for(tenant)
    running = start_all(tmp_path, fixed_ports=False)
    try:
        assert running.aws is not None
        ids = provision_demo_tenant(running.aws, tenant.slug, external_id)
        assert ids["alias_arn"].endswith(":alias/kodori-demo-acme")
        assert ids["role_arn"] == "arn:aws:iam::123456789012:role/kodori-demo-acme"

        assert assume(running, ids["role_arn"], external_id)["AccessKeyId"]
        with pytest.raises(ClientError) as refused:
            assume(running, ids["role_arn"], "kodori-not-this-tenants-id")
        assert refused.value.response["Error"]["Code"] == "AccessDenied"

        with kodori_pointed_at(running, monkeypatch):
            provider = AwsKeyProvider(
                ids["key_arn"], tenant_id=tenant.pk, role_arn=ids["role_arn"], external_id=external_id
            )
            wrapped = provider.wrap(b"k" * 32, CTX)
            by_alias = AwsKeyProvider(
                ids["alias_arn"], tenant_id=tenant.pk, role_arn=ids["role_arn"], external_id=external_id
            )
            assert by_alias.unwrap(by_alias.wrap(b"a" * 32, CTX), CTX) == b"a" * 32
    finally:
        running.stop()
    assert (tmp_path / "aws" / "state.json").stat().st_mode & 0o777 == 0o600

    running = start_all(tmp_path, fixed_ports=False)  # moto starts empty: everything comes from the state dir
    try:
        assert running.aws is not None
        assert provision_demo_tenant(running.aws, tenant.slug, external_id) == ids  # idempotent: same ARNs
        with pytest.raises(ClientError):
            assume(running, ids["role_arn"], "kodori-not-this-tenants-id")
        with kodori_pointed_at(running, monkeypatch):
            provider = AwsKeyProvider(
                ids["key_arn"], tenant_id=tenant.pk, role_arn=ids["role_arn"], external_id=external_id
            )
            assert provider.unwrap(wrapped, CTX) == b"k" * 32
    finally:
        running.stop()


def test_a_key_disabled_in_the_emulator_stays_disabled_after_a_restart(tmp_path: Path) -> None:
    running = start_all(tmp_path, fixed_ports=False)
    try:
        assert running.aws is not None
        ids = provision_demo_tenant(running.aws, "acme", "kodori-ext-for-acme")
        running.aws.disable_key(ids["alias_arn"])
        running.aws.revoke_role_access("kodori-demo-acme")
    finally:
        running.stop()
    running = start_all(tmp_path, fixed_ports=False)
    try:
        assert running.aws is not None
        kms = running.aws._admin("kms")
        assert kms.describe_key(KeyId=ids["key_arn"])["KeyMetadata"]["KeyState"] == "Disabled"
        # Provisioning again keeps the customer's revocation; restoring puts the policy back.
        provision_demo_tenant(running.aws, "acme", "kodori-ext-for-acme")
        iam = running.aws._admin("iam")
        assert iam.list_role_policies(RoleName="kodori-demo-acme")["PolicyNames"] == []
        running.aws.restore_role_access("kodori-demo-acme")
        assert iam.list_role_policies(RoleName="kodori-demo-acme")["PolicyNames"] == ["kodori-kms"]
    finally:
        running.stop()


@pytest.fixture
def playground(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevEmulators]:
    running = start_all(tmp_path / "emulators", fixed_ports=False)
    try:
        with kodori_pointed_at(running, monkeypatch):
            yield running
    finally:
        running.stop()


def printed_values(text: str) -> dict[str, dict[str, str]]:
    """``emulator_demo``'s output as {section: {label: value}}; sections are a tenant's name or a cloud."""
    found: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("      "):
            section = stripped.rstrip(":").split(" (")[0]
        elif line.startswith("      "):
            label, value = stripped.rsplit(None, 1)
            found.setdefault(section, {})[label.strip()] = value
    return found


def test_make_run_prints_identifiers_each_register_form_accepts(
    db: None, playground: DevEmulators, tmp_path: Path
) -> None:
    call_command("seed_demo", password="demo-password-123", stdout=io.StringIO())
    out = io.StringIO()
    call_command("emulator_demo", "--state-dir", str(tmp_path / "emulators"), stdout=out)
    values = printed_values(out.getvalue())
    acme, globex = Tenant.objects.get(slug="acme"), Tenant.objects.get(slug="globex")
    assert values["Acme Corp"]["KMS key ARN"] != values["Globex"]["KMS key ARN"]

    def accepted(tenant: Tenant, cloud: str, data: dict[str, str]) -> TenantKey:
        form = FORMS[cloud](data)
        assert form.is_valid(), form.errors
        key_id, config = validate_registration(
            tenant, form.method, form.cleaned_data["key_id"], form.config()
        )
        return TenantKey(tenant=tenant, wrap_method=form.method, key_id=key_id, config=config)

    for tenant, name in ((acme, "Acme Corp"), (globex, "Globex")):
        aws = values[name]
        assert tenant.cloud_kms_enabled
        for key_field in ("KMS key ARN", "or alias ARN"):
            key = accepted(
                tenant,
                "aws",
                {"key_id": aws[key_field], "role_arn": aws["Role ARN"], "region": aws["Region"]},
            )
            assert key.key_id == aws[key_field]
            assert key.config["external_id"] == external_id_for(tenant)
            provider_for(key).probe(tenant.pk)  # what verification does once the form is posted
        azure = accepted(
            tenant,
            "azure",
            {
                "key_id": values["Azure Key Vault"]["Key URL"],
                "directory_id": values["Azure Key Vault"]["Directory id"],
            },
        )
        assert azure.key_id == values["Azure Key Vault"]["Key URL"]
        provider_for(azure).probe(tenant.pk)
        gcp = accepted(tenant, "gcp", {"key_id": values["GCP Cloud KMS"]["CryptoKey"]})
        assert gcp.key_id == values["GCP Cloud KMS"]["CryptoKey"]
        provider_for(gcp).probe(tenant.pk)

    # A tenant's role trusts its own ExternalId only: Globex's ExternalId does not open Acme's role.
    with pytest.raises(ClientError):
        assume(playground, values["Acme Corp"]["Role ARN"], external_id_for(globex))

    again = io.StringIO()
    call_command("emulator_demo", "--state-dir", str(tmp_path / "emulators"), stdout=again)
    assert again.getvalue() == out.getvalue()


def test_emulator_key_disables_and_enables_each_clouds_key(playground: DevEmulators, tmp_path: Path) -> None:
    assert playground.aws is not None and playground.gcp is not None
    state = ["--state-dir", str(tmp_path / "emulators")]
    ids = provision_demo_tenant(playground.aws, "acme", "kodori-ext-for-acme")
    kms = playground.aws._admin("kms")

    call_command("emulator_key", "aws", "disable", ids["alias_arn"], *state, stdout=io.StringIO())
    assert kms.describe_key(KeyId=ids["key_arn"])["KeyMetadata"]["KeyState"] == "Disabled"
    call_command("emulator_key", "aws", "enable", ids["key_arn"], *state, stdout=io.StringIO())
    assert kms.describe_key(KeyId=ids["key_arn"])["KeyMetadata"]["KeyState"] == "Enabled"
    call_command("emulator_key", "aws", "revoke", ids["role_arn"], *state, stdout=io.StringIO())
    assert playground.aws._admin("iam").list_role_policies(RoleName="kodori-demo-acme")["PolicyNames"] == []
    call_command("emulator_key", "aws", "restore", ids["role_arn"], *state, stdout=io.StringIO())

    gcp_key = playground.env["KODORI_EMULATOR_GCP_KEY"]
    gcp_provider = provider_for(
        TenantKey(tenant_id=7, wrap_method=WrapMethod.CUSTOMER_KMS_GCP, key_id=gcp_key)
    )
    call_command("emulator_key", "gcp", "disable", gcp_key, *state, stdout=io.StringIO())
    with pytest.raises(ProviderError) as disabled:
        gcp_provider.probe(7)
    assert disabled.value.kind.seals
    call_command("emulator_key", "gcp", "enable", gcp_key, *state, stdout=io.StringIO())
    gcp_provider.probe(7)

    azure_url = playground.env["KODORI_EMULATOR_AZURE_KEY_URL"]
    azure_key = TenantKey(
        tenant_id=7,
        wrap_method=WrapMethod.CUSTOMER_KMS_AZURE,
        key_id=azure_url,
        config={"directory_id": playground.env["KODORI_EMULATOR_AZURE_DIRECTORY_ID"]},
    )
    call_command("emulator_key", "azure", "disable", azure_url, *state, stdout=io.StringIO())
    with pytest.raises(ProviderError) as disabled:
        provider_for(azure_key).probe(7)
    assert disabled.value.kind.seals
    call_command("emulator_key", "azure", "enable", azure_url, *state, stdout=io.StringIO())
    provider_for(azure_key).probe(7)


def test_the_fixed_identifiers_match_the_emulators_defaults() -> None:
    """``emulators.dev`` repeats two defaults so that importing it (management commands) starts nothing."""
    from emulators import dev
    from emulators.azure_keyvault import DEFAULT_VAULT_PORT
    from emulators.gcp_kms import DEFAULT_PROJECT

    assert (dev.AZURE_VAULT_PORT, dev.GCP_DEMO_PROJECT) == (DEFAULT_VAULT_PORT, DEFAULT_PROJECT)
