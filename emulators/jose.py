"""The few JOSE pieces the emulators need: base64url, RS256 JWTs, RSA public keys as JWK.

Written against pyca/cryptography directly so that the emulators carry no JWT library of their own. Only RS256
is accepted when verifying; ``alg: none`` and HMAC algorithms are refused, as Entra ID refuses them for client
assertions.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class JwtError(ValueError):
    """A token that is malformed, unsigned, or signed with an algorithm we do not accept."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    # Callers send unpadded base64url (RFC 7515); some also pad. Accept both, reject other alphabets.
    cleaned = text.strip()
    if any(ch in cleaned for ch in "+/"):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


def int_to_b64url(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def rsa_public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"kty": "RSA", "n": int_to_b64url(numbers.n), "e": int_to_b64url(numbers.e)}


def encode_rs256(claims: dict[str, Any], private_key: rsa.RSAPrivateKey, kid: str) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url_encode(signature)


@dataclass(frozen=True)
class UnverifiedJwt:
    """A parsed JWS compact token whose signature has not been checked yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify_rs256(self, public_key: rsa.RSAPublicKey) -> bool:
        if self.header.get("alg") != "RS256" or not self.signature:
            return False
        try:
            public_key.verify(self.signature, self.signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def parse_jwt(token: str) -> UnverifiedJwt:
    """Split and decode a compact JWS. Raises :class:`JwtError` when it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError as exc:  # binascii.Error and JSONDecodeError are both ValueErrors
        raise JwtError(f"undecodable JWT: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("JWT header and payload must be JSON objects")
    if header.get("alg") != "RS256":
        raise JwtError(f"unsupported JWT algorithm {header.get('alg')!r}; only RS256 is accepted")
    return UnverifiedJwt(
        header=header,
        claims=claims,
        signing_input=(parts[0] + "." + parts[1]).encode("ascii"),
        signature=signature,
    )
