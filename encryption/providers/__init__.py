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
    raise ProviderError(
        FailureKind.CONFIGURATION,
        f"{method.label} keys are not available in this deployment yet; the tenant stays on its current key.",
    )
