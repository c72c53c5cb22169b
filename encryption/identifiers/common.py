"""What every identifier parser shares: the error type and the text checks done before any parsing."""

from __future__ import annotations

# Far above any real identifier (a role ARN with a 512-character path is the longest), far below abuse.
MAX_IDENTIFIER_LENGTH = 1024


class InvalidKeyIdentifier(ValueError):
    """A key identifier was refused; the message says why and what Kodori accepts (shown to customers)."""


def _refuse(problem: str, ok: str) -> InvalidKeyIdentifier:
    return InvalidKeyIdentifier(f"{problem}. {ok}")


def _check_text(value: object, what: str, ok: str) -> str:
    """Refuse, before any parsing, the characters no identifier of any cloud contains."""
    if not isinstance(value, str):
        raise _refuse(f"{what} must be text", ok)
    if not value:
        raise _refuse(f"{what} is empty", ok)
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise _refuse(f"{what} is too long ({MAX_IDENTIFIER_LENGTH} characters at most)", ok)
    if not value.isascii():
        raise _refuse(
            f"{what} contains non-ASCII characters (look-alike letters are refused; copy the identifier "
            "from your cloud console)",
            ok,
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _refuse(f"{what} contains spaces, line breaks or control characters", ok)
    if "%" in value or "\\" in value:
        raise _refuse(f"{what} contains '%' or '\\' (encoded or escaped characters are refused)", ok)
    return value
