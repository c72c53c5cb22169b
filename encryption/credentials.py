"""Refuse static cloud credentials wherever Kodori accepts key configuration, and keep them out of logs.

Kodori reaches a tenant's KMS only through federation: it assumes an AWS role with an ExternalId, it signs in
to the tenant's Microsoft Entra directory with a federated credential on its own multi-tenant app, and it
uses workload identity federation on Google Cloud. A long-lived secret pasted into a form is therefore never
needed, and keeping one would make Kodori's database a store of keys to its customers' clouds. So forms, the
admin and the API run :func:`refuse_static_credentials` on what they receive, and the refusal names the field
and the federated alternative but never echoes the value, not even a prefix.

Detection is by shape (AWS access key ids ``AKIA…``/``ASIA…``, session tokens, Azure client secrets
``xxx8Q~…``, PEM private keys, Google service-account JSON and API keys) and by field name (``password``,
``client_secret``, ``aws_secret_access_key``, ``private_key``, ``…token`` …), in nested dicts, lists and JSON
strings. A bare 40-character AWS secret access key has no prefix, so it is recognised only as a whole field
value with mixed case and digits (hex digests are not flagged), and not in a field named ``external_id``.

:class:`RedactStaticCredentialsFilter` removes the same shapes from log records, a second line of defence
for anything that reaches a logger before validation. A filter attached to a *logger* sees only records
logged on that logger, not on its children, so install it on every *handler* in settings ``LOGGING``::

    LOGGING = {
        "filters": {
            "redact_credentials": {"()": "encryption.credentials.RedactStaticCredentialsFilter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "filters": ["redact_credentials", ...]},
        },
        ...
    }
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Cloud",
    "CredentialKind",
    "RedactStaticCredentialsFilter",
    "StaticCredentialFound",
    "StaticCredentialRefused",
    "find_static_credentials",
    "redact_static_credentials",
    "refuse_static_credentials",
]


class Cloud(enum.StrEnum):
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"


class CredentialKind(enum.StrEnum):
    """What was found; the value is the phrase used in the customer-facing message.

    (The ``noqa: S105`` marks below: these strings describe credentials, they are not credentials.)
    """

    AWS_ACCESS_KEY_ID = "an AWS access key id"
    AWS_SECRET_ACCESS_KEY = "an AWS secret access key"  # noqa: S105
    AWS_SESSION_TOKEN = "an AWS session token"  # noqa: S105
    AZURE_CLIENT_SECRET = "an Azure client secret"  # noqa: S105
    GCP_SERVICE_ACCOUNT_KEY = "a Google Cloud service-account key"
    GCP_API_KEY = "a Google API key"
    PRIVATE_KEY = "a private key"
    SECRET_FIELD = "a password, secret or token"  # noqa: S105


_CLOUD_OF_KIND: dict[CredentialKind, Cloud] = {
    CredentialKind.AWS_ACCESS_KEY_ID: Cloud.AWS,
    CredentialKind.AWS_SECRET_ACCESS_KEY: Cloud.AWS,
    CredentialKind.AWS_SESSION_TOKEN: Cloud.AWS,
    CredentialKind.AZURE_CLIENT_SECRET: Cloud.AZURE,
    CredentialKind.GCP_SERVICE_ACCOUNT_KEY: Cloud.GCP,
    CredentialKind.GCP_API_KEY: Cloud.GCP,
}
ALTERNATIVES: dict[Cloud, str] = {
    Cloud.AWS: "For AWS, use a role ARN that Kodori assumes with an ExternalId.",
    Cloud.AZURE: (
        "For Azure, Kodori authenticates with a federated credential on its multi-tenant app; "
        "give the directory id."
    ),
    Cloud.GCP: "For Google Cloud, use workload identity federation; do not upload service-account keys.",
}


@dataclass(frozen=True)
class StaticCredentialFound:
    """One credential found: where and what, deliberately without the value (so it cannot leak via repr)."""

    field: str
    kind: CredentialKind
    cloud: Cloud | None  # None when nothing says which cloud: the message then names all three alternatives

    @property
    def message(self) -> str:
        clouds = [self.cloud] if self.cloud else list(Cloud)
        alternatives = " ".join(ALTERNATIVES[c] for c in clouds)
        return (
            f"The field '{self.field or '(top level)'}' contains {self.kind.value}. Kodori never accepts or "
            f"stores static credentials. {alternatives}"
        )


class StaticCredentialRefused(ValueError):
    """Configuration contained static credentials; the message names fields and alternatives, never values."""

    def __init__(self, findings: Sequence[StaticCredentialFound]) -> None:
        self.findings = tuple(findings)
        self.fields = tuple(dict.fromkeys(f.field for f in self.findings))
        super().__init__(" ".join(dict.fromkeys(f.message for f in self.findings)))

    def __reduce__(self) -> tuple[type[StaticCredentialRefused], tuple[tuple[StaticCredentialFound, ...]]]:
        return (type(self), (self.findings,))


# --- Shapes -------------------------------------------------------------------------------------------------

_AWS_KEY_ID = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|ASCA|ABIA|ACCA|AIPA|APKA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)
_AWS_SECRET_ASSIGNED = re.compile(
    r"(?i)(?:aws_?)?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")
_AWS_SECRET_IN_TEXT = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# STS session tokens are base64 of a binary blob that starts with a fixed header (old and current formats).
_AWS_SESSION_TOKEN = re.compile(r"(?:IQoJb3JpZ2lu|FwoGZXIvYXdz|FQoGZXIvYXdz)[A-Za-z0-9/+=]{20,}")
# Entra ID client secrets since 2021: 3 characters, a digit, "Q~", 34 more; 40 in all.
_AZURE_SECRET = re.compile(
    r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{34}(?![A-Za-z0-9_~.-])"
)
_GCP_SERVICE_ACCOUNT_TEXT = re.compile(r"\"type\"\s*:\s*\"service_account\"|\"private_key_id\"\s*:")
_GCP_API_KEY = re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----|PuTTY-User-Key-File-")

_TEXT_SHAPES: tuple[tuple[re.Pattern[str], CredentialKind], ...] = (
    (_AWS_KEY_ID, CredentialKind.AWS_ACCESS_KEY_ID),
    (_AWS_SECRET_ASSIGNED, CredentialKind.AWS_SECRET_ACCESS_KEY),
    (_AWS_SESSION_TOKEN, CredentialKind.AWS_SESSION_TOKEN),
    (_AZURE_SECRET, CredentialKind.AZURE_CLIENT_SECRET),
    (_GCP_SERVICE_ACCOUNT_TEXT, CredentialKind.GCP_SERVICE_ACCOUNT_KEY),
    (_GCP_API_KEY, CredentialKind.GCP_API_KEY),
    (_PRIVATE_KEY, CredentialKind.PRIVATE_KEY),
)

# Field names, compared lowercased with everything but letters and digits removed ("clientSecret" and
# "client_secret" are both "clientsecret"). Specific names first; then generic words.
_NAMED_KINDS: dict[str, CredentialKind] = {
    "awsaccesskeyid": CredentialKind.AWS_ACCESS_KEY_ID,
    "accesskeyid": CredentialKind.AWS_ACCESS_KEY_ID,
    "awssecretaccesskey": CredentialKind.AWS_SECRET_ACCESS_KEY,
    "secretaccesskey": CredentialKind.AWS_SECRET_ACCESS_KEY,
    "awssecretkey": CredentialKind.AWS_SECRET_ACCESS_KEY,
    "secretkey": CredentialKind.AWS_SECRET_ACCESS_KEY,
    "awssessiontoken": CredentialKind.AWS_SESSION_TOKEN,
    "sessiontoken": CredentialKind.AWS_SESSION_TOKEN,
    "awssecuritytoken": CredentialKind.AWS_SESSION_TOKEN,
    "clientsecret": CredentialKind.AZURE_CLIENT_SECRET,
    "azureclientsecret": CredentialKind.AZURE_CLIENT_SECRET,
    "privatekeyid": CredentialKind.GCP_SERVICE_ACCOUNT_KEY,
    "serviceaccountkey": CredentialKind.GCP_SERVICE_ACCOUNT_KEY,
    "serviceaccountjson": CredentialKind.GCP_SERVICE_ACCOUNT_KEY,
    "credentialsjson": CredentialKind.GCP_SERVICE_ACCOUNT_KEY,
}
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "accesskey", "privatekey", "apikey")
# Not secrets although they match: Django's CSRF token field.
_NOT_SECRET_NAMES = frozenset({"csrfmiddlewaretoken"})
# Kodori generates the ExternalId; it is random and may look like a 40-character AWS secret.
_RANDOM_BUT_PUBLIC_NAMES = ("externalid",)

_MAX_DEPTH = 32  # configuration is shallow; deeper nesting is not descended into
_MAX_JSON_TEXT = 1 << 20


def _normalize_name(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isascii() and ch.isalnum())


def _kind_for_name(name: str) -> CredentialKind | None:
    normalized = _normalize_name(name)
    if not normalized or normalized in _NOT_SECRET_NAMES:
        return None
    if normalized in _NAMED_KINDS:
        return _NAMED_KINDS[normalized]
    if "privatekey" in normalized:
        return CredentialKind.PRIVATE_KEY
    if any(word in normalized for word in _SECRET_WORDS) or normalized.endswith("token"):
        return CredentialKind.SECRET_FIELD
    return None


def _kinds_in_text(text: str) -> list[CredentialKind]:
    return [kind for pattern, kind in _TEXT_SHAPES if pattern.search(text)]


def _looks_like_aws_secret(text: str) -> bool:
    """A whole value of 40 base64 characters mixing upper case, lower case and digits."""
    return bool(
        _AWS_SECRET_VALUE.fullmatch(text)
        and any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() or c in "/+" for c in text)
    )


def _is_service_account(value: Mapping[object, object]) -> bool:
    return value.get("type") == "service_account" or "private_key_id" in value


def _has_content(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str | bytes):
        return bool(value.strip())
    if isinstance(value, Mapping | list | tuple | set):
        return bool(value)
    return True


def _child_path(field: str, name: str) -> str:
    if _kinds_in_text(name):
        name = "<redacted name>"  # a credential pasted as a key must not come back in the message
    else:
        name = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in name)[:64]
    return f"{field}.{name}" if field else name


def _items(value: Mapping[object, object]) -> Iterable[tuple[object, object]]:
    lists = getattr(value, "lists", None)  # Django's QueryDict: every value of a repeated key, not the last
    if callable(lists):
        for key, values in lists():
            for item in values:
                yield key, item
    else:
        yield from value.items()


def _walk(value: object, field: str, depth: int, found: list[StaticCredentialFound]) -> None:
    def add(kind: CredentialKind, where: str = field) -> None:
        cloud = _CLOUD_OF_KIND.get(kind) or _cloud_named_in(where)
        found.append(StaticCredentialFound(where, kind, cloud))

    if depth > _MAX_DEPTH:
        return
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    if isinstance(value, str):
        for kind in _kinds_in_text(value):
            add(kind)
        stripped = value.strip()
        leaf = field.rsplit(".", 1)[-1]
        if _looks_like_aws_secret(stripped) and not _normalize_name(leaf).endswith(_RANDOM_BUT_PUBLIC_NAMES):
            add(CredentialKind.AWS_SECRET_ACCESS_KEY)
        if stripped[:1] in ("{", "[") and len(stripped) <= _MAX_JSON_TEXT:
            try:
                parsed = json.loads(stripped)
            except ValueError:
                return
            _walk(parsed, field, depth + 1, found)
    elif isinstance(value, Mapping):
        if _is_service_account(value):
            add(CredentialKind.GCP_SERVICE_ACCOUNT_KEY)
            return
        for key, item in _items(value):
            name = str(key)
            path = _child_path(field, name)
            for kind in _kinds_in_text(name):
                add(kind, path)
            named = _kind_for_name(name)
            if named is not None and _has_content(item):
                add(named, path)
            _walk(item, path, depth + 1, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            _walk(item, f"{field}[{index}]", depth + 1, found)


def _cloud_named_in(field: str) -> Cloud | None:
    lowered = field.lower()
    for cloud, words in ((Cloud.AWS, ("aws",)), (Cloud.AZURE, ("azure",)), (Cloud.GCP, ("gcp", "google"))):
        if any(word in lowered for word in words):
            return cloud
    return None


def find_static_credentials(value: object, field: str) -> list[StaticCredentialFound]:
    """Every static credential in ``value`` (a string, or nested dicts/lists), with the path where it is."""
    found: list[StaticCredentialFound] = []
    named = _kind_for_name(field.rsplit(".", 1)[-1]) if field else None
    if named is not None and _has_content(value):
        found.append(StaticCredentialFound(field, named, _CLOUD_OF_KIND.get(named) or _cloud_named_in(field)))
    _walk(value, field, 0, found)
    unique = list(dict.fromkeys(found))
    # A field flagged both by its name ("password") and by its value (an AKIA id) keeps only the specific one.
    specific = {f.field for f in unique if f.kind is not CredentialKind.SECRET_FIELD}
    return [f for f in unique if f.kind is not CredentialKind.SECRET_FIELD or f.field not in specific]


def refuse_static_credentials(data: Mapping[str, object]) -> None:
    """Raise :class:`StaticCredentialRefused` if any field of ``data`` holds a static credential."""
    findings = find_static_credentials(data, "")
    if findings:
        raise StaticCredentialRefused(findings)


# --- Logs ---------------------------------------------------------------------------------------------------

_REDACTED = "[REDACTED]"
_PEM_BLOCK = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.S
)
# name = value, name: "value", 'name': 'value', \"name\": \"value\" (JSON inside JSON): a quoted value is
# redacted up to its closing quote, so a password with spaces goes entirely.
_ASSIGNED_SECRET = re.compile(
    r"(?i)(\b(?:aws_)?(?:secret_access_key|secret_key|session_token|security_token|access_?key(?:_?id)?|"
    r"client_?secret|private_key_id|private_key|password|passwd|passphrase|api_?key|secret|token)\b"
    r"(?:\\?[\"'])?\s*[:=]\s*)(?![\\\"']*\[REDACTED)"
    r"(\\\"(?:[^\"\\]|\\[^\"])*(?:\\\")?|\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|[^\s\"',;&}\\]+)"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+")


def _redact_assigned(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = '\\"' if value.startswith('\\"') else value[0] if value[0] in "\"'" else ""
    return f"{match.group(1)}{quote}{_REDACTED}{quote}"


def _redact_bare_secret(match: re.Match[str]) -> str:
    return _REDACTED if _looks_like_aws_secret(match.group(0)) else match.group(0)


def redact_static_credentials(text: str) -> str:
    """``text`` with every credential shape replaced by ``[REDACTED]`` (names of fields are kept)."""
    text = _PEM_BLOCK.sub(_REDACTED, text)
    text = _ASSIGNED_SECRET.sub(_redact_assigned, text)
    text = _BEARER.sub(lambda m: m.group(1) + _REDACTED, text)
    for pattern, _kind in _TEXT_SHAPES:
        if pattern is not _GCP_SERVICE_ACCOUNT_TEXT and pattern is not _PRIVATE_KEY:
            text = pattern.sub(_REDACTED, text)
    return _AWS_SECRET_IN_TEXT.sub(_redact_bare_secret, text)


class RedactStaticCredentialsFilter(logging.Filter):
    """A logging filter that rewrites records so no static credential shape reaches a handler.

    It never drops a record; it formats the message with its arguments, redacts the result, and redacts
    the formatted traceback and stack too (formatters reuse ``exc_text`` once it is set).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)  # a broken format string: still never let its pieces through unredacted
        redacted = redact_static_credentials(message)
        if redacted != message:  # otherwise leave msg and args alone: tools group records by the template
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_static_credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_static_credentials(record.stack_info)
        return True
