"""The HTTP surface of the Entra ID emulator: token endpoint, OpenID discovery, and AADSTS-style errors.

Kept apart from :mod:`emulators.entra`, which holds the registry and the rules of the token exchange.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from .https_server import JsonRequestHandler

if TYPE_CHECKING:
    from .entra import EntraEmulator


# Refusals of the token endpoint: (HTTP status, OAuth error, AADSTS code, description template). Codes and
# wording follow what Entra ID answers for the same mistake, so errors read as they will in production.
_REFUSALS: dict[str, tuple[int, str, int, str]] = {
    "no_tenant": (400, "invalid_request", 90002, "Tenant '{directory_id}' not found."),
    "grant_type": (400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."),
    "secret": (
        401,
        "invalid_client",
        7000215,
        "Client secrets are not accepted by this deployment; authenticate with a federated credential "
        "(client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer).",
    ),
    "no_assertion": (
        400,
        "invalid_request",
        900144,
        "The request body must contain the parameter 'client_assertion'.",
    ),
    "scope": (
        400,
        "invalid_scope",
        70011,
        "The provided value for the input parameter 'scope' is not valid: {scope!r}.",
    ),
    "no_app": (
        400,
        "unauthorized_client",
        700016,
        "Application with identifier '{client_id}' was not found in the directory '{directory_id}'.",
    ),
    "malformed": (400, "invalid_client", 50027, "JWT token is invalid or malformed: {problem}."),
    # An unknown issuer lands here too: Entra could not fetch keys to check the signature with.
    "signature": (
        401,
        "invalid_client",
        700027,
        "Client assertion failed signature validation (issuer '{issuer}').",
    ),
    "time": (400, "invalid_client", 700024, "Client assertion is not within its valid time range."),
    "issuer": (
        400,
        "invalid_client",
        700211,
        "No matching federated identity record found for presented assertion issuer '{issuer}'.",
    ),
    "subject": (
        400,
        "invalid_client",
        700213,
        "No matching federated identity record found for presented assertion subject '{subject}'.",
    ),
    "audience": (
        400,
        "invalid_client",
        700212,
        "No matching federated identity record found for presented assertion audience '{audience}'.",
    ),
    "not_found": (404, "invalid_request", 90002, "No such endpoint."),
}


class TokenError(Exception):
    """A refusal of the token endpoint, rendered as an AADSTS error document."""

    def __init__(self, reason: str, **details: object) -> None:
        status, error, code, template = _REFUSALS[reason]
        description = template.format(**details)
        super().__init__(description)
        self.reason, self.status, self.error, self.code, self.description = (
            reason,
            status,
            error,
            code,
            description,
        )


class EntraHandler(JsonRequestHandler):
    entra: EntraEmulator

    def do_POST(self) -> None:
        self.parse_target()
        # Consume the body before any routing decision, or a refused request would leave bytes on a kept-alive
        # connection to be read as the next request line.
        raw = self.read_body()
        parts = self.path_only.strip("/").split("/")
        if self.path_only == "/_emulator/assertion":
            try:
                body = json.loads(raw or b"{}")
                subject = body.get("subject")
                lifetime = int(body.get("lifetime", 3600))
            except (ValueError, AttributeError, TypeError):
                self._aad_error(TokenError("malformed", problem="the body must be a JSON object"))
                return
            assertion = (
                self.entra.mint_assertion(str(subject), lifetime=lifetime)
                if subject
                else self.entra.mint_assertion(lifetime=lifetime)
            )
            self.send_json(200, {"assertion": assertion})
            return
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            self._aad_error(TokenError("not_found"))
            return
        fields = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        form = {name: values[0] for name, values in fields.items()}
        try:
            payload = self.entra.exchange(parts[0], form)
        except TokenError as err:
            self._aad_error(err)
            return
        self.send_json(200, payload)

    def do_GET(self) -> None:
        self.parse_target()
        parts = self.path_only.strip("/").split("/")
        base = self.entra.url
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            tenant = parts[0]
            self.send_json(
                200,
                {
                    "issuer": f"{base}/{tenant}/v2.0",
                    "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                    "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "token"],
                    "subject_types_supported": ["pairwise"],
                },
            )
        elif len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
            self.send_json(200, self.entra.jwks())
        else:
            self._aad_error(TokenError("not_found"))

    def _aad_error(self, err: TokenError) -> None:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        self.send_json(
            err.status,
            {
                "error": err.error,
                "error_description": f"AADSTS{err.code}: {err.description} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {stamp}",
                "error_codes": [err.code],
                "timestamp": stamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
            },
        )
