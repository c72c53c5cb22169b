"""Azure Key Vault (and Managed HSM) keys: RSA-OAEP-256 wrapKey / unwrapKey through ``CryptographyClient``.

Identity: Kodori's multi-tenant application, signed in to the customer's directory with a federated credential
(``ClientAssertionCredential`` reading a workload-identity token file), never a client secret.

RSA-OAEP carries no associated data, so the context is bound inside the wrapped payload::

    "KAZ1" ‖ len(context) (1 byte) ‖ context (``KeyContext.as_bytes()``) ‖ plaintext

and checked on unwrap: a TKV wrapped for one tenant or version and moved to another unwraps to a payload whose
context does not match, which is refused as an integrity failure. (Only the holder of the private key, the
vault, can produce a valid OAEP ciphertext of a chosen payload's decryption, so the check cannot be forged by
editing the ciphertext.)

The probe reads the key's attributes first (``KeyClient.get_key``): wrapKey runs locally with the public key,
so a disabled, expired or not yet valid key would otherwise pass it; unwrap then proves access.

Emulator endpoints (``KODORI_AZURE_VAULT_ENDPOINT``, ``KODORI_AZURE_AUTHORITY_HOST``,
``KODORI_AZURE_CA_BUNDLE``) are deployment settings only: the tenant's key URL always names a real vault host,
and the override replaces the origin for every tenant alike.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from encryption.identifiers import InvalidKeyIdentifier, login_host_for, parse_azure_key_url

from .base import FailureKind, KeyContext, KeyProvider, ProviderError, call_with_retries

try:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.identity import ClientAssertionCredential
    from azure.keyvault.keys import KeyClient, KeyVaultKeyIdentifier
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
except ImportError as exc:  # pragma: no cover - the SDKs are base dependencies
    raise ImportError("Azure Key Vault keys need `pip install azure-keyvault-keys azure-identity`.") from exc

MAGIC = b"KAZ1"
ALGORITHM = KeyWrapAlgorithm.rsa_oaep_256

_credentials: dict[tuple[str, str, str], ClientAssertionCredential] = {}
_clients: dict[tuple[str, str], CryptographyClient] = {}
_key_clients: dict[tuple[str, str], KeyClient] = {}
# Key Vault refuses wrapKey / encrypt outside the key's nbf / exp window with 403 and one of these inner codes
# (unwrapKey / decrypt keep working, so data wrapped while the key was valid can still be recovered).
_OUTSIDE_VALIDITY = frozenset({"KeyExpired", "KeyNotYetValid"})
_lock = threading.Lock()


def _read_federated_token() -> str:
    path = settings.KODORI_AZURE_FEDERATED_TOKEN_FILE
    if not path:
        raise ProviderError(
            FailureKind.CONFIGURATION,
            "This deployment has no Azure federated token (KODORI_AZURE_FEDERATED_TOKEN_FILE is not set).",
        )
    return Path(path).read_text().strip()


def _transport_kwargs() -> dict[str, Any]:
    kwargs: dict[str, Any] = {"retry_total": 0}  # call_with_retries owns retries, with one deadline
    if settings.KODORI_AZURE_CA_BUNDLE:
        kwargs["connection_verify"] = settings.KODORI_AZURE_CA_BUNDLE
    return kwargs


def _authority(key_url: str) -> str:
    """Where Kodori signs in: the emulator's token endpoint, or the Entra host of the key's own cloud
    (public, China, US Government), so a sovereign-cloud vault gets a token it accepts."""
    if settings.KODORI_AZURE_AUTHORITY_HOST:
        return str(settings.KODORI_AZURE_AUTHORITY_HOST)
    try:
        return "https://" + login_host_for(parse_azure_key_url(key_url))
    except InvalidKeyIdentifier as exc:
        raise ProviderError(FailureKind.CONFIGURATION, str(exc)) from exc


def _credential(directory_id: str, authority: str) -> ClientAssertionCredential:
    client_id = settings.KODORI_AZURE_CLIENT_ID
    if not client_id:
        raise ProviderError(
            FailureKind.CONFIGURATION, "KODORI_AZURE_CLIENT_ID is not set in this deployment."
        )
    with _lock:
        key = (directory_id, client_id, authority)
        if key not in _credentials:
            extra: dict[str, Any] = {"authority": authority}
            if settings.KODORI_AZURE_CA_BUNDLE:
                extra["connection_verify"] = settings.KODORI_AZURE_CA_BUNDLE
            _credentials[key] = ClientAssertionCredential(
                tenant_id=directory_id, client_id=client_id, func=_read_federated_token, **extra
            )
        return _credentials[key]


def _effective_url(key_url: str) -> str:
    """The URL actually called: the tenant's key URL, or its path on the deployment's emulator."""
    override = settings.KODORI_AZURE_VAULT_ENDPOINT
    if not override:
        return key_url
    return override.rstrip("/") + urlsplit(key_url).path


def _client_kwargs() -> dict[str, Any]:
    kwargs = _transport_kwargs()
    if settings.KODORI_AZURE_VAULT_ENDPOINT:
        # The emulator's host is not *.vault.azure.net; production keeps the SDK's check.
        kwargs["verify_challenge_resource"] = False
    return kwargs


def _client(key_url: str, directory_id: str) -> CryptographyClient:
    with _lock:
        cached = _clients.get((key_url, directory_id))
    if cached is not None:
        return cached
    credential = _credential(directory_id, _authority(key_url))
    client = CryptographyClient(_effective_url(key_url), credential, **_client_kwargs())
    with _lock:
        _clients[(key_url, directory_id)] = client
    return client


def _key_client(vault_url: str, key_url: str, directory_id: str) -> KeyClient:
    """A ``KeyClient`` of the key's vault (``vault_url``, after the emulator override), to read attributes."""
    with _lock:
        cached = _key_clients.get((vault_url, directory_id))
    if cached is not None:
        return cached
    credential = _credential(directory_id, _authority(key_url))
    client = KeyClient(vault_url, credential, **_client_kwargs())
    with _lock:
        _key_clients[(vault_url, directory_id)] = client
    return client


def reset_clients() -> None:
    """Forget cached credentials and clients (tests and settings changes)."""
    with _lock:
        _credentials.clear()
        _clients.clear()
        _key_clients.clear()


class AzureKeyProvider(KeyProvider):
    """An RSA or RSA-HSM key in a customer's (or the operator's) Key Vault."""

    def __init__(self, key_url: str, directory_id: str) -> None:
        self.key_url = key_url
        self.directory_id = directory_id
        self.suffix = key_url[-12:]

    def _classify(self, exc: Exception, operation: str = "unwrapKey") -> ProviderError:
        where = f"Your Azure Key Vault key …{self.suffix}"
        if isinstance(exc, ResourceNotFoundError):
            return ProviderError(
                FailureKind.NOT_FOUND, f"{where} was not found (deleted, or a wrong key URL)."
            )
        if isinstance(exc, ClientAuthenticationError):
            return ProviderError(
                FailureKind.DENIED,
                f"{where}: Kodori's application could not sign in to your directory {self.directory_id} "
                "(consent removed or federated credential revoked).",
            )
        if isinstance(exc, HttpResponseError):
            code = _inner_code(exc)
            status = exc.status_code or 0
            if status == 403 and code == "KeyDisabled":
                return ProviderError(FailureKind.DISABLED, f"{where} is disabled in your vault.")
            if status == 403 and code in _OUTSIDE_VALIDITY:
                return ProviderError(
                    FailureKind.DISABLED,
                    f"{where} is outside its validity period (activation or expiry date) and refused "
                    f"{operation}. Change or remove the key's activation and expiry dates in your vault.",
                )
            if status in (401, 403):
                return ProviderError(
                    FailureKind.DENIED,
                    f"{where} denied {operation} to Kodori's application. Grant it the Key Vault Crypto "
                    "Service Encryption User role (or an access policy with get, wrapKey, unwrapKey) "
                    "on the key.",
                )
            if status == 429 or status >= 500:
                return ProviderError(
                    FailureKind.TRANSIENT, f"{where}: the vault is busy or unavailable ({status})."
                )
            if status == 400:
                return ProviderError(FailureKind.INTEGRITY, f"{where} refused the wrapped value as invalid.")
            return ProviderError(
                FailureKind.TRANSIENT, f"{where}: unexpected answer {status} from the vault."
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError | TimeoutError | ConnectionError):
            return ProviderError(FailureKind.TRANSIENT, f"{where}: the vault could not be reached.")
        return ProviderError(FailureKind.TRANSIENT, f"{where}: {type(exc).__name__}.")

    def probe(self, tenant_id: int) -> None:
        """Read the key's attributes, refusing a disabled, expired or not yet valid key; wrap and unwrap.

        Wrapping with an RSA key runs locally with the public key the SDK fetched once (and the SDK checks no
        dates for a key given by URL), so only the attributes tell whether Kodori may wrap new keys with it;
        unwrap, which always goes to the vault, is what proves access.
        """
        self.check_attributes()
        super().probe(tenant_id)

    def check_attributes(self) -> None:
        """``GET`` the key (the ``get`` permission Kodori's grant includes) and check ``enabled``,
        ``expires_on`` (``exp``) and ``not_before`` (``nbf``): any of them out of bounds is ``DISABLED``."""
        where = f"Your Azure Key Vault key …{self.suffix}"
        try:
            identifier = KeyVaultKeyIdentifier(_effective_url(self.key_url))
        except ValueError as exc:
            raise ProviderError(
                FailureKind.CONFIGURATION, f"{where} is not a Key Vault key URL Kodori can read."
            ) from exc
        client = _key_client(identifier.vault_url, self.key_url, self.directory_id)
        key = call_with_retries(
            lambda: client.get_key(identifier.name, identifier.version),
            lambda exc: self._classify(exc, "get"),
        )
        properties = key.properties
        now = datetime.now(UTC)
        if properties.enabled is False:
            raise ProviderError(
                FailureKind.DISABLED,
                f"{where} is disabled (its enabled attribute is false). Enable the key in your vault.",
            )
        if properties.expires_on is not None and properties.expires_on <= now:
            raise ProviderError(
                FailureKind.DISABLED,
                f"{where} expired on {_when(properties.expires_on)} (its expiration date, attribute exp), "
                "so Key Vault no longer wraps with it. Set a later expiration date, or remove it, in your "
                "vault.",
            )
        if properties.not_before is not None and properties.not_before > now:
            raise ProviderError(
                FailureKind.DISABLED,
                f"{where} is not valid until {_when(properties.not_before)} (its activation date, attribute "
                "nbf). Remove the activation date, or set it in the past, in your vault.",
            )

    @sensitive_variables("plaintext", "payload")
    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        bound = context.as_bytes()
        payload = MAGIC + len(bound).to_bytes(1, "big") + bound + plaintext
        client = _client(self.key_url, self.directory_id)
        result = call_with_retries(lambda: client.wrap_key(ALGORITHM, payload), self._classify)
        return bytes(result.encrypted_key)

    @sensitive_variables("payload")
    def unwrap(self, ciphertext: bytes, context: KeyContext) -> bytes:
        client = _client(self.key_url, self.directory_id)
        payload = bytes(
            call_with_retries(lambda: client.unwrap_key(ALGORITHM, ciphertext), self._classify).key
        )
        bound = context.as_bytes()
        header = MAGIC + len(bound).to_bytes(1, "big") + bound
        if not payload.startswith(header):
            raise ProviderError(
                FailureKind.INTEGRITY, "The wrapped key belongs to another tenant or key version."
            )
        return payload[len(header) :]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _inner_code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    if isinstance(inner, dict) and inner.get("code"):
        return str(inner["code"])
    return str(getattr(error, "code", "") or "")
