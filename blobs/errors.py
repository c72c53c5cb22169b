"""What can go wrong with a blob operation, as errors that carry their HTTP status and a message for people.

Pages render ``message`` in a page; the API answers ``{"error": {"code": code, "message": message}}``. Key
and provider failures are translated here (``from_key_error``) so that pages and the API name the same cause.
"""

from __future__ import annotations

from encryption.keyring import KeyUnavailable
from encryption.providers import FailureKind, ProviderError
from tenants import lifecycle
from tenants.models import Tenant


class BlobError(Exception):
    """Base class: ``status`` (HTTP), ``code`` (stable, for programs) and a message a person can act on."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(BlobError):
    pass


class Unauthorized(BlobError):
    status = 401
    code = "unauthorized"


class Forbidden(BlobError):
    status = 403
    code = "forbidden"


class NotFound(BlobError):
    status = 404
    code = "not_found"


class MethodNotAllowed(BlobError):
    status = 405
    code = "method_not_allowed"


class LengthRequired(BlobError):
    status = 411
    code = "length_required"


class TooLarge(BlobError):
    status = 413
    code = "too_large"


class QuotaExceeded(BlobError):
    status = 413
    code = "quota_exceeded"


class RangeNotSatisfiable(BlobError):
    status = 416
    code = "range_not_satisfiable"


class IncompleteUpload(BlobError):
    """The body ended before its Content-Length, or the client went away."""

    code = "incomplete_body"


class Unavailable(BlobError):
    """The tenant's key cannot be used (sealed, disabled, denied) or storage is down: nothing was changed."""

    status = 503
    code = "unavailable"


class TenantSealed(Unavailable):
    code = "tenant_sealed"


class KeyNotUsable(Unavailable):
    code = "key_unavailable"


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"


class TenantReadOnly(BlobError):
    """The tenant is scheduled for deletion (read-only) or being erased: the write was refused."""

    status = 409
    code = "tenant_read_only"


class TenantErased(BlobError):
    """The tenant's erasure has begun: its keys are destroyed, so nothing can be read any more."""

    status = 410
    code = "tenant_erased"


class CorruptBlob(BlobError):
    """The stored bytes do not authenticate: never served, reported as a server error."""

    status = 500
    code = "blob_corrupt"


def check_not_sealed(tenant: Tenant) -> None:
    """Refuse every read and write of a sealed tenant's blobs, naming the cause."""
    if tenant.is_sealed:
        reason = tenant.seal_reason or "Kodori cannot use the tenant's key."
        raise TenantSealed(
            f"{tenant.name} is sealed: {reason} Files cannot be read or written until Kodori can use the "
            "key again; nothing has been changed or lost.",
            headers={"Retry-After": "60"},
        )


def check_writable(tenant: Tenant) -> None:
    """Refuse an upload or a delete of a tenant that is scheduled for deletion, being erased, or sealed."""
    try:
        lifecycle.check_writable(tenant)
    except lifecycle.TenantReadOnly as exc:
        raise TenantReadOnly(str(exc)) from None
    check_not_sealed(tenant)


def check_readable(tenant: Tenant) -> None:
    """Refuse a download of a tenant whose erasure has begun, or that is sealed."""
    try:
        lifecycle.check_readable(tenant)
    except lifecycle.TenantReadOnly as exc:
        raise TenantErased(str(exc)) from None
    check_not_sealed(tenant)


def from_key_error(exc: KeyUnavailable | ProviderError) -> BlobError:
    """The answer for a key that failed during an operation: 503 naming the cause (500 for a data key that
    does not match its blob). The seal state itself is not changed here."""
    cause = str(exc) or "The key protecting this file cannot be used right now."
    if isinstance(exc, ProviderError) and exc.kind == FailureKind.INTEGRITY:
        return CorruptBlob(f"This file's key does not match it: {cause}")
    if isinstance(exc, ProviderError) and not exc.seals:
        return KeyNotUsable(f"The key provider did not answer: {cause} Try again shortly.")
    # Kodori's own refusals already name the key and what to do; a provider's answer gets that context.
    lead = "" if isinstance(exc, KeyUnavailable) else "The key protecting this file cannot be used: "
    return KeyNotUsable(f"{lead}{cause} Nothing has been changed or lost.", headers={"Retry-After": "60"})
