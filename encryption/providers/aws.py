"""AWS KMS keys: ``Encrypt`` / ``Decrypt`` through boto3, the context bound as the EncryptionContext.

Two modes share this class:

- ``customer_kms_aws``: the tenant's key (key ARN or alias ARN). Kodori calls ``sts:AssumeRole`` into the role
  the tenant created for it, with the ExternalId Kodori generated for that tenant (AWS's confused-deputy
  guidance: another tenant naming this role cannot pass the trust policy's ``sts:ExternalId`` condition) and
  ``RoleSessionName=kodori-tenant-<tenant id>``, so the customer's CloudTrail names the tenant. The temporary
  credentials are cached per (role, ExternalId) until shortly before they expire, and re-assumed at once when
  KMS answers ``ExpiredTokenException``.
- ``operator_kms_aws``: a deployment-owned key (``KODORI_AWS_OPERATOR_KEY_ARN``) used with the deployment's
  own identity from boto3's default chain (IRSA, instance profile, …), without AssumeRole.

The context (``KeyContext.as_dict()``: tenant, key version, purpose) is the EncryptionContext of both calls,
so KMS refuses to decrypt a wrapped key moved to another tenant or version (``InvalidCiphertextException``).
Decrypt pins ``KeyId``: a ciphertext of any other key is refused (``IncorrectKeyException``) instead of being
decrypted with whatever key it names. The region is the one in the key ARN (validated strictly by
``encryption.identifiers``), so the host Kodori reaches is always ``kms.<region>.<partition suffix>``.

At registration, ``describe_key_arn`` resolves an alias ARN to its key ARN (``DescribeKey`` through the role)
and ``check_registration`` proves the role's trust policy insists on the ExternalId: an ``AssumeRole`` with a
random ExternalId must be refused, or any AWS customer who learns the role's ARN could make Kodori use it.

Credentials in ``TenantKey.config`` are never read: the provider is given the role ARN and ExternalId only.
boto3's own retries are off (one attempt); ``call_with_retries`` owns retries, with one deadline. The endpoint
override for the local emulator (``KODORI_AWS_ENDPOINT_URL``) is a deployment setting, never per tenant.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from encryption.identifiers import (
    InvalidKeyIdentifier,
    check_aws_role_for_key,
    parse_aws_key_arn,
    parse_aws_role_arn,
)

from .base import FailureKind, KeyContext, KeyProvider, ProviderError, call_with_retries

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError
except ImportError as exc:  # pragma: no cover - boto3 is a base dependency
    raise ImportError("AWS KMS keys need `pip install boto3`.") from exc

# The shortest session STS grants. Revoking the role's policy denies existing sessions at once anyway; a short
# session bounds how long a changed *trust* policy (which only gates new sessions) still lets Kodori in.
SESSION_SECONDS = 900
# Assume again this long before the session expires, so no call goes out with credentials about to lapse.
REFRESH_MARGIN_SECONDS = 60

EXPIRED_CODES = frozenset({"ExpiredTokenException", "ExpiredToken", "RequestExpired"})
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException",
        "KMSInternalException", "InternalFailure", "InternalError", "ServiceUnavailable",
        "ServiceUnavailableException", "DependencyTimeoutException", "KeyUnavailableException",
        "IDPCommunicationError",
    }
)  # fmt: skip
DENIED_CODES = frozenset(
    {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException"}
)
INTEGRITY_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


@dataclass
class _Session:
    """Temporary credentials of one (role, ExternalId) and the KMS clients built from them, per region."""

    credentials: dict[str, Any]
    refresh_at: float
    clients: dict[str, Any] = field(default_factory=dict)


_lock = threading.Lock()
_boto_session: boto3.session.Session | None = None
_operator_clients: dict[tuple[str, str], Any] = {}
_sts_clients: dict[tuple[str, str], Any] = {}
_sessions: dict[tuple[str, str], _Session] = {}
_assume_locks: dict[tuple[str, str], threading.Lock] = {}


class _AssumeRoleFailed(Exception):
    """STS refused or failed ``AssumeRole``; carries the SDK error so it is classified as an STS answer."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _session() -> boto3.session.Session:
    # Creating a boto3 session costs 0.1-0.5 s: one per process. Sessions are not thread-safe, so every
    # client is created under the lock (clients themselves are).
    global _boto_session
    if _boto_session is None:
        _boto_session = boto3.session.Session()
    return _boto_session


def _endpoint_url() -> str | None:
    return settings.KODORI_AWS_ENDPOINT_URL or None


def _config() -> Config:
    timeout = settings.KODORI_KMS_DEADLINE_SECONDS
    return Config(
        retries={"mode": "standard", "total_max_attempts": 1},  # call_with_retries owns retries
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
    )


def _operator_kms(region: str) -> Any:
    """A KMS client with the deployment's own identity (boto3's default credential chain)."""
    key = (region, _endpoint_url() or "")
    with _lock:
        client = _operator_clients.get(key)
        if client is None:
            client = _session().client(
                "kms", region_name=region, endpoint_url=_endpoint_url(), config=_config()
            )
            _operator_clients[key] = client
        return client


def _sts(region: str) -> Any:
    """The STS client of Kodori's own identity (boto3's default credential chain) for ``region``."""
    with _lock:
        key = (region, _endpoint_url() or "")
        sts = _sts_clients.get(key)
        if sts is None:
            sts = _sts_clients[key] = _session().client(
                "sts", region_name=region, endpoint_url=_endpoint_url(), config=_config()
            )
        return sts


@sensitive_variables("credentials")
def _assume(region: str, role_arn: str, external_id: str, tenant_id: int) -> _Session:
    try:
        credentials = _sts(region).assume_role(
            RoleArn=role_arn,
            RoleSessionName=f"kodori-tenant-{tenant_id}",
            ExternalId=external_id,
            DurationSeconds=SESSION_SECONDS,
        )["Credentials"]
    except ClientError as exc:
        raise _AssumeRoleFailed(exc) from exc
    expires_at = credentials["Expiration"].timestamp()
    return _Session(credentials, refresh_at=expires_at - REFRESH_MARGIN_SECONDS)


@sensitive_variables("answer")
def _assume_with_decoy(region: str, role_arn: str, tenant_id: int) -> bool:
    """Whether the role lets Kodori in with a random ExternalId nobody was ever given.

    ``False`` when STS answers ``AccessDenied`` (the trust policy checks the ExternalId, as it must). The
    credentials of a successful decoy session are dropped at once: they are never cached nor used.
    """
    try:
        answer = _sts(region).assume_role(
            RoleArn=role_arn,
            RoleSessionName=f"kodori-tenant-{tenant_id}-externalid-check",
            ExternalId=f"kodori-decoy-{secrets.token_hex(16)}",
            DurationSeconds=SESSION_SECONDS,
        )
    except ClientError as exc:
        if _code(exc) == "AccessDenied":
            return False
        raise _AssumeRoleFailed(exc) from exc
    del answer
    return True


def _fresh_session(key: tuple[str, str]) -> _Session | None:
    with _lock:
        session = _sessions.get(key)
    return session if session is not None and time.time() < session.refresh_at else None


def _tenant_kms(region: str, role_arn: str, external_id: str, tenant_id: int) -> Any:
    """A KMS client with the tenant role's temporary credentials, assuming the role when none are fresh."""
    key = (role_arn, external_id)
    session = _fresh_session(key)
    if session is None:
        # One AssumeRole per (role, ExternalId) at a time: concurrent callers wait for it rather than each
        # calling STS.
        with _lock:
            guard = _assume_locks.setdefault(key, threading.Lock())
        with guard:
            session = _fresh_session(key)
            if session is None:
                session = _assume(region, role_arn, external_id, tenant_id)
                with _lock:
                    _sessions[key] = session
    with _lock:
        client = session.clients.get(region)
        if client is None:
            credentials = session.credentials
            client = _session().client(
                "kms",
                region_name=region,
                endpoint_url=_endpoint_url(),
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
                config=_config(),
            )
            session.clients[region] = client
        return client


def _forget_session(role_arn: str, external_id: str) -> None:
    with _lock:
        _sessions.pop((role_arn, external_id), None)


def reset_clients() -> None:
    """Forget the boto3 session, clients and cached role sessions (tests and settings changes)."""
    global _boto_session
    with _lock:
        _boto_session = None
        _operator_clients.clear()
        _sts_clients.clear()
        _sessions.clear()
        _assume_locks.clear()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class AwsKeyProvider(KeyProvider):
    """A symmetric KMS key, reached through the tenant's role (customer mode) or Kodori's own identity."""

    def __init__(
        self,
        key_arn: str,
        *,
        tenant_id: int | None = None,
        role_arn: str | None = None,
        external_id: str | None = None,
        region: str | None = None,
    ) -> None:
        """Customer mode when ``tenant_id`` is given: then ``role_arn`` and ``external_id`` are required.

        Operator mode otherwise (the deployment's own identity). ``region``, when given (the tenant key's
        ``config["region"]``), must agree with the key ARN's region.
        """
        self.key_arn = key_arn
        self.suffix = key_arn[-12:]
        self.tenant_id = tenant_id
        self.role_arn = role_arn or ""
        self.external_id = external_id or ""
        if tenant_id is not None and not (self.role_arn and self.external_id):
            # Never fall back to Kodori's own identity for a customer key, and never call AssumeRole without
            # the tenant's ExternalId: a role that does not check it would let anyone who learns its ARN in.
            raise ProviderError(
                FailureKind.CONFIGURATION,
                "This AWS key has no role ARN or ExternalId recorded in Kodori; register the key again.",
            )
        try:
            key = parse_aws_key_arn(key_arn)
            if self.role_arn:
                check_aws_role_for_key(parse_aws_role_arn(self.role_arn), key)
        except InvalidKeyIdentifier as exc:
            raise ProviderError(FailureKind.CONFIGURATION, str(exc)) from exc
        self.key = key
        self.region = key.region
        if region and region != key.region:
            raise ProviderError(
                FailureKind.CONFIGURATION,
                f"The key's region {region} does not match the region {key.region} in its ARN.",
            )

    @property
    def is_customer(self) -> bool:
        return self.tenant_id is not None

    def _kms(self) -> Any:
        if self.tenant_id is not None:
            return _tenant_kms(self.region, self.role_arn, self.external_id, self.tenant_id)
        return _operator_kms(self.region)

    def _call(self, operation: str, request: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            try:
                return request(self._kms())
            except ClientError as exc:
                if not (self.is_customer and _code(exc) in EXPIRED_CODES):
                    raise
            # The cached session lapsed early (revoked or clock skew): assume the role again, once, now.
            _forget_session(self.role_arn, self.external_id)
            return request(self._kms())

        return call_with_retries(attempt, lambda exc: self._classify(exc, operation))

    @sensitive_variables("plaintext")
    def wrap(self, plaintext: bytes, context: KeyContext) -> bytes:
        response = self._call(
            "Encrypt",
            lambda kms: kms.encrypt(
                KeyId=self.key_arn, Plaintext=plaintext, EncryptionContext=context.as_dict()
            ),
        )
        return bytes(response["CiphertextBlob"])

    @sensitive_variables("response")
    def unwrap(self, ciphertext: bytes, context: KeyContext) -> bytes:
        response = self._call(
            "Decrypt",
            lambda kms: kms.decrypt(
                CiphertextBlob=ciphertext, KeyId=self.key_arn, EncryptionContext=context.as_dict()
            ),
        )
        return bytes(response["Plaintext"])

    def describe_key_arn(self) -> str:
        """The key ARN behind this provider's key id: ``DescribeKey`` resolves an alias ARN to its key's ARN.

        Customer keys are described through the tenant's role (it needs ``kms:DescribeKey`` on the key); a key
        ARN comes back unchanged. The answer must be a key ARN of the same partition, account and region as
        the key id (an alias always names a key of its own account and region); anything else is refused.
        """
        response = self._call("DescribeKey", lambda kms: kms.describe_key(KeyId=self.key_arn))
        answered = str(response.get("KeyMetadata", {}).get("Arn", ""))
        try:
            resolved = parse_aws_key_arn(answered)
        except InvalidKeyIdentifier:
            resolved = None
        if (
            resolved is None
            or resolved.resource_type != "key"
            or (resolved.partition, resolved.account, resolved.region)
            != (self.key.partition, self.key.account, self.key.region)
        ):
            raise ProviderError(
                FailureKind.CONFIGURATION,
                f"AWS KMS described your key …{self.suffix} as {answered or 'nothing'}, which is not a key "
                "ARN in the same account and region; register the key by its key ARN.",
            )
        return resolved.arn

    def check_registration(self) -> None:
        """Prove the role's trust policy requires the tenant's ExternalId (customer keys; run after a probe).

        Kodori assumes the role with a random ExternalId nobody was given: STS must refuse it
        (``AccessDenied``). A role that lets Kodori in anyway would let any AWS customer who learns its ARN
        register it with Kodori (the confused deputy), so it is refused (``DENIED``) with the exact condition
        to add. Throttling and outages stay ``TRANSIENT``. Operator keys have no role: nothing to check.
        """
        tenant_id = self.tenant_id
        if tenant_id is None:
            return
        accepted = call_with_retries(
            lambda: _assume_with_decoy(self.region, self.role_arn, tenant_id),
            lambda exc: self._classify(exc, "AssumeRole"),
        )
        if accepted:
            raise ProviderError(
                FailureKind.DENIED,
                f"Your AWS role {self.role_arn} let Kodori in with an ExternalId it was never given. Add "
                f'"Condition": {{"StringEquals": {{"sts:ExternalId": "{self.external_id}"}}}} to the trust '
                f"policy of {self.role_arn}; Kodori refuses roles that any AWS customer could make it "
                "assume.",
            )

    # -- errors ----------------------------------------------------------------------------------------------

    def _identity(self) -> str:
        return f"Kodori's role …{self.role_arn[-12:]}" if self.is_customer else "Kodori's deployment identity"

    def _classify(self, exc: Exception, operation: str) -> ProviderError:
        where = f"Your AWS KMS key …{self.suffix}"
        if isinstance(exc, _AssumeRoleFailed):
            return self._classify_sts(exc.error)
        if isinstance(exc, NoCredentialsError | NoRegionError):
            return ProviderError(
                FailureKind.CONFIGURATION,
                "This deployment has no AWS identity of its own (boto3 found no credentials).",
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError | TimeoutError | ConnectionError):
            return ProviderError(FailureKind.TRANSIENT, f"{where}: AWS KMS could not be reached.")
        if not isinstance(exc, ClientError):
            return ProviderError(FailureKind.TRANSIENT, f"{where}: {type(exc).__name__}.")
        code, status = _code(exc), _status(exc)
        if code in DENIED_CODES or (status == 403 and code not in TRANSIENT_CODES):
            if operation == "DescribeKey":
                policy = "the role's permission policy" if self.is_customer else "its IAM policy"
                return ProviderError(
                    FailureKind.DENIED,
                    f"{where} denied DescribeKey to {self._identity()}. Kodori needs kms:DescribeKey on the "
                    f"key to resolve an alias: allow it in {policy} and in the key policy.",
                )
            return ProviderError(
                FailureKind.DENIED,
                f"{where} denied {operation} to {self._identity()}. Allow kms:Encrypt and kms:Decrypt on "
                "the key for it, in the key policy and (customer keys) the role's policy.",
            )
        if code == "DisabledException":
            return ProviderError(
                FailureKind.DISABLED, f"{where} is disabled; enable it in AWS KMS to restore access."
            )
        if code == "KMSInvalidStateException":
            if "pending deletion" in _message(exc).lower() or "pendingdeletion" in _message(exc).lower():
                return ProviderError(
                    FailureKind.DISABLED,
                    f"{where} is pending deletion. Cancel the deletion and enable the key in AWS KMS: once "
                    "it is deleted, everything it protects is lost for good.",
                )
            return ProviderError(
                FailureKind.DISABLED,
                f"{where} is in a state that does not allow {operation} (pending deletion, pending import "
                "or unavailable).",
            )
        if code == "NotFoundException":
            return ProviderError(
                FailureKind.NOT_FOUND, f"{where} was not found (deleted, or a wrong key or alias ARN)."
            )
        if code in INTEGRITY_CODES:
            return ProviderError(
                FailureKind.INTEGRITY,
                f"{where} refused the wrapped key: it belongs to another key, tenant or key version, or "
                "was altered.",
            )
        if code == "InvalidKeyUsageException":
            return ProviderError(
                FailureKind.CONFIGURATION,
                f"{where} cannot {operation}: Kodori needs a symmetric ENCRYPT_DECRYPT key.",
            )
        if code in TRANSIENT_CODES or code in EXPIRED_CODES or status == 429 or status >= 500:
            return ProviderError(
                FailureKind.TRANSIENT, f"{where}: AWS KMS is busy or unavailable ({code or status})."
            )
        if code in ("ValidationException", "InvalidParameterValue", "InvalidGrantTokenException"):
            return ProviderError(FailureKind.CONFIGURATION, f"{where}: AWS KMS refused the request ({code}).")
        return ProviderError(
            FailureKind.TRANSIENT, f"{where}: unexpected answer {code or status} from AWS KMS."
        )

    def _classify_sts(self, exc: Exception) -> ProviderError:
        role = f"…{self.role_arn[-12:]}"
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            if code == "AccessDenied":
                return ProviderError(
                    FailureKind.DENIED,
                    f"Kodori could not assume your role {role} for AWS KMS key …{self.suffix} — check the "
                    "trust policy's ExternalId: the role must trust Kodori's principal with the condition "
                    "sts:ExternalId equal to the External ID shown on your key's page.",
                )
            if code in TRANSIENT_CODES or code in EXPIRED_CODES or status == 429 or status >= 500:
                return ProviderError(
                    FailureKind.TRANSIENT, f"AWS STS is busy or unavailable ({code or status})."
                )
            # InvalidClientTokenId, SignatureDoesNotMatch, RegionDisabledException, ValidationError: Kodori's
            # own identity or request is at fault, nothing the customer can change.
            return ProviderError(
                FailureKind.CONFIGURATION,
                f"AWS STS refused Kodori's own identity or request ({code or status}) when assuming role "
                f"{role}; this deployment's AWS configuration needs attention.",
            )
        return ProviderError(FailureKind.TRANSIENT, f"AWS STS: {type(exc).__name__}.")
