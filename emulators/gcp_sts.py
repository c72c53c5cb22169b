"""The HTTP half of the GCP emulator: Security Token Service, IAM Credentials, and the emulator's admin API.

What google-auth's ``identity_pool.Credentials`` (workload identity federation, ``type: external_account``)
calls, and what this server answers, all on plain HTTP at 127.0.0.1 (google-auth does not check the
``token_url`` host or scheme):

- ``POST /v1/token``: RFC 8693 token exchange. Form fields
  ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
  ``audience=//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>``,
  ``subject_token=<JWT>``, ``subject_token_type=urn:ietf:params:oauth:token-type:jwt`` (or ``id_token``),
  ``requested_token_type=urn:ietf:params:oauth:token-type:access_token``, ``scope``. The
  subject token must be an RS256 JWT signed by the provider's registered issuer key, with matching ``iss``, an
  ``aud`` among the provider's allowed audiences (default ``https://iam.googleapis.com/<provider resource
  name>``), a ``sub``, and unexpired ``exp``/``iat``. The answer is an opaque federated access token for the
  principal ``principal://iam.googleapis.com/projects/<n>/locations/global/workloadIdentityPools/<pool>/subject/<sub>``.
  Errors follow STS: HTTP 400 ``{"error": "invalid_grant" | "invalid_target" | "invalid_request", ...}``.
- ``POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken``: service account impersonation (used
  when the credential config has ``service_account_impersonation_url``). Needs the federated token as bearer
  and ``roles/iam.workloadIdentityUser`` (or ``serviceAccountTokenCreator``) for that principal on
  ``projects/-/serviceAccounts/<email>``; the result acts as ``serviceAccount:<email>``.
- ``GET|POST /_emulator/<method>``: the admin API; ``<method>`` is one of ``GcpKmsEmulator.ADMIN_METHODS`` and
  the JSON body holds its keyword arguments, e.g. ``POST /_emulator/set_version_state {"version": "...",
  "state": "DISABLED"}``. This lets ``make run`` drive an emulator that lives in another process.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulators.gcp_state import KmsStore
from emulators.https_server import JsonRequestHandler
from emulators.jose import JwtError, b64url_decode, encode_rs256, parse_jwt

if TYPE_CHECKING:
    from emulators.gcp_kms import GcpKmsEmulator

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN, not a secret)
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN)
SUBJECT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
CLOCK_SKEW = 60  # seconds of leeway on iat/exp, like most OIDC verifiers
MAX_SUBJECT_TOKEN_LIFETIME = 24 * 3600  # STS refuses OIDC tokens whose lifetime exceeds 24 h


class StsError(Exception):
    """An OAuth-style refusal: HTTP status, ``error`` code and description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class OidcProvider:
    """A workload identity pool provider of type OIDC, with its trusted issuer and keys inline
    (``jwksJson``)."""

    project_number: str
    pool: str
    provider: str
    issuer: str
    keys: dict[str, rsa.RSAPublicKey]
    allowed_audiences: list[str] = field(default_factory=list)
    enabled: bool = True

    @property
    def resource(self) -> str:
        return (
            f"projects/{self.project_number}/locations/global/workloadIdentityPools/{self.pool}"
            f"/providers/{self.provider}"
        )

    @property
    def audience(self) -> str:
        """The STS ``audience`` a credential config names: the provider's full resource name."""
        return "//iam.googleapis.com/" + self.resource

    @property
    def pool_principal_prefix(self) -> str:
        return f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/workloadIdentityPools/{self.pool}"

    def accepted_audiences(self) -> list[str]:
        return self.allowed_audiences or ["https://iam.googleapis.com/" + self.resource]


def public_key_from(value: Any) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM string or a JWK dict (``kty: RSA``)."""
    if isinstance(value, rsa.RSAPublicKey):
        return value
    if isinstance(value, dict):
        if value.get("kty") != "RSA":
            raise ValueError("only RSA JWKs are supported")
        n = int.from_bytes(b64url_decode(value["n"]), "big")
        e = int.from_bytes(b64url_decode(value["e"]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    key = serialization.load_pem_public_key(str(value).encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("only RSA public keys are supported")
    return key


class WorkloadIdentityIssuer:
    """Stands in for Kodori's own workload identity issuer: an RSA key that mints RS256 subject tokens."""

    def __init__(self, issuer: str, kid: str | None = None) -> None:
        self.issuer = issuer
        self.kid = kid or uuid.uuid4().hex[:16]
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def mint(self, subject: str, audience: str, lifetime: int = 600, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": subject, "aud": audience, "iat": now, "exp": now + lifetime}
        payload.update(claims)
        return encode_rs256(payload, self.private_key, self.kid)


class WorkloadFederation:
    """Workload identity pool providers, service accounts, and the token exchange itself."""

    def __init__(self, store: KmsStore) -> None:
        self.store = store
        self.providers: dict[str, OidcProvider] = {}
        self.service_accounts: set[str] = set()
        self.exchanges: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.providers.clear()
        self.service_accounts.clear()
        self.exchanges.clear()

    def add_provider(self, provider: OidcProvider) -> None:
        with self.store.lock:
            self.providers[provider.audience] = provider

    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            result = self._exchange(form)
        except StsError as err:
            self.exchanges.append({"audience": form.get("audience"), "ok": False, "error": err.description})
            raise
        self.exchanges.append(
            {"audience": form.get("audience"), "ok": True, "principal": result.pop("_principal")}
        )
        return result

    def _exchange(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise StsError(
                400, "unsupported_grant_type", f"Unsupported grant_type: {form.get('grant_type')!r}."
            )
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            raise StsError(400, "invalid_request", "Invalid requested_token_type.")
        if form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
            raise StsError(400, "invalid_request", "Invalid subject_token_type for an OIDC provider.")
        with self.store.lock:
            provider = self.providers.get(form.get("audience", ""))
        if provider is None or not provider.enabled:
            raise StsError(
                400,
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. This might either be '
                "because the pool or provider is disabled or deleted or because it doesn't exist.",
            )
        claims = self._verify_subject_token(provider, form.get("subject_token", ""))
        principal = f"{provider.pool_principal_prefix}/subject/{claims['sub']}"
        scopes = tuple(form.get("scope", "").split())
        token, grant = self.store.issue_token(principal, scopes)
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": int(grant.expires_at - time.time()),
            "_principal": principal,
        }

    def _verify_subject_token(self, provider: OidcProvider, token: str) -> dict[str, Any]:
        try:
            jwt = parse_jwt(token)
        except JwtError as err:
            raise StsError(400, "invalid_grant", f"Unable to parse the ID Token: {err}") from None
        kid = jwt.header.get("kid")
        candidates = (
            [provider.keys[kid]] if kid in provider.keys else ([] if kid else list(provider.keys.values()))
        )
        if not any(jwt.verify_rs256(key) for key in candidates):
            raise StsError(400, "invalid_grant", "Invalid ID Token: the signature could not be verified.")
        claims = jwt.claims
        if claims.get("iss") != provider.issuer:
            raise StsError(
                400,
                "invalid_grant",
                f"The issuer in ID Token {claims.get('iss')!r} does not match the expected ones.",
            )
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not set(audiences) & set(provider.accepted_audiences()):
            raise StsError(
                400,
                "invalid_grant",
                f"The audience in ID Token {audiences} does not match the expected audience.",
            )
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise StsError(400, "invalid_grant", "The ID Token must carry numeric iat and exp claims.")
        if exp + CLOCK_SKEW < now:
            raise StsError(400, "invalid_grant", "ID Token has expired.")
        if iat - CLOCK_SKEW > now or exp - iat > MAX_SUBJECT_TOKEN_LIFETIME:
            raise StsError(
                400, "invalid_grant", "ID Token issued at a time in the future or with a too-long lifetime."
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject.encode()) > 127:
            raise StsError(
                400, "invalid_grant", "The ID Token's sub claim (google.subject) must be 1-127 bytes."
            )
        return claims

    def generate_access_token(self, email: str, bearer: str | None, body: dict[str, Any]) -> dict[str, Any]:
        caller = self.store.principal_for_token(bearer) if bearer else None
        if caller is None:
            raise StsError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        resource = f"projects/-/serviceAccounts/{email}"
        if email not in self.service_accounts or not self.store.has_permission(
            caller, "iam.serviceAccounts.getAccessToken", resource
        ):
            raise StsError(
                403,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            )
        lifetime = int(str(body.get("lifetime", "3600s")).rstrip("s") or 3600)
        token, grant = self.store.issue_token(
            f"serviceAccount:{email}", tuple(body.get("scope") or ()), min(lifetime, 3600)
        )
        expire = datetime.datetime.fromtimestamp(grant.expires_at, datetime.UTC)
        return {"accessToken": token, "expireTime": expire.strftime("%Y-%m-%dT%H:%M:%SZ")}


class StsServer(ThreadingHTTPServer):
    """Plain-HTTP server on 127.0.0.1 for STS, IAM Credentials and the admin API."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, emulator: GcpKmsEmulator) -> None:
        self.emulator = emulator
        super().__init__(("127.0.0.1", port), _StsHandler)


class _StsHandler(JsonRequestHandler):
    server: StsServer

    def do_GET(self) -> None:
        self.parse_target()
        if self.path_only.startswith("/_emulator/"):
            self._admin({})
        else:
            self.send_json(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})

    def do_POST(self) -> None:
        self.parse_target()
        emulator = self.server.emulator
        try:
            if self.path_only == "/v1/token":
                self.send_json(200, emulator.federation.exchange(self.read_form()))
            elif self.path_only.startswith("/v1/projects/-/serviceAccounts/") and self.path_only.endswith(
                ":generateAccessToken"
            ):
                email = self.path_only[len("/v1/projects/-/serviceAccounts/") : -len(":generateAccessToken")]
                auth = self.headers.get("Authorization", "")
                bearer = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
                self.send_json(
                    200, emulator.federation.generate_access_token(email, bearer, self.read_json())
                )
            elif self.path_only.startswith("/_emulator/"):
                self._admin(self.read_json())
            else:
                self.read_body()
                self.send_json(
                    404, {"error": "not_found", "error_description": f"No route for {self.path_only}"}
                )
        except StsError as err:
            if err.status in (401, 403):
                self.send_json(
                    err.status,
                    {"error": {"code": err.status, "message": err.description, "status": err.error}},
                )
            else:
                self.send_json(err.status, {"error": err.error, "error_description": err.description})
        except ValueError as err:
            self.send_json(400, {"error": "invalid_request", "error_description": str(err)})

    def _admin(self, kwargs: dict[str, Any]) -> None:
        name = self.path_only[len("/_emulator/") :]
        emulator = self.server.emulator
        if name not in emulator.ADMIN_METHODS:
            self.send_json(
                404, {"error": f"unknown admin method {name!r}", "methods": sorted(emulator.ADMIN_METHODS)}
            )
            return
        try:
            result = getattr(emulator, name)(**kwargs)
        except (TypeError, ValueError, KeyError) as err:
            self.send_json(400, {"error": str(err)})
            return
        except Exception as err:  # KmsError and friends: report, do not kill the connection
            self.send_json(409, {"error": str(err), "type": type(err).__name__})
            return
        self.send_json(200, {"result": json.loads(json.dumps(result, default=str))})
