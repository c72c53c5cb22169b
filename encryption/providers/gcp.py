"""GCP Cloud KMS keys: ``Encrypt`` / ``Decrypt`` through google-cloud-kms, the context bound as AAD.

Identity: Kodori's own workload identity federation pool (a deployment-level ``external_account``: audience
``KODORI_GCP_WIF_AUDIENCE``, Kodori's OIDC token in ``KODORI_GCP_SUBJECT_TOKEN_FILE``), exchanged at Google's
STS for an access token, optionally impersonating a service account. The pool is Kodori's, not the
customer's: in GCP BYOK the customer grants *Kodori's* identity ``roles/cloudkms.cryptoKeyEncrypterDecrypter``
on its key, as with any other Google-side service agent. A tenant never names a pool or an STS audience, so it
can never make Kodori exchange tokens somewhere of its choosing. With ``KODORI_GCP_TENANT_SERVICE_ACCOUNT`` (a
template with ``{tenant_id}``) each tenant's calls act as that tenant's own service account, and each customer
grants its key to its own account only: GCP's counterpart of the AWS ExternalId, so one tenant cannot register
another tenant's key path and have Kodori use it.

Both directions carry the CRC32C integrity fields (``google_crc32c``): Encrypt sends ``plaintext_crc32c`` and
``additional_authenticated_data_crc32c`` and checks ``verified_plaintext_crc32c``,
``verified_additional_authenticated_data_crc32c``, the returned ``ciphertext_crc32c`` and the key ``name``;
Decrypt sends ``ciphertext_crc32c`` and the AAD checksum and checks the returned ``plaintext_crc32c``. A
mismatch means the bytes were damaged in transit, not that the key or data are wrong, so it is TRANSIENT and
retried under the deadline, as Google's data-integrity guide recommends; it never seals a tenant.

The probe first reads the version Encrypt uses (``GetCryptoKey``'s primary, or the pinned version) and refuses
it unless ENABLED: Decrypt picks the version a ciphertext names, so an older enabled version keeps unwrapping
while the primary is disabled. Without ``roles/cloudkms.viewer`` that read is denied, which is not a refusal:
Cloud KMS then refuses the probe's Encrypt itself (FAILED_PRECONDITION), classified with the same message.

Credentials are refreshed explicitly before a call (a refused token exchange then raises ``OAuthError`` /
``RefreshError`` at once instead of surfacing as a retried ``UNAVAILABLE`` from the gRPC auth plugin), calls
pass ``retry=None`` (``call_with_retries`` owns retries) and a timeout. An ``UNAUTHENTICATED`` answer to a
cached token (revoked or expired early) gets one fresh token and one more try before it counts as denied.

Emulator settings (``KODORI_GCP_KMS_ENDPOINT``, ``KODORI_GCP_STS_URL``, ``KODORI_GCP_IAM_CREDENTIALS_URL``,
``KODORI_GCP_UNIVERSE_DOMAIN``) are deployment settings only. The endpoint override uses gRPC *local* channel
credentials, which gRPC refuses for any peer but loopback, so a bearer token can never leave the machine
through it.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from encryption.identifiers import InvalidKeyIdentifier, parse_gcp_crypto_key

from .base import FailureKind, KeyContext, KeyProvider, ProviderError, call_with_retries

try:
    import google_crc32c
    import grpc
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.auth import identity_pool
    from google.auth.transport.requests import Request
    from google.cloud import kms_v1
    from google.cloud.kms_v1.services.key_management_service.transports import (
        KeyManagementServiceGrpcTransport,
    )
except ImportError as exc:  # pragma: no cover - the SDKs are base dependencies
    raise ImportError(
        "GCP Cloud KMS keys need `pip install google-cloud-kms google-auth google-crc32c`."
    ) from exc

KMS_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SUBJECT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a type name, not a secret
DEFAULT_STS_URL = "https://sts.googleapis.com/v1/token"
DEFAULT_IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
# STS answers these OAuth errors when it refuses Kodori's subject token or audience: access is denied.
REFUSED_GRANTS = frozenset(
    {"invalid_grant", "invalid_target", "unauthorized_client", "access_denied", "invalid_scope"}
)
# Cloud KMS's FAILED_PRECONDITION for a version that is not ENABLED: "<version> is not enabled, current state
# is: DISABLED."
_NOT_ENABLED = re.compile(r"(\S+/cryptoKeyVersions/(\d+)) is not enabled, current state is: ([A-Z_]+)")
_STATE_WORDS = {
    "DISABLED": "is disabled",
    "DESTROY_SCHEDULED": "is scheduled for destruction",
    "DESTROYED": "is destroyed",
}
TRANSIENT_API_ERRORS = (
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.Aborted,
    api_exceptions.Unknown,
)


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


class ChecksumMismatch(Exception):
    """A CRC32C integrity field did not match: the request or the answer was damaged in transit."""


def verify_encrypt_response(response: kms_v1.EncryptResponse, key_name: str) -> None:
    """Raise :class:`ChecksumMismatch` unless KMS verified what it got and what it sent back is intact."""
    if not response.verified_plaintext_crc32c:
        raise ChecksumMismatch("KMS did not verify the plaintext checksum")
    if not response.verified_additional_authenticated_data_crc32c:
        raise ChecksumMismatch("KMS did not verify the additional authenticated data checksum")
    if response.ciphertext_crc32c is None or response.ciphertext_crc32c != crc32c(response.ciphertext):
        raise ChecksumMismatch("the returned ciphertext does not match its checksum")
    if response.name != key_name and not response.name.startswith(key_name + "/cryptoKeyVersions/"):
        raise ChecksumMismatch("the answer names another key")


def verify_decrypt_response(response: kms_v1.DecryptResponse) -> None:
    if response.plaintext_crc32c is None or response.plaintext_crc32c != crc32c(response.plaintext):
        raise ChecksumMismatch("the returned plaintext does not match its checksum")


@dataclass
class _Identity:
    """One federated identity (optionally impersonating a service account) and the client that uses it."""

    credentials: identity_pool.Credentials
    client: kms_v1.KeyManagementServiceClient
    request: Request
    service_account: str
    lock: threading.Lock

    def ensure_token(self, *, force: bool = False) -> None:
        # Refreshing here, not in the gRPC auth plugin, makes a refused exchange raise OAuthError or
        # RefreshError at once.
        with self.lock:
            if force or not self.credentials.valid:
                self.credentials.refresh(self.request)


_identities: dict[tuple[str, ...], _Identity] = {}
_lock = threading.Lock()


def _required(name: str) -> str:
    value = str(getattr(settings, name))
    if not value:
        raise ProviderError(FailureKind.CONFIGURATION, f"{name} is not set in this deployment.")
    return value


def _build_identity(service_account: str) -> _Identity:
    universe = settings.KODORI_GCP_UNIVERSE_DOMAIN
    extra: dict[str, Any] = {}
    if service_account:
        origin = (settings.KODORI_GCP_IAM_CREDENTIALS_URL or DEFAULT_IAM_CREDENTIALS_URL).rstrip("/")
        extra["service_account_impersonation_url"] = (
            f"{origin}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"
        )
    if universe:
        extra["universe_domain"] = universe
    credentials = identity_pool.Credentials(
        audience=_required("KODORI_GCP_WIF_AUDIENCE"),
        subject_token_type=SUBJECT_TOKEN_TYPE,
        token_url=settings.KODORI_GCP_STS_URL or DEFAULT_STS_URL,
        credential_source={"file": _required("KODORI_GCP_SUBJECT_TOKEN_FILE"), "format": {"type": "text"}},
        scopes=[KMS_SCOPE],
        **extra,
    )
    options: dict[str, str] = {}
    transport: Any = None
    if settings.KODORI_GCP_KMS_ENDPOINT:
        options["api_endpoint"] = settings.KODORI_GCP_KMS_ENDPOINT
        # Local channel credentials: bearer tokens travel, and gRPC refuses any peer that is not loopback.
        transport = functools.partial(
            KeyManagementServiceGrpcTransport,
            ssl_channel_credentials=grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
        )
    if universe:
        options["universe_domain"] = universe
    client = kms_v1.KeyManagementServiceClient(
        credentials=credentials, transport=transport, client_options=options or None
    )
    return _Identity(credentials, client, Request(requests.Session()), service_account, threading.Lock())


def _identity(service_account: str) -> _Identity:
    key = (
        service_account,
        settings.KODORI_GCP_WIF_AUDIENCE,
        settings.KODORI_GCP_SUBJECT_TOKEN_FILE,
        settings.KODORI_GCP_STS_URL,
        settings.KODORI_GCP_IAM_CREDENTIALS_URL,
        settings.KODORI_GCP_KMS_ENDPOINT,
        settings.KODORI_GCP_UNIVERSE_DOMAIN,
    )
    with _lock:
        identity = _identities.get(key)
        if identity is None:
            identity = _identities[key] = _build_identity(service_account)
        return identity


def reset_clients() -> None:
    """Forget cached credentials and clients (tests and settings changes)."""
    with _lock:
        _identities.clear()


def tenant_service_account(tenant_id: int) -> str:
    """The service account customer-mode calls of ``tenant_id`` act as ("" for the federated principal)."""
    template = settings.KODORI_GCP_TENANT_SERVICE_ACCOUNT
    if template:
        # replace, not format(): the setting is text, not a format string with attribute access.
        return template.replace("{tenant_id}", str(tenant_id))
    return str(settings.KODORI_GCP_SERVICE_ACCOUNT)


class GcpKeyProvider(KeyProvider):
    """A symmetric (ENCRYPT_DECRYPT) CryptoKey in the customer's or the operator's Cloud KMS."""

    def __init__(self, key_name: str, *, tenant_id: int | None = None) -> None:
        """Customer mode when ``tenant_id`` is given (per-tenant service account, if configured)."""
        self.key_name = key_name
        self.suffix = key_name[-12:]
        self.tenant_id = tenant_id
        try:
            parsed = parse_gcp_crypto_key(key_name)
        except InvalidKeyIdentifier as exc:
            raise ProviderError(FailureKind.CONFIGURATION, str(exc)) from exc
        # Encrypt may name a version (pinning it); Decrypt always names the CryptoKey, never a version.
        self.crypto_key = key_name.split("/cryptoKeyVersions/")[0] if parsed.version else key_name
        self.service_account = (
            tenant_service_account(tenant_id)
            if tenant_id is not None
            else str(settings.KODORI_GCP_SERVICE_ACCOUNT)
        )

    def _call(self, operation: str, request: Callable[[kms_v1.KeyManagementServiceClient], Any]) -> Any:
        def attempt() -> Any:
            identity = _identity(self.service_account)
            identity.ensure_token()
            try:
                return request(identity.client)
            except api_exceptions.Unauthenticated:
                # The cached token was revoked or expired early: one fresh token, one more try.
                identity.ensure_token(force=True)
                return request(identity.client)

        return call_with_retries(attempt, lambda exc: self._classify(exc, operation))

    @sensitive_variables("plaintext", "request")
    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        aad = context.as_bytes()
        request = {
            "name": self.key_name,
            "plaintext": plaintext,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": crc32c(plaintext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def encrypt(client: kms_v1.KeyManagementServiceClient) -> bytes:
            response = client.encrypt(request=request, retry=None, timeout=_timeout())
            verify_encrypt_response(response, self.key_name)
            return bytes(response.ciphertext)

        return bytes(self._call("Encrypt", encrypt))

    @sensitive_variables("response")
    def unwrap(self, ciphertext: bytes, context: KeyContext) -> bytes:
        aad = context.as_bytes()
        request = {
            "name": self.crypto_key,
            "ciphertext": ciphertext,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": crc32c(ciphertext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def decrypt(client: kms_v1.KeyManagementServiceClient) -> bytes:
            response = client.decrypt(request=request, retry=None, timeout=_timeout())
            verify_decrypt_response(response)
            return bytes(response.plaintext)

        return bytes(self._call("Decrypt", decrypt))

    @property
    def pinned(self) -> bool:
        """Whether the key id names a version, which Encrypt then uses instead of the primary."""
        return self.key_name != self.crypto_key

    def probe(self, tenant_id: int) -> None:
        """Check the version Encrypt uses is ENABLED, then wrap and unwrap a random value (``KeyProvider``).

        Decrypt picks the version a ciphertext names, so an older enabled version keeps unwrapping while the
        primary is disabled or scheduled for destruction; the probe must not call such a key healthy.
        """
        self.check_version_in_use()
        super().probe(tenant_id)

    def check_version_in_use(self) -> None:
        """Refuse (``DISABLED``) unless the version Encrypt uses is ENABLED: the primary, or the pinned one.

        Reads it with ``GetCryptoKey`` (``GetCryptoKeyVersion`` for a pinned version), which needs
        ``cloudkms.cryptoKeys.get`` / ``cloudkms.cryptoKeyVersions.get`` (``roles/cloudkms.viewer``). The
        Encrypter/Decrypter role lacks them, so a ``PERMISSION_DENIED`` here is not a refusal: the probe's
        Encrypt then proves the same, since Cloud KMS encrypts only with an ENABLED primary (or pinned)
        version and answers FAILED_PRECONDITION otherwise, classified with the same message.
        """

        def read(client: kms_v1.KeyManagementServiceClient) -> tuple[str, str] | None:
            try:
                if self.pinned:
                    version = client.get_crypto_key_version(
                        request={"name": self.key_name}, retry=None, timeout=_timeout()
                    )
                else:
                    key = client.get_crypto_key(
                        request={"name": self.crypto_key}, retry=None, timeout=_timeout()
                    )
                    if "primary" not in key or not key.primary.name:
                        return ("", "")
                    version = key.primary
            except api_exceptions.PermissionDenied:
                return None  # no viewer permission: the probe's Encrypt proves the version instead
            return (str(version.name), kms_v1.CryptoKeyVersion.CryptoKeyVersionState(version.state).name)

        found = self._call("GetCryptoKey", read)
        if found is not None and found[1] != "ENABLED":
            raise self._version_refusal(*found)

    def _version_refusal(self, version: str, state: str) -> ProviderError:
        """``DISABLED``: the version Encrypt would use (``version``, "" for no primary) is unusable."""
        where = f"Your GCP Cloud KMS key …{self.suffix}"
        if not version:
            return ProviderError(
                FailureKind.DISABLED,
                f"{where} has no primary version, so Kodori cannot wrap new keys with it. Enable the primary "
                "version, or make an enabled version primary, in Cloud KMS.",
            )
        number = version.rsplit("/", 1)[-1]
        words = _STATE_WORDS.get(state, "is not enabled")
        if self.pinned:
            return ProviderError(
                FailureKind.DISABLED,
                f"{where}: version {number}, which Kodori's key id names, {words} (state {state}). Enable "
                "that version in Cloud KMS.",
            )
        extra = (
            " Restore it before it is destroyed (it comes back disabled)."
            if state == "DESTROY_SCHEDULED"
            else ""
        )
        return ProviderError(
            FailureKind.DISABLED,
            f"{where}: its primary version {number} {words} (state {state}), so Kodori cannot wrap new keys "
            f"with it.{extra} Enable the primary version, or make an enabled version primary, in Cloud KMS.",
        )

    def _precondition_refusal(self, message: str, operation: str) -> ProviderError:
        """FAILED_PRECONDITION: the version Encrypt or Decrypt needs is not ENABLED, or there is none."""
        where = f"Your GCP Cloud KMS key …{self.suffix}"
        found = _NOT_ENABLED.search(message)
        if operation == "Encrypt" and "no primary" in message.lower():
            return self._version_refusal("", "")
        if found is not None and operation == "Encrypt":
            return self._version_refusal(found.group(1), found.group(3))
        if found is not None:
            number, state = found.group(2), found.group(3)
            words = _STATE_WORDS.get(state, "is not enabled")
            fix = {
                "DESTROY_SCHEDULED": "Restore it in Cloud KMS before it is destroyed, then enable it.",
                "DESTROYED": "Once destroyed, what it protects is lost for good.",
            }.get(state, "Enable that version in Cloud KMS to restore access.")
            return ProviderError(
                FailureKind.DISABLED,
                f"{where}: version {number}, which wrapped this key, {words} (state {state}). {fix}",
            )
        if "DESTROY" in message:
            return ProviderError(
                FailureKind.DISABLED,
                f"{where}: the key version is destroyed or scheduled for destruction. A scheduled "
                "destruction can be cancelled in Cloud KMS; once destroyed, what it protects is lost.",
            )
        return ProviderError(
            FailureKind.DISABLED,
            f"{where} (or the version in use) is disabled; enable it in Cloud KMS to restore access.",
        )

    # -- errors ----------------------------------------------------------------------------------------------

    def _who(self) -> str:
        if self.service_account:
            return f"Kodori's service account {self.service_account}"
        return "Kodori's workload identity"

    def _classify(self, exc: Exception, operation: str) -> ProviderError:
        where = f"Your GCP Cloud KMS key …{self.suffix}"
        if isinstance(exc, ChecksumMismatch):
            return ProviderError(
                FailureKind.TRANSIENT, f"{where}: {exc} (CRC32C; data damaged in transit, retried)."
            )
        if isinstance(exc, auth_exceptions.GoogleAuthError):
            return self._classify_auth(exc)
        if isinstance(exc, api_exceptions.PermissionDenied):
            return ProviderError(
                FailureKind.DENIED,
                f"{where} denied {operation} to {self._who()}. Grant it the Cloud KMS CryptoKey "
                "Encrypter/Decrypter role (roles/cloudkms.cryptoKeyEncrypterDecrypter) on the key.",
            )
        if isinstance(exc, api_exceptions.Unauthenticated):
            return ProviderError(
                FailureKind.DENIED, f"{where}: Cloud KMS refused {self._who()}'s access token."
            )
        if isinstance(exc, api_exceptions.FailedPrecondition):
            return self._precondition_refusal(str(exc.message or ""), operation)
        if isinstance(exc, api_exceptions.NotFound):
            return ProviderError(FailureKind.NOT_FOUND, f"{where} was not found (deleted, or a wrong name).")
        if isinstance(exc, api_exceptions.InvalidArgument):
            if "checksum" in exc.message.lower():
                return ProviderError(
                    FailureKind.TRANSIENT, f"{where}: the request was damaged in transit (CRC32C); retried."
                )
            if operation == "Decrypt":
                return ProviderError(
                    FailureKind.INTEGRITY,
                    f"{where} refused the wrapped key: it belongs to another key, tenant or key version, "
                    "or was altered.",
                )
            return ProviderError(
                FailureKind.CONFIGURATION,
                f"{where} refused {operation} as invalid (Kodori needs a symmetric ENCRYPT_DECRYPT key).",
            )
        if isinstance(exc, (*TRANSIENT_API_ERRORS, TimeoutError, ConnectionError)):
            return ProviderError(FailureKind.TRANSIENT, f"{where}: Cloud KMS is busy or unavailable.")
        return ProviderError(FailureKind.TRANSIENT, f"{where}: {type(exc).__name__}.")

    def _classify_auth(self, exc: auth_exceptions.GoogleAuthError) -> ProviderError:
        body = _error_body(exc)
        if isinstance(exc, auth_exceptions.TransportError) or exc.retryable:
            return ProviderError(FailureKind.TRANSIENT, "Google's token service could not be reached.")
        if isinstance(exc, auth_exceptions.OAuthError):
            error = str(body.get("error", "")) if isinstance(body.get("error"), str) else ""
            if error in REFUSED_GRANTS:
                return ProviderError(
                    FailureKind.DENIED,
                    f"Google's token service refused Kodori's workload identity ({error}), so Kodori cannot "
                    f"reach your GCP Cloud KMS key …{self.suffix}.",
                )
            return ProviderError(
                FailureKind.TRANSIENT, "Google's token service is busy or unavailable; retried."
            )
        token_file = settings.KODORI_GCP_SUBJECT_TOKEN_FILE
        if token_file and not Path(token_file).exists():
            return ProviderError(
                FailureKind.CONFIGURATION,
                "This deployment's workload identity token file (KODORI_GCP_SUBJECT_TOKEN_FILE) is missing.",
            )
        status = body.get("error", {}).get("code", 0) if isinstance(body.get("error"), dict) else 0
        if isinstance(status, int) and status >= 500:
            return ProviderError(FailureKind.TRANSIENT, "Google's IAM Credentials service is unavailable.")
        return ProviderError(
            FailureKind.DENIED,
            f"{self._who()} could not be used (token exchange or impersonation refused), so Kodori cannot "
            f"reach your GCP Cloud KMS key …{self.suffix}.",
        )


def _timeout() -> float:
    return float(settings.KODORI_KMS_DEADLINE_SECONDS)


def _error_body(exc: Exception) -> dict[str, Any]:
    """The JSON error body google-auth attaches as the exception's second argument, if any."""
    for arg in exc.args[1:]:
        try:
            body = json.loads(arg) if isinstance(arg, str | bytes) else arg
        except ValueError:
            continue
        if isinstance(body, dict):
            return body
    return {}
