"""Benchmark of KMS traffic: many small uploads for a tenant on a customer AWS key, counting KMS calls.

Starts a private PostgreSQL and Redis (or uses ``DATABASE_URL`` / ``REDIS_URL`` when both are set) and the
AWS emulator in this process (moto behind the enforcing proxy, ``emulators/aws.py``). It then does what a
customer and Kodori do:

1. the customer creates a symmetric key and a role that trusts Kodori's principal with the tenant's
   ExternalId, allowed ``kms:Encrypt`` and ``kms:Decrypt`` on that key only;
2. Kodori registers it (``encryption.services.register_key``) and verifies it (``verify_key``: the probe,
   then activation, which wraps a new tenant key version under the key);
3. the process forgets every unwrapped key and AWS session (``keyring.cache.clear()``,
   ``providers.aws.reset_clients()``), so the uploads start as in a freshly started web process;
4. ``--uploads`` small uploads (10,000; 1,000 with ``--quick``) go through the blobs app's own upload service
   (``blobs.uploads.Upload``: data key, ``uploading`` row, streaming encryption to the blob storage,
   ``finish`` with its audit event), from ``--threads`` threads;
5. a sample of the blobs is read back and decrypted, to show the uploads are real.

KMS calls are counted where they arrive, at the emulator (``emulator.counts()``: every KMS and STS operation
that reached it), and the unwrapped-TKV cache's hits and misses in ``encryption.keyring.cache``. Only the
upload phase counts; the setup's calls are printed separately. "KMS calls" include the STS ``AssumeRole`` that
the first KMS call of a role session needs. Final line::

    kms calls_per_10k_uploads=<n> cache_hit_ratio=<r>

``n`` is the upload phase's calls scaled to 10,000 uploads (exact for the default run); ``r`` is
hits / (hits + misses) over the upload phase. Target (issue 5): at most 2 KMS calls per process per cache
TTL (``KODORI_TKV_CACHE_TTL_CUSTOMER``, 300 s; ``--ttl`` sets it for this run to see several TTLs pass).

Run from the repository root: ``python bench/kms.py [--uploads N] [--quick] [--size BYTES] [--threads N]
[--ttl SECONDS]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import django_environment, run_cleanups, start_django, start_servers  # noqa: E402

ROLE_NAME = "kodori-bench-tenant"
KEY_ALIAS = "alias/kodori-bench"
AMBIENT_AWS_VARIABLES = (
    "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)  # fmt: skip
STS_OPERATIONS = frozenset({"AssumeRole", "GetCallerIdentity", "AssumeRoleWithWebIdentity"})


# --- Servers and settings ----------------------------------------------------------------------------------


def configure_environment(
    root: Path, database_url: str, redis_url: str, emulator: Any, ttl: float | None
) -> None:
    """Everything Django and boto3 read, set before ``django.setup()``: no real AWS configuration at all."""
    empty = root / "aws-empty"
    empty.write_text("")
    for name in AMBIENT_AWS_VARIABLES:
        os.environ.pop(name, None)
    aws = emulator.settings()
    os.environ.update(
        {
            **django_environment(root, database_url, redis_url),
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
            # Kodori's own (emulated) identity; in production boto3's default chain finds the pod's role.
            "AWS_ACCESS_KEY_ID": aws["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": aws["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": aws["AWS_REGION"],
            "KODORI_AWS_ENDPOINT_URL": aws["AWS_ENDPOINT_URL"],
        }
    )
    if ttl is not None:
        os.environ["KODORI_TKV_CACHE_TTL_CUSTOMER"] = str(ttl)


def setup_django() -> None:
    start_django()
    # boto3 announces where it found Kodori's identity each time a session is made: noise here.
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)


# --- The customer's side and Kodori's registration ---------------------------------------------------------


def register_customer_key(emulator: Any) -> tuple[Any, Any, str]:
    """A tenant with cloud KMS on and an active customer AWS key. Returns (tenant, user, key ARN)."""
    from django.contrib.auth import get_user_model

    from encryption import services
    from encryption.models import KeyStatus, WrapMethod
    from tenants.models import Membership, Role, Tenant

    # Unique names: a reused DATABASE_URL may hold an earlier run's tenant.
    run = secrets.token_hex(4)
    tenant = Tenant.objects.create(slug=f"kms-bench-{run}", name="KMS bench", cloud_kms_enabled=True)
    email = f"owner-{run}@kms-bench.example"
    user = get_user_model().objects.create_user(username=email, email=email, password=None)
    Membership.objects.create(user=user, tenant=tenant, role=Role.OWNER)

    # The customer's part: a key, and a role trusting Kodori's principal with the ExternalId Kodori generated
    # for the tenant (shown on its key page), allowed only Encrypt and Decrypt on that one key.
    key_arn = emulator.create_key(alias=KEY_ALIAS, description="Kodori KMS benchmark KEK")
    role_arn = emulator.create_tenant_role(
        ROLE_NAME, services.external_id_for(tenant), key_arn, actions=["kms:Encrypt", "kms:Decrypt"]
    )

    config = {"region": emulator.region, "role_arn": role_arn}
    key = services.register_key(tenant, WrapMethod.CUSTOMER_KMS_AWS, key_arn, config, actor=user)
    # register_key queues the probe for a Celery worker after commit; run it here instead (it is idempotent,
    # so the queued copy, if a worker ever takes it, changes nothing).
    key = services.verify_key(key.pk)
    if key.status != KeyStatus.ACTIVE:
        raise SystemExit(f"the key did not verify: {key.status} {key.last_verify_error}")
    tenant.refresh_from_db()
    return tenant, user, key_arn


# --- Uploads -----------------------------------------------------------------------------------------------


def upload_one(tenant: Any, user: Any, index: int, size: int) -> uuid.UUID:
    from blobs.uploads import Upload

    data = os.urandom(size)
    upload = Upload.begin(tenant, user, f"small-{index:05d}.bin", "application/octet-stream", len(data))
    try:
        upload.write(data)
        blob = upload.finish(expected_size=len(data))
    except BaseException:
        upload.abort()
        raise
    return blob.pk


def run_uploads(
    tenant: Any, user: Any, count: int, size: int, threads: int
) -> tuple[list[uuid.UUID], list[float]]:
    """``count`` uploads from ``threads`` threads (each its own database connection).

    Returns the blob ids in index order and the time each upload finished (``perf_counter``), in order.
    """
    from django.db import connection

    ids: list[uuid.UUID | None] = [None] * count
    finished: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    next_index = [0]

    def worker() -> None:
        try:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= count or errors:
                    return
                ids[index] = upload_one(tenant, user, index, size)
                finished.append(time.perf_counter())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    if threads == 1:
        for index in range(count):
            ids[index] = upload_one(tenant, user, index, size)
            finished.append(time.perf_counter())
    else:
        pool = [threading.Thread(target=worker, name=f"upload-{n}") for n in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        if errors:
            raise errors[0]
    return [blob_id for blob_id in ids if blob_id is not None], sorted(finished)


def read_back(tenant: Any, blob_ids: list[uuid.UUID], size: int) -> int:
    """Decrypt a sample of the uploaded blobs from storage; returns how many were checked."""
    from blobs.models import Blob
    from blobs.storage import blob_storage
    from encryption import keyring
    from encryption.format import envelope

    sample = list(dict.fromkeys(blob_ids[:: max(1, len(blob_ids) // 20)] + blob_ids[-1:]))
    for blob_id in sample:
        blob = Blob.objects.for_tenant(tenant).get(pk=blob_id)
        dek = keyring.open_data_key(tenant, blob_id)
        with blob_storage().open(blob.storage_key, "rb") as f:
            plaintext = envelope.decrypt(dek, envelope.blob_context(tenant.pk, blob_id), f.read())
        if len(plaintext) != size or blob.size != size:
            raise SystemExit(f"blob {blob_id} read back {len(plaintext)} bytes, expected {size}")
    return len(sample)


# --- Report ------------------------------------------------------------------------------------------------


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    changed = {op: n - before.get(op, 0) for op, n in after.items()}
    return {op: n for op, n in sorted(changed.items()) if n}


def describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"


def number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/kms.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=None, help="how many uploads (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 uploads")
    parser.add_argument("--size", type=int, default=1024, help="bytes per upload (default 1024)")
    parser.add_argument(
        "--threads", type=int, default=1, help="uploading threads in this process (default 1)"
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=None,
        help="KODORI_TKV_CACHE_TTL_CUSTOMER for this run (default: settings)",
    )
    args = parser.parse_args(argv)
    uploads = args.uploads if args.uploads is not None else (1_000 if args.quick else 10_000)
    if uploads < 1 or args.size < 0 or args.threads < 1:
        parser.error("--uploads and --threads must be at least 1, --size at least 0")

    root = Path(tempfile.mkdtemp(prefix="kodori-bench-kms-"))
    cleanups: list[Callable[[], None]] = [lambda: shutil.rmtree(root, ignore_errors=True)]
    try:
        from kodori.testing import network

        network.install()  # nothing may leave this machine: a stray real AWS endpoint fails at once
        from emulators.aws import KODORI_ARN, AwsKmsEmulator

        database_url, redis_url = start_servers(root, cleanups, fast_unsafe=True)
        emulator = AwsKmsEmulator(port=0).start()
        cleanups.append(emulator.stop)
        configure_environment(root, database_url, redis_url, emulator, args.ttl)
        setup_django()

        from django.conf import settings

        from encryption import keyring
        from encryption.providers import aws as aws_provider

        ttl = float(settings.KODORI_TKV_CACHE_TTL_CUSTOMER)
        print(
            f"kms: {uploads:,} uploads of {args.size} bytes, {args.threads} thread(s), customer AWS key "
            f"(emulator at {emulator.endpoint_url}), cache TTL {number(ttl)} s, {os.cpu_count()} CPUs"
        )
        started = time.perf_counter()
        before_setup = emulator.counts()
        tenant, user, key_arn = register_customer_key(emulator)
        setup = delta(emulator.counts(), before_setup)
        print(
            f"  setup: register + verify + activate key …{key_arn[-12:]} (Kodori is {KODORI_ARN}) in "
            f"{time.perf_counter() - started:.2f} s; calls: {describe(setup)}"
        )

        # As a freshly started web process: no unwrapped key, no role session.
        keyring.cache.clear()
        aws_provider.reset_clients()
        before = emulator.counts()
        started = time.perf_counter()
        blob_ids, finished = run_uploads(tenant, user, uploads, args.size, args.threads)
        elapsed = time.perf_counter() - started
        calls = delta(emulator.counts(), before)
        hits, misses = keyring.cache.hits, keyring.cache.misses

        kms_calls = sum(n for op, n in calls.items() if op not in STS_OPERATIONS)
        sts_calls = sum(n for op, n in calls.items() if op in STS_OPERATIONS)
        total = kms_calls + sts_calls
        windows = max(1, math.ceil(elapsed / ttl))
        ratio = hits / (hits + misses) if hits + misses else 0.0
        print(f"  uploads: {len(blob_ids):,} in {elapsed:.1f} s = {len(blob_ids) / elapsed:,.0f} uploads/s")
        tenth = len(finished) // 10
        if tenth:
            first = tenth / (finished[tenth - 1] - started)
            last = tenth / (finished[-1] - finished[-tenth - 1])
            print(f"  uploads/s over the first tenth {first:,.0f}, over the last tenth {last:,.0f}")
        print(f"  calls at the emulator: {describe(calls)}")
        print(
            f"  KMS {kms_calls} (Encrypt {calls.get('Encrypt', 0)}, Decrypt {calls.get('Decrypt', 0)}) + "
            f"STS {sts_calls} (AssumeRole {calls.get('AssumeRole', 0)}) = {total} calls"
        )
        print(f"  TKV cache: {hits:,} hits, {misses:,} misses (ratio {ratio:.4f})")
        verdict = "met" if total <= 2 * windows else "NOT met"
        print(
            f"  target <= 2 calls per process per TTL: {total} calls over {windows} TTL window(s) of "
            f"{number(ttl)} s in 1 process: {verdict}"
        )
        checked = read_back(tenant, blob_ids, args.size)
        print(f"  read back and decrypted {checked} of the blobs: all intact")
        per_10k = number(round(total * 10_000 / uploads, 1))
        print(f"kms calls_per_10k_uploads={per_10k} cache_hit_ratio={ratio:.4f}")
        return 0
    finally:
        run_cleanups(cleanups)


if __name__ == "__main__":
    sys.exit(main())
