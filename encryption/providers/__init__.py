"""Key providers, chosen by a key's wrap method. Each cloud's module imports its SDK only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import FailureKind, KeyContext, KeyProvider, ProviderError

if TYPE_CHECKING:
    from encryption.models import TenantKey

__all__ = ["FailureKind", "KeyContext", "KeyProvider", "ProviderError", "provider_for"]


def provider_for(key: TenantKey) -> KeyProvider:
    """The provider that reaches ``key``'s KEK."""
    from encryption.models import WrapMethod

    method = WrapMethod(key.wrap_method)
    if method == WrapMethod.GLOBAL:
        from .local import GlobalKeyProvider

        return GlobalKeyProvider(key.tenant_id)
    if method in (WrapMethod.CUSTOMER_KMS_AZURE, WrapMethod.OPERATOR_KMS_AZURE):
        from django.conf import settings

        from .azure import AzureKeyProvider

        if method == WrapMethod.OPERATOR_KMS_AZURE:
            return AzureKeyProvider(
                key.key_id or settings.KODORI_AZURE_OPERATOR_KEY_URL,
                settings.KODORI_AZURE_OPERATOR_DIRECTORY_ID,
            )
        return AzureKeyProvider(key.key_id, str(key.config.get("directory_id", "")))
    if method in (WrapMethod.CUSTOMER_KMS_AWS, WrapMethod.OPERATOR_KMS_AWS):
        from .aws import AwsKeyProvider

        if method == WrapMethod.OPERATOR_KMS_AWS:
            return AwsKeyProvider(_operator_key(key, "KODORI_AWS_OPERATOR_KEY_ARN"))
        # Only these three non-secret fields are read from config; credentials there are never used.
        return AwsKeyProvider(
            key.key_id,
            tenant_id=key.tenant_id,
            role_arn=str(key.config.get("role_arn", "")),
            external_id=str(key.config.get("external_id", "")),
            region=str(key.config.get("region", "")),
        )
    if method in (WrapMethod.CUSTOMER_KMS_GCP, WrapMethod.OPERATOR_KMS_GCP):
        from .gcp import GcpKeyProvider

        if method == WrapMethod.OPERATOR_KMS_GCP:
            return GcpKeyProvider(_operator_key(key, "KODORI_GCP_OPERATOR_KEY"))
        return GcpKeyProvider(key.key_id, tenant_id=key.tenant_id)
    raise ProviderError(
        FailureKind.CONFIGURATION,
        f"No provider handles wrap method {method.value}; the tenant stays on its current key.",
    )


def _operator_key(key: TenantKey, setting: str) -> str:
    """The operator key's identifier: the row's own, or the deployment's from ``setting``."""
    from django.conf import settings

    identifier = key.key_id or str(getattr(settings, setting))
    if not identifier:
        raise ProviderError(FailureKind.CONFIGURATION, f"{setting} is not set in this deployment.")
    return identifier
