"""Who is calling the AWS emulator: access keys, temporary credentials, and Signature Version 4 checks.

moto in its default mode accepts any signature from any access key. The emulator's proxy instead knows every
credential it will honour:

- long-term keys registered by the emulator (Kodori's own deployment identity, the customer account's root);
- temporary credentials that moto issued through an AssumeRole the proxy allowed, learnt from the response
  (access key id, secret, session token, expiry, assumed-role ARN).

Each request's SigV4 signature is recomputed with the caller's secret (RFC-style canonical request: method,
URI, sorted query, signed headers, payload SHA-256), and a temporary credential must come with its session
token and be unexpired. Errors carry the codes real AWS uses, per protocol: KMS (JSON) answers
``UnrecognizedClientException`` / ``InvalidSignatureException`` / ``ExpiredTokenException``; STS (query)
answers ``InvalidClientTokenId`` / ``SignatureDoesNotMatch`` / ``ExpiredToken``.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SIGNATURE_SKEW = 15 * 60  # AWS refuses requests signed more than 15 minutes away from its clock

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<headers>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


class AuthError(Exception):
    """A refused credential; ``kind`` is ``unknown``, ``signature`` or ``expired``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class Principal:
    """An identity the emulator knows, and the secret material that proves it."""

    arn: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: float | None = None
    role_arn: str | None = None  # set for assumed-role sessions
    # Identity policy documents applying to a long-term principal (a role's come from moto's IAM instead).
    identity_policies: tuple[dict[str, Any], ...] = ()
    is_root: bool = False

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    def caller_identity(self) -> dict[str, str]:
        user_id = (
            self.access_key_id if self.role_arn is None else f"{self.access_key_id}:{self.arn.split('/')[-1]}"
        )
        return {"Arn": self.arn, "UserId": user_id, "Account": self.account}


@dataclass(frozen=True)
class SignedRequest:
    """The parts of a SigV4 ``Authorization`` header the proxy needs."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str | None) -> SignedRequest | None:
    match = _AUTH_RE.match(header or "")
    if match is None:
        return None
    return SignedRequest(
        access_key_id=match["key"],
        date=match["date"],
        region=match["region"],
        service=match["service"],
        signed_headers=tuple(match["headers"].split(";")),
        signature=match["signature"],
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = [pair.partition("=") for pair in query.split("&") if pair]
    return "&".join(f"{k}={v}" for k, _, v in sorted(pairs))


def expected_signature(
    secret: str,
    signed: SignedRequest,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """The SigV4 signature a client holding ``secret`` would have computed for this request."""
    path, _, query = raw_path.partition("?")
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(
        f"{name}:{' '.join(lowered.get(name, '').split())}\n" for name in signed.signed_headers
    )
    payload_hash = lowered.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [
            method.upper(),
            path or "/",
            _canonical_query(query),
            canonical_headers,
            ";".join(signed.signed_headers),
            payload_hash,
        ]
    )
    amz_date = lowered.get("x-amz-date", "")
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode(), signed.date)
    for part in (signed.region, signed.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class CredentialStore:
    """Access key id → :class:`Principal`, shared by the proxy's request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Principal] = {}

    def add(self, principal: Principal) -> Principal:
        with self._lock:
            self._by_key[principal.access_key_id] = principal
        return principal

    def remove_sessions(self, role_arn: str | None = None) -> int:
        """Forget temporary credentials (of one role, or all): they stop working at once."""
        with self._lock:
            doomed = [
                k
                for k, p in self._by_key.items()
                if p.role_arn is not None and role_arn in (None, p.role_arn)
            ]
            for key in doomed:
                del self._by_key[key]
            return len(doomed)

    def clear_sessions(self) -> None:
        self.remove_sessions(None)

    def expire_sessions(self, role_arn: str | None = None) -> int:
        """Mark temporary credentials (of one role, or all) as expired, as if their lifetime had run out."""
        with self._lock:
            sessions = [
                p for p in self._by_key.values() if p.role_arn is not None and role_arn in (None, p.role_arn)
            ]
            for principal in sessions:
                principal.expires_at = 0.0
            return len(sessions)

    def get(self, access_key_id: str) -> Principal | None:
        with self._lock:
            return self._by_key.get(access_key_id)

    def authenticate(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Principal:
        """The principal that signed this request, or :class:`AuthError`."""
        signed = parse_authorization(headers.get("Authorization") or headers.get("authorization"))
        if signed is None:
            raise AuthError("unknown", "Request is missing Authentication Token")
        principal = self.get(signed.access_key_id)
        if principal is None:
            raise AuthError("unknown", "The security token included in the request is invalid.")
        lowered = {name.lower(): value for name, value in headers.items()}
        if (
            principal.session_token is not None
            and lowered.get("x-amz-security-token") != principal.session_token
        ):
            raise AuthError("unknown", "The security token included in the request is invalid.")
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise AuthError("expired", "The security token included in the request is expired")
        if "host" not in signed.signed_headers:
            raise AuthError("signature", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
        try:
            signed_at = datetime.datetime.strptime(lowered.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ")
        except ValueError:
            raise AuthError("signature", "The request must carry a valid X-Amz-Date header.") from None
        skew = abs(signed_at.replace(tzinfo=datetime.UTC).timestamp() - time.time())
        if skew > SIGNATURE_SKEW:
            raise AuthError(
                "signature", "Signature expired: the request was signed too far from server time."
            )
        wanted = expected_signature(principal.secret_access_key, signed, method, raw_path, headers, body)
        if not hmac.compare_digest(wanted, signed.signature):
            raise AuthError(
                "signature",
                "The request signature we calculated does not match the signature you provided. Check your "
                "AWS Secret Access Key and signing method.",
            )
        return principal
