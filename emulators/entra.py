"""A local Microsoft Entra ID (Azure AD) token endpoint for workload identity federation, over HTTPS.

What it implements, and only that:

- ``POST /{directory_id}/oauth2/v2.0/token`` with ``grant_type=client_credentials``,
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
  ``client_assertion=<JWT>``: the exchange ``azure.identity.ClientAssertionCredential`` and
  ``WorkloadIdentityCredential`` perform. The assertion must be an RS256 JWT from a registered issuer,
  unexpired, whose ``iss``/``sub``/``aud`` match a federated credential of the application, and the
  application must have a service principal in the directory (the customer's consent). Client secrets are
  refused outright: Kodori never uses them.
- OpenID discovery (``GET /{directory_id}/v2.0/.well-known/openid-configuration``) and the signing keys
  (``GET /{directory_id}/discovery/v2.0/keys``), for MSAL-based credentials; pass them
  ``disable_instance_discovery=True``, or MSAL asks the public cloud about the authority.
- ``POST /_emulator/assertion`` (JSON ``{"subject": ..., "lifetime": ...}``) returns a freshly minted
  assertion from the built-in workload issuer, for processes outside this one (``make run``).

Access tokens are RS256 JWTs signed with this emulator's key; :meth:`EntraEmulator.validate_access_token` is
how the Key Vault emulator learns the caller's directory and principal. A multi-tenant app is modelled as
Azure does: one application (client id) with federated credentials, and one service principal (object id) per
directory that consented to it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import jose
from .entra_http import EntraHandler, TokenError
from .https_server import BackgroundServer, HttpsServer
from .tls import TlsPaths, ensure_tls_material, server_ssl_context

TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience, not a secret
KEY_VAULT_RESOURCE = "https://vault.azure.net"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_ISSUER = "https://workload-issuer.kodori.test"
DEFAULT_SUBJECT = "system:serviceaccount:kodori:kodori"
# Entra tolerates a little clock skew on assertions; a test of "expired" must go well past it.
_CLOCK_SKEW = 60


class InvalidToken(Exception):
    """An access token the resource server must refuse; the message reads like Key Vault's (AKV codes)."""


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on an application: which external tokens it trusts."""

    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)


@dataclass(frozen=True)
class AccessTokenClaims:
    """What a resource server learns from a valid access token."""

    directory_id: str
    client_id: str
    object_id: str
    audience: str
    expires_at: int
    issuer: str


class EntraEmulator:
    """Token endpoint on ``https://127.0.0.1:<port>``; use its ``url`` as the credential's ``authority``."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        token_lifetime: int = 3600,
        tls: TlsPaths | None = None,
    ) -> None:
        self.tls = tls or ensure_tls_material(Path(state_dir) / "tls")
        self.token_lifetime = token_lifetime
        self._port_wanted = port
        self._lock = threading.Lock()
        # RSA 2048 keygen costs ~50 ms each; two keys per emulator is acceptable for per-test-file fixtures.
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._signing_kid = uuid.uuid4().hex
        self.issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = DEFAULT_ISSUER
        self._issuers: dict[str, list[rsa.RSAPublicKey]] = {DEFAULT_ISSUER: [self.issuer_key.public_key()]}
        self._apps: dict[str, list[FederatedCredential]] = {}
        self._directories: dict[str, dict[str, str]] = {}  # directory -> client id -> object id
        self._server: BackgroundServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> EntraEmulator:
        if self._server is None:
            handler = type("BoundEntraHandler", (EntraHandler,), {"entra": self})
            server = HttpsServer(self._port_wanted, handler, server_ssl_context(self.tls))
            self._server = BackgroundServer(server, name="entra-emulator")
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> EntraEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Entra emulator is not running; call start() first")
        return self._server.port

    @property
    def url(self) -> str:
        """The authority host: pass it as ``authority=`` (or ``AZURE_AUTHORITY_HOST``)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.tls.ca

    # -- directory and application registry ---------------------------------------------------------------

    def add_directory(self, directory_id: str | None = None) -> str:
        directory_id = directory_id or str(uuid.uuid4())
        with self._lock:
            self._directories.setdefault(directory_id, {})
        return directory_id

    def register_application(
        self,
        client_id: str | None = None,
        *,
        subject: str | None = DEFAULT_SUBJECT,
        issuer: str | None = None,
        audience: str = TOKEN_EXCHANGE_AUDIENCE,
    ) -> str:
        """Register an app (idempotent) with one federated credential for ``issuer``/``subject``, if given."""
        client_id = client_id or str(uuid.uuid4())
        with self._lock:
            creds = self._apps.setdefault(client_id, [])
            if subject is not None:
                cred = FederatedCredential(issuer or self.issuer, subject, (audience,))
                if cred not in creds:
                    creds.append(cred)
        return client_id

    def add_service_principal(self, directory_id: str, client_id: str) -> str:
        """Consent ``client_id`` in ``directory_id``; returns the service principal's object id there."""
        with self._lock:
            principals = self._directories.setdefault(directory_id, {})
            return principals.setdefault(client_id, str(uuid.uuid4()))

    def remove_service_principal(self, directory_id: str, client_id: str) -> None:
        with self._lock:
            self._directories.get(directory_id, {}).pop(client_id, None)

    def object_id(self, directory_id: str, client_id: str) -> str | None:
        with self._lock:
            return self._directories.get(directory_id, {}).get(client_id)

    def register_issuer(self, issuer: str, public_key: rsa.RSAPublicKey) -> None:
        """Trust RS256 assertions from another issuer (Entra would fetch its JWKS; here it is handed over)."""
        with self._lock:
            self._issuers.setdefault(issuer, []).append(public_key)

    # -- assertions and tokens ----------------------------------------------------------------------------

    def mint_assertion(
        self,
        subject: str = DEFAULT_SUBJECT,
        *,
        audience: str = TOKEN_EXCHANGE_AUDIENCE,
        issuer: str | None = None,
        lifetime: int = 600,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """An assertion as Kodori's workload identity issuer signs it; ``lifetime`` < 0: expired."""
        now = int(time.time())
        start = min(now, now + lifetime - 600)  # an expired token was also issued in the past
        claims = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": start,
            "nbf": start,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        return jose.encode_rs256(claims, signing_key or self.issuer_key, kid="workload-issuer")

    def write_assertion_file(
        self, path: str | os.PathLike[str], subject: str = DEFAULT_SUBJECT, lifetime: int = 3600
    ) -> Path:
        """Write an assertion where ``WorkloadIdentityCredential``'s ``token_file_path`` can read it."""
        target = Path(path)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(self.mint_assertion(subject, lifetime=lifetime), encoding="utf-8")
        tmp.replace(target)
        return target

    def issue_token(
        self,
        directory_id: str,
        client_id: str,
        resource: str = KEY_VAULT_RESOURCE,
        lifetime: int | None = None,
    ) -> str:
        """An access token for a consented principal without the assertion dance (for negative tests)."""
        object_id = self.object_id(directory_id, client_id) or str(uuid.uuid5(uuid.NAMESPACE_URL, client_id))
        now = int(time.time())
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{directory_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + (self.token_lifetime if lifetime is None else lifetime),
            "tid": directory_id,
            "oid": object_id,
            "sub": object_id,
            "appid": client_id,
            "idtyp": "app",
            "ver": "1.0",
        }
        return jose.encode_rs256(claims, self._signing_key, kid=self._signing_kid)

    def validate_access_token(self, token: str, resource: str = KEY_VAULT_RESOURCE) -> AccessTokenClaims:
        """Check signature, lifetime and audience; raise :class:`InvalidToken` with Key Vault's AKV codes."""
        try:
            jwt = jose.parse_jwt(token)
        except jose.JwtError as exc:
            raise InvalidToken(f"AKV10000: Request is missing a Bearer or PoP token ({exc}).") from exc
        if not jwt.verify_rs256(self._signing_key.public_key()):
            raise InvalidToken("AKV10046: Unable to resolve the key used for signature validation.")
        claims = jwt.claims
        now = int(time.time())
        if int(claims.get("exp", 0)) <= now:
            raise InvalidToken("Token is expired.")
        if claims.get("aud") != resource:
            raise InvalidToken(
                f"AKV10022: Invalid audience. Expected {resource}, found: {claims.get('aud')}."
            )
        return AccessTokenClaims(
            directory_id=str(claims["tid"]),
            client_id=str(claims["appid"]),
            object_id=str(claims["oid"]),
            audience=str(claims["aud"]),
            expires_at=int(claims["exp"]),
            issuer=str(claims["iss"]),
        )

    def jwks(self) -> dict[str, Any]:
        key = jose.rsa_public_jwk(self._signing_key.public_key())
        return {"keys": [{**key, "kid": self._signing_kid, "use": "sig", "alg": "RS256"}]}

    # -- the token exchange -------------------------------------------------------------------------------

    def exchange(self, directory_id: str, form: dict[str, str]) -> dict[str, Any]:
        """Run the client-credentials exchange; raise :class:`TokenError` on any refusal."""
        with self._lock:
            known_directory = directory_id in self._directories
        if not known_directory:
            raise TokenError("no_tenant", directory_id=directory_id)
        if form.get("grant_type") != "client_credentials":
            raise TokenError("grant_type")
        if "client_secret" in form:
            raise TokenError("secret")
        if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
            raise TokenError("no_assertion")
        scope = form.get("scope", "")
        if scope.split() != [f"{KEY_VAULT_RESOURCE}/.default"]:
            raise TokenError("scope", scope=scope)
        client_id = form.get("client_id", "")
        if self.object_id(directory_id, client_id) is None:
            raise TokenError("no_app", client_id=client_id, directory_id=directory_id)
        self._check_assertion(client_id, form["client_assertion"])
        lifetime = self.token_lifetime
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.issue_token(directory_id, client_id, KEY_VAULT_RESOURCE),
        }

    def _check_assertion(self, client_id: str, assertion: str) -> None:
        try:
            jwt = jose.parse_jwt(assertion)
        except jose.JwtError as exc:
            raise TokenError("malformed", problem=exc) from exc
        claims = jwt.claims
        issuer, subject, audience = claims.get("iss"), claims.get("sub"), claims.get("aud")
        with self._lock:
            issuer_keys = list(self._issuers.get(str(issuer), []))
            creds = list(self._apps.get(client_id, []))
        if not any(jwt.verify_rs256(key) for key in issuer_keys):
            raise TokenError("signature", issuer=issuer)
        now = int(time.time())
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, int) or exp + _CLOCK_SKEW < now or int(nbf) - _CLOCK_SKEW > now:
            raise TokenError("time")
        # Matching order as Entra reports it: issuer, then subject, then audience.
        by_issuer = [c for c in creds if c.issuer == issuer]
        if not by_issuer:
            raise TokenError("issuer", issuer=issuer)
        by_subject = [c for c in by_issuer if c.subject == subject]
        if not by_subject:
            raise TokenError("subject", subject=subject)
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(aud in cred.audiences for cred in by_subject for aud in audiences):
            raise TokenError("audience", audience=audience)
