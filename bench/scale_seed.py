"""What ``bench/scale.py`` measures on: a big tenant and a second one, their blobs, data keys, audit chains.

Rows go into the real tables through SQL, one transaction and one COPY per table for each chunk of uploads:
``data_keys`` with real wrapped DEKs (a random DEK sealed with ``aead.seal`` under the row's key version and
``keyring.dek_aad``, as an upload wraps it), ``blobs`` pointing at them (``ready``; no object is stored, as
nothing measured reads one), and a ``blob.uploaded`` event per blob appended to its tenant's audit chain with
the chain's own hashing (``audit.encoding.event_hash``), so ``/audit`` verifies green. Counter columns are
never written (triggers keep them); ``wrap_count``, the nonce counter an upload bumps, is raised per version.

Both tenants' uploads are interleaved in time over two years ending now. The big tenant's data keys are spread
over three key versions (v1 under a retired Kodori-managed KEK, v2 and the active v3 under the active one).
Names come from a word list with Zipf-like weights (``NameMaker``): dated documents, versioned files, camera
photos (many duplicates), scans, statements, backups, meeting notes; ``TERMS`` are a rare, a medium and a
common search term, their exact counts (case-insensitive substring, as ``icontains``) kept in the seed record.
The key set-up events (rotations) are appended at seeding time, before the back-dated upload events.
"""

from __future__ import annotations

import math
import mimetypes
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CHUNK_ROWS = 100_000
SPAN = timedelta(days=730)
# The big tenant's data keys by key version, in upload order: v1 (retired KEK), v2 (retired), v3 (active).
VERSION_SHARES = (0.4, 0.3, 0.3)
TERMS = {"rare": "kilimanjaro", "medium": "invoice", "common": "report"}

_SUBJECTS = (  # noqa: SIM905 (a word list reads better as words)
    "report budget project plan contract proposal summary notes agenda minutes presentation forecast "
    "analysis review draft final roadmap design spec requirements schedule timesheet payroll expenses "
    "receipt invoice quote order statement tax audit policy handbook manual guide training onboarding "
    "checklist inventory pricing catalog brochure newsletter press release campaign marketing sales "
    "leads customers survey results feedback interview resume cover letter reference certificate license "
    "permit insurance claim warranty lease mortgage loan bank transfer ledger balance sheet cashflow "
    "dividend shareholders board strategy offsite retreat workshop webinar slides poster logo branding "
    "mockup wireframe prototype release changelog backlog sprint retrospective incident postmortem "
    "runbook architecture diagram database migration benchmark dataset export import archive photo scan "
    "family holiday wedding birthday recipe garden renovation floorplan utilities electricity water "
    "internet phone school homework thesis paper lecture syllabus grades transcript passport visa "
    "itinerary tickets hotel"
).split()
_CLIENTS = (  # noqa: SIM905
    "Acme Globex Initech Umbrella Hooli Stark Wayne Wonka Cyberdyne Soylent Tyrell Vandelay Massive "
    "Dynamic Aperture Gringotts Oscorp Pied Piper Dunder Mifflin Prestige Nakatomi Monarch Octan "
    "Virtucon Zorg"
).split()
_HOSTS = ("db-01", "db-02", "web-01", "web-02", "files", "nas", "laptop", "mail", "ci", "vault")
_EXTENSIONS = ("pdf", "docx", "xlsx", "pptx", "csv", "txt", "md", "png", "jpg", "zip", "json", "mp4")
RARE_NAMES = 20  # about this many names of a tenant hold the rare term, whatever its size


class NameMaker:
    """Realistic, varied file names (with duplicates), and a plausible size and content type for each."""

    def __init__(self, seed: int, rows: int) -> None:
        self.rng = random.Random(seed)
        self._rare_every = max(rows, 1) * 1.5 / RARE_NAMES  # a name draws 1.5 subjects on average
        weights = [1.0 / (rank + 1) for rank in range(len(_SUBJECTS))]
        self._subjects = list(_SUBJECTS)
        self._cum = list(_accumulate(weights))

    def subject(self) -> str:
        if self.rng.random() * self._rare_every < 1:
            return TERMS["rare"]
        return self.rng.choices(self._subjects, cum_weights=self._cum)[0]

    def name(self, when: datetime) -> str:
        rng, pick = self.rng, self.rng.random()
        day = when - timedelta(days=rng.randint(0, 60))
        ext = rng.choice(_EXTENSIONS)
        if pick < 0.35:
            return f"{self.subject().capitalize()} {self.subject()} {day:%Y-%m-%d}.{ext}"
        if pick < 0.55:
            return f"{self.subject()}_{self.subject()}_v{rng.randint(1, 12)}.{ext}"
        if pick < 0.70:
            return rng.choice(
                (f"IMG_{rng.randint(0, 9999):04d}.jpg", f"DSC{rng.randint(0, 99999):05d}.JPG",
                 f"PXL_{day:%Y%m%d}_{rng.randint(0, 235959):06d}.jpg")
            )  # fmt: skip
        if pick < 0.80:
            return f"Scan {day:%Y-%m-%d} {rng.randint(7, 19):02d}.{rng.randint(0, 59):02d}.pdf"
        if pick < 0.90:
            return f"{rng.choice(_CLIENTS)} statement {day:%B %Y}.pdf"
        if pick < 0.95:
            return f"backup-{rng.choice(_HOSTS)}-{day:%Y%m%d}.tar.gz"
        return f"Meeting notes {day:%B} {day.day} {self.subject()}.docx"

    def size(self) -> int:
        return min(int(math.exp(self.rng.gauss(10.0, 2.0))), 8 * 1024**3)


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@dataclass
class Chain:
    """Where a tenant's audit chain stands while events are appended to it."""

    tenant_id: int
    seq: int
    prev_hash: str


@dataclass
class SeedTenant:
    """A tenant being seeded: its users (uploaders), key versions (by id, with their keys) and chain."""

    tenant: Any
    users: list[Any]
    versions: list[Any]
    keys: dict[int, bytes]
    chain: Chain
    names: NameMaker
    rows: int
    done: int = 0
    bytes: int = 0
    per_version: dict[int, int] = field(default_factory=dict)
    term_counts: dict[str, int] = field(default_factory=dict)

    def version_for(self, index: int) -> Any:
        if len(self.versions) == 1:
            return self.versions[0]
        edge = 0.0
        for share, tkv in zip(VERSION_SHARES, self.versions, strict=True):
            edge += share
            if index < edge * self.rows:
                return tkv
        return self.versions[-1]


def sql(statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _column_types(table: str, columns: list[str]) -> list[str]:
    """PostgreSQL's type names of ``columns``, for a binary COPY."""
    rows = dict(
        sql(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            [table],
        )
    )
    return [str(rows[c]) for c in columns]


def _rotate_kek(tenant: Any) -> Any:
    """A new Kodori-managed KEK made active (the current one retires), as ``bench/rewrap.py`` rotates."""
    from encryption import keyring, services
    from encryption.models import KeyStatus, TenantKey, WrapMethod

    kek = TenantKey.objects.create(tenant=tenant, wrap_method=WrapMethod.GLOBAL, status=KeyStatus.PENDING)
    services.activate_key(kek)
    return keyring.active_tkv(tenant)


def _make_tenant(slug: str, name: str, people: list[tuple[str, str, str]], rows: int, seed: int,
                 versions: int) -> SeedTenant:  # fmt: skip
    from bench.support import make_user
    from encryption import keyring
    from tenants.models import Membership, Role, Tenant

    tenant = Tenant.objects.create(slug=slug, name=name)
    users = []
    for index, (first, last, email) in enumerate(people):
        user = make_user(email, first_name=first, last_name=last)
        role = Role.OWNER if index == 0 else Role.ADMIN if index == 1 else Role.MEMBER
        Membership.objects.create(user=user, tenant=tenant, role=role)
        users.append(user)
    tkvs = [keyring.active_tkv(tenant)]
    if versions > 1:
        tkvs.append(_rotate_kek(tenant))
    while len(tkvs) < versions:
        tkvs.append(keyring.add_key_version(tenant))
    head = sql(
        "SELECT seq, hash FROM audit_auditevent WHERE tenant_id = %s ORDER BY seq DESC LIMIT 1", [tenant.pk]
    )
    from audit.verify_bundle import GENESIS_HASH

    chain = Chain(tenant.pk, int(head[0][0]), str(head[0][1])) if head else Chain(tenant.pk, 0, GENESIS_HASH)
    return SeedTenant(
        tenant=tenant,
        users=users,
        versions=tkvs,
        keys={t.pk: keyring.tkv_key(t) for t in tkvs},
        chain=chain,
        names=NameMaker(seed, rows),
        rows=rows,
    )


def _interleave(big: int, other: int) -> list[bool]:
    """For each upload in time order, whether it is the other tenant's: evenly spread among the big one's."""
    total = big + other
    return [(i + 1) * other // total > i * other // total for i in range(total)]


_BLOB_COLUMNS = [
    "id", "tenant_id", "name", "content_type", "size", "status", "created_by_id", "created_by_email",
    "created_at", "completed_at", "storage_key", "format_version", "data_key_id", "damage",
]  # fmt: skip
_DEK_COLUMNS = ["id", "tenant_id", "blob_id", "tkv_id", "wrapped_dek", "format_version", "created_at"]
_EVENT_COLUMNS = (
    "tenant_id, seq, type, created_at, actor_id, actor_name, actor_email, request_id, ip, payload, "
    "prev_hash, hash"
)


def _load_chunk(owners: list[SeedTenant], start: datetime, step: timedelta, first: int, count: int,
                dek_id: int) -> int:  # fmt: skip
    """Rows ``first .. first + count`` of the time line, in one transaction. Returns the next data key id."""
    from django.db import connection, transaction

    from audit.encoding import canonical_json, event_hash, format_time
    from blobs.models import BlobStatus, storage_key_for
    from encryption import aead, keyring
    from encryption.format.envelope import FORMAT_VERSION

    deks: list[tuple[Any, ...]] = []
    blobs: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for i in range(first, first + count):
        seeded = owners[i]
        tenant_id, j = seeded.tenant.pk, seeded.done
        seeded.done += 1
        created = start + step * i + timedelta(microseconds=seeded.names.rng.randint(0, 999_999))
        completed = created + timedelta(milliseconds=seeded.names.rng.randint(40, 4000))
        blob_id = uuid.uuid4()
        name = seeded.names.name(created)
        size = seeded.names.size()
        seeded.bytes += size
        user = seeded.users[j % len(seeded.users)]
        tkv = seeded.version_for(j)
        seeded.per_version[tkv.pk] = seeded.per_version.get(tkv.pk, 0) + 1
        lowered = name.lower()
        for term in TERMS.values():
            if term in lowered:
                seeded.term_counts[term] = seeded.term_counts.get(term, 0) + 1
        aad = keyring.dek_aad(tenant_id, blob_id, tkv.pk, FORMAT_VERSION)
        deks.append((dek_id, tenant_id, blob_id, tkv.pk, aead.seal(seeded.keys[tkv.pk], os.urandom(32), aad),
                     FORMAT_VERSION, created))  # fmt: skip
        blobs.append((blob_id, tenant_id, name, content_type(name), size, BlobStatus.READY.value, user.pk,
                      user.email, created, completed, storage_key_for(tenant_id, blob_id), FORMAT_VERSION,
                      dek_id, ""))  # fmt: skip
        dek_id += 1
        chain = seeded.chain
        chain.seq += 1
        payload = {"blobId": str(blob_id), "name": name, "size": size, "keyVersion": tkv.version}
        record = {
            "seq": chain.seq, "tenant": tenant_id, "type": "blob.uploaded",
            "created_at": format_time(completed), "actor_id": user.pk, "actor_name": user.get_full_name(),
            "actor_email": user.email,
            "request_id": uuid.uuid4().hex, "ip": f"198.51.100.{j % 200 + 1}", "payload": payload,
            "prev_hash": chain.prev_hash,
        }  # fmt: skip
        chain.prev_hash = event_hash(record)
        events.append((tenant_id, chain.seq, "blob.uploaded", completed, user.pk, record["actor_name"],
                       user.email, record["request_id"], record["ip"], canonical_json(payload).decode(),
                       record["prev_hash"], chain.prev_hash))  # fmt: skip
    dek_types, blob_types = _column_types("data_keys", _DEK_COLUMNS), _column_types("blobs", _BLOB_COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(f"COPY data_keys ({', '.join(_DEK_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(dek_types)
            for row in deks:
                copy.write_row(row)
        with raw.copy(f"COPY blobs ({', '.join(_BLOB_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(blob_types)
            for row in blobs:
                copy.write_row(row)
        with raw.copy(f"COPY audit_auditevent ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in events:
                copy.write_row(row)
    return dek_id


PEOPLE_BIG = [
    ("Ada", "Lovelace", "owner@big.scale.test"), ("Grace", "Hopper", "admin@big.scale.test"),
    ("Alan", "Turing", "alan@big.scale.test"), ("Edsger", "Dijkstra", "edsger@big.scale.test"),
    ("Barbara", "Liskov", "barbara@big.scale.test"),
]  # fmt: skip
PEOPLE_OTHER = [
    ("Ken", "Thompson", "owner@other.scale.test"), ("Dennis", "Ritchie", "dennis@other.scale.test"),
]  # fmt: skip


def seed(big_rows: int, other_rows: int) -> dict[str, Any]:
    """Seed both tenants; returns the seed record ``bench/scale.py`` keeps beside the database."""
    from django.db.models import F

    from audit import chain
    from blobs import services
    from encryption.models import TenantKeyVersion

    began = time.perf_counter()
    big = _make_tenant("scale-big", "Big Scale Co", PEOPLE_BIG, big_rows, 17, 3)
    other = _make_tenant("scale-other", "Other Scale Co", PEOPLE_OTHER, other_rows, 18, 1)
    owners = [other if mine else big for mine in _interleave(big_rows, other_rows)]
    total = len(owners)
    end = datetime.now(UTC) - timedelta(minutes=5)
    start, step = end - SPAN, SPAN / max(total, 1)
    ((max_id,),) = sql("SELECT coalesce(max(id), 0) FROM data_keys")
    dek_id = int(max_id) + 1
    for first in range(0, total, CHUNK_ROWS):
        dek_id = _load_chunk(owners, start, step, first, min(CHUNK_ROWS, total - first), dek_id)
        print(f"  seeded {first + min(CHUNK_ROWS, total - first):,} of {total:,} rows "
              f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
    sql("SELECT setval(pg_get_serial_sequence('data_keys', 'id'), %s)", [dek_id - 1])
    for seeded in (big, other):
        for pk, n in seeded.per_version.items():
            TenantKeyVersion.objects.filter(pk=pk).update(wrap_count=F("wrap_count") + n)
    loaded = time.perf_counter()
    for table in ("data_keys", "blobs", "audit_auditevent"):
        sql(f"VACUUM (ANALYZE) {table}")
    sql("CHECKPOINT")
    vacuumed = time.perf_counter()
    for seeded in (big, other):
        status = chain.verify(seeded.tenant, full=True, found_by="bench seed")
        if not status.complete:
            raise RuntimeError(f"the seeded chain of {seeded.tenant.slug} does not verify: {status}")
    verified = time.perf_counter()
    _token, secret = services.create_token(big.tenant, big.users[0], "scale bench")
    return {
        "blobs": big_rows,
        "other": other_rows,
        "big": big.tenant.slug,
        "other_slug": other.tenant.slug,
        "owner": big.users[0].email,
        "token": secret,
        "terms": {kind: [term, big.term_counts.get(term, 0)] for kind, term in TERMS.items()},
        "per_version": {str(t.version): big.per_version.get(t.pk, 0) for t in big.versions},
        "bytes": big.bytes,
        "seconds": {
            "load": round(loaded - began, 1),
            "vacuum": round(vacuumed - loaded, 1),
            "verify": round(verified - vacuumed, 1),
        },
        "seeded_at": datetime.now(UTC).isoformat(),
    }


def describe(seed: dict[str, Any]) -> None:
    """The machine, the server and the seeded data, in two lines."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "unknown",
    )  # fmt: skip
    ((version,),) = sql("SHOW server_version")
    ((buffers,),) = sql("SHOW shared_buffers")
    sizes = sql(
        "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
        "('blobs', 'data_keys', 'audit_auditevent') ORDER BY relname"
    )
    mib = ", ".join(f"{name} {n / 2**20:,.0f} MiB" for name, n in sizes)
    print(
        f"scale: {os.cpu_count()} x {cpu}, load average {os.getloadavg()[0]:.2f}, PostgreSQL {version} "
        f"(shared_buffers {buffers}); tables with their indexes: {mib}"
    )
    terms = ", ".join(f"{kind} '{term}' ({n:,} names)" for kind, (term, n) in seed["terms"].items())
    versions = ", ".join(f"v{v}: {n:,}" for v, n in seed["per_version"].items())
    print(f"  big tenant: {seed['blobs']:,} blobs (data keys by version {versions}); other tenant: "
          f"{seed['other']:,} blobs; search terms {terms}")  # fmt: skip


def check_counters(seed: dict[str, Any]) -> list[str]:
    """What the app counts (per key version; per tenant where it keeps totals) must equal what was seeded:
    maintained counters included, which a migration adding them to a seeded database must fill in."""
    from blobs import models as blob_models
    from encryption.coverage import version_coverage
    from tenants.models import Tenant

    failures = []
    tenant = Tenant.objects.get(slug=seed["big"])
    counted = {str(v.tkv.version): v.data_keys for v in version_coverage(tenant)}
    if counted != seed["per_version"]:
        failures.append(f"data keys by version {counted} != seeded {seed['per_version']}")
    stats = getattr(blob_models, "TenantBlobStats", None)
    if stats is not None and hasattr(stats, "of"):
        now = stats.of(tenant.pk)
        if (now.ready_count, now.ready_bytes) != (seed["blobs"], seed.get("bytes", now.ready_bytes)):
            failures.append(f"tenant totals: {now.ready_count:,} files, {now.ready_bytes:,} bytes != seeded")
    return failures
