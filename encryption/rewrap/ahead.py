"""The walk's crypto for one batch, and sealing the next batch while PostgreSQL writes this one.

A batch's time is mostly PostgreSQL's: the UPDATE writes a new heap tuple and four index entries per row, and
the commit waits for the WAL flush. Opening and sealing the data keys is this process's work, about a fifth of
the whole when done in between (bench/rewrap.py). So while batch N's UPDATE and commit run, a thread seals
batch N+1 (the main thread then waits on the socket and holds no GIL): the crypto costs no wall-clock time.

What keeps this as safe as sealing inside the batch:

- Batch N+1's rows are read and their wraps counted on the target (``_count_wraps``) in batch N's
  transaction, before they are sealed. Counted and never used is allowed (the counter may run ahead of the
  nonces used, never behind).
- A prepared batch becomes usable only once batch N's transaction has committed (:meth:`Ahead.committed`);
  when it rolls back, the rows, the count and the sealed values are all dropped.
- It is used only if the job still stands where it was: same source and target and the cursor at batch N's
  last row (:class:`Plan`). Another worker that took batch N+1 meanwhile moved the cursor, and the prepared
  values are dropped. Batch N+1's own transaction then re-reads both versions: a key made active again, or a
  target no longer active, sends it back to the ordinary path.
- The UPDATE's compare-and-swap on the old version id skips rows deleted or moved since they were read.

Plaintext keys live in the locals of :func:`seal_rows` and of ``aead.Rewrapper`` only; the prepared batch
holds wrapped values.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.views.decorators.debug import sensitive_variables

from encryption import aead, keyring

if TYPE_CHECKING:
    from encryption.models import TenantKeyVersion

logger = logging.getLogger(__name__)

# One data-key row as the walk reads it: id, the blob id's 16 bytes, the wrapped DEK, the format version.
Row = tuple[int, bytes, bytes, int]


@dataclass(frozen=True)
class Sealed:
    """A batch ready to write: the rows that opened, sealed under the target, and how many did not."""

    ids: list[int]
    wrapped: list[bytes]
    unreadable: int
    read: int  # rows read (moved + unreadable)
    last_id: int  # the cursor after this batch


@dataclass(frozen=True)
class Plan:
    """Where the job must stand for a prepared batch to be the right next one."""

    job_id: int
    source_id: int
    target_id: int
    after_id: int


@sensitive_variables("source_key", "target_key", "rewrapper")
def seal_rows(
    tenant_id: int, source_id: int, target_id: int, source_key: bytes, target_key: bytes, rows: list[Row]
) -> Sealed:
    """Open each row's DEK under the source version and seal it under the target with its new associated
    data (``keyring.dek_aad``; the DEK itself, and so the blob's bytes, never change)."""
    rewrapper = aead.Rewrapper(source_key, target_key)
    parts: dict[int, tuple[bytes, bytes, bytes]] = {}
    items: list[tuple[bytes, bytes, bytes]] = []
    for _, blob_id, old, format_version in rows:
        if format_version not in parts:  # built once a batch per format version
            prefix, old_suffix = keyring.dek_aad_parts(tenant_id, source_id, format_version)
            _, new_suffix = keyring.dek_aad_parts(tenant_id, target_id, format_version)
            parts[format_version] = (prefix, old_suffix, new_suffix)
        prefix, old_suffix, new_suffix = parts[format_version]
        items.append((old, prefix + blob_id + old_suffix, prefix + blob_id + new_suffix))
    ids: list[int] = []
    wrapped: list[bytes] = []
    for row, new in zip(rows, rewrapper.rewrap_many(items), strict=True):
        if new is None:
            logger.error(
                "rewrap: data key %s of tenant %s does not authenticate; left in place", row[0], tenant_id
            )
            continue
        ids.append(row[0])
        wrapped.append(new)
    return Sealed(ids, wrapped, len(rows) - len(ids), len(rows), rows[-1][0])


class Ahead:
    """At most one prepared batch of one walk: pending while its transaction is open, then ready."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._pending: tuple[Plan, Future[Sealed], TenantKeyVersion] | None = None
        self._ready: tuple[Plan, Future[Sealed], TenantKeyVersion] | None = None

    def prepare(
        self,
        plan: Plan,
        source: TenantKeyVersion,
        source_key: bytes,
        target_key: bytes,
        tenant_id: int,
        rows: list[Row],
    ) -> None:
        """Start sealing ``rows`` (read and counted in the current transaction) in the background."""
        future = self._pool.submit(
            seal_rows, tenant_id, plan.source_id, plan.target_id, source_key, target_key, rows
        )
        self._pending = (plan, future, source)

    def committed(self) -> None:
        """The transaction that prepared the pending batch committed: it may be used."""
        self._ready, self._pending = self._pending, None

    def drop_pending(self) -> None:
        """The transaction rolled back (or prepared nothing): forget what it prepared."""
        self._pending = None

    def take(self, plan: Plan) -> tuple[Sealed, TenantKeyVersion] | None:
        """The ready batch, and the source version it was read from, if it was prepared for exactly ``plan``;
        it is used once either way."""
        ready, self._ready = self._ready, None
        if ready is None or ready[0] != plan:
            return None
        return ready[1].result(), ready[2]
