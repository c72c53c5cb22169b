"""Several files chosen on ``/blobs`` for one archive: which ids it takes, checked before the first byte.

``choose`` turns the ids a form posted into the tenant's blobs, in the order they were posted, or refuses the
whole selection with a message that says what to change; it never drops a file silently, because an archive
that quietly lacks a file the person ticked reads as complete. The refusals, in order:

* nothing selected, more than ``MAX_FILES``, or an id that is not a UUID: 400;
* an id that is not a finished file of this tenant (another tenant's, deleted meanwhile, forged): 404, with
  how many, never whose, so another tenant's ids confirm nothing;
* a file marked damaged (``blobs.damage``), or one whose key, stored object, header or final chunk fails the
  checks a download makes before its first byte (``downloads.check_servable``, which records new damage): 409
  or the download's own error (503 for a key Kodori cannot use), naming the file.

The archive itself is written by ``offboarding.selection``: the archive writer lives in that app, above this
one, and ``blobs`` imports nothing above itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from django.http import HttpRequest

from tenants.models import Tenant

from . import downloads
from .errors import BadRequest, BlobError, CorruptBlob, NotFound, check_readable
from .models import Blob

# Enough for every row of a page of /blobs ("select all"); each file is opened and checked before the reply.
MAX_FILES = 100


class DamagedSelection(BlobError):
    """A selected file is known to be damaged: the archive would have to stop short, so it is not begun."""

    status = 409
    code = "blob_damaged"


def parse_ids(raw: Iterable[str]) -> list[UUID]:
    """The posted ids, each once, in their order; 400 for none, too many or one that is not an id."""
    ids: list[UUID] = []
    for value in raw:
        try:
            blob_id = UUID(value.strip())
        except ValueError:
            raise BadRequest("That selection is not valid; reload the list and select again.") from None
        if blob_id not in ids:
            ids.append(blob_id)
    if not ids:
        raise BadRequest("Select at least one file to download.")
    if len(ids) > MAX_FILES:
        raise BadRequest(
            f"Select at most {MAX_FILES} files for one archive; {len(ids)} were selected. "
            "Download them in several archives."
        )
    return ids


def choose(request: HttpRequest, tenant: Tenant, raw_ids: Iterable[str]) -> list[Blob]:
    """The selected files of ``tenant``, each checked as a download checks it before its first byte."""
    ids = parse_ids(raw_ids)
    check_readable(tenant)
    chosen = Blob.objects.visible_in(tenant).select_related("tenant").filter(pk__in=ids)
    found = {blob.pk: blob for blob in chosen}
    missing = len(ids) - len(found)
    if missing:
        raise NotFound(
            f"{missing} of the {len(ids)} selected files {'is' if missing == 1 else 'are'} not among "
            f"{tenant.name}'s files (deleted meanwhile?). Nothing was sent; reload the list and select again."
        )
    blobs = [found[blob_id] for blob_id in ids]
    damaged = [blob.name for blob in blobs if blob.is_damaged]
    if damaged:
        raise DamagedSelection(_damaged_message(damaged))
    for blob in blobs:
        try:
            downloads.check_servable(request, blob)
        except CorruptBlob:
            raise DamagedSelection(_damaged_message([blob.name])) from None
    return blobs


def _damaged_message(names: list[str]) -> str:
    one = len(names) == 1
    shown = ", ".join(f"“{name}”" for name in names[:5])
    if len(names) > 5:
        shown += f" and {len(names) - 5} more"
    return (
        f"{shown} {'is' if one else 'are'} damaged in storage, and Kodori does not serve bytes that fail "
        f"authentication. Nothing was sent: unselect the damaged {'file' if one else 'files'} and download "
        "the others; the file's page says what to do about the damage."
    )
