"""One registration form per cloud. Fields hold identifiers only; validation happens in the service."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import WrapMethod


class AwsKeyForm(forms.Form):
    method = WrapMethod.CUSTOMER_KMS_AWS
    key_id = forms.CharField(
        label="KMS key ARN or alias ARN", max_length=2048,
        help_text="arn:aws:kms:&lt;region&gt;:&lt;account&gt;:key/&lt;key id&gt; or …:alias/&lt;name&gt;",
    )  # fmt: skip
    region = forms.CharField(
        label="Region", max_length=32, required=False, help_text="optional: taken from the ARN; must match it"
    )
    role_arn = forms.CharField(
        label="Role ARN Kodori assumes",
        max_length=2048,
        help_text="arn:aws:iam::&lt;account&gt;:role/&lt;name&gt;",
    )

    def config(self) -> dict[str, Any]:
        config = {"role_arn": self.cleaned_data["role_arn"]}
        if self.cleaned_data.get("region"):
            config["region"] = self.cleaned_data["region"]
        return config


class AzureKeyForm(forms.Form):
    method = WrapMethod.CUSTOMER_KMS_AZURE
    key_id = forms.CharField(
        label="Key URL", max_length=2048,
        help_text="https://&lt;vault&gt;.vault.azure.net/keys/&lt;name&gt;/&lt;version&gt;",
    )  # fmt: skip
    directory_id = forms.CharField(label="Directory (tenant) id", max_length=64, help_text="a GUID")

    def config(self) -> dict[str, Any]:
        return {"directory_id": self.cleaned_data["directory_id"]}


class GcpKeyForm(forms.Form):
    method = WrapMethod.CUSTOMER_KMS_GCP
    key_id = forms.CharField(
        label="CryptoKey resource name", max_length=2048,
        help_text="projects/&lt;project&gt;/locations/&lt;location&gt;/keyRings/&lt;ring&gt;/cryptoKeys/&lt;key&gt;",
    )  # fmt: skip

    def config(self) -> dict[str, Any]:
        return {}


KeyForm = AwsKeyForm | AzureKeyForm | GcpKeyForm
FORMS: dict[str, type[KeyForm]] = {
    "aws": AwsKeyForm,
    "azure": AzureKeyForm,
    "gcp": GcpKeyForm,
}


class DisableKeyForm(forms.Form):
    """Disabling the active key seals the tenant, so the owner types the tenant's slug to confirm."""

    confirm = forms.CharField(label="Type the tenant's short name to confirm", required=False, max_length=100)
