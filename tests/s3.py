"""S3 for the tests: moto's server over real HTTP on loopback, a boto3 client for it, and the options of a
django-storages ``S3Storage`` on one of its buckets. Used by the blobs tests (objects on S3) and the audit
tests (the witness in a bucket with Object Lock)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextmanager
def moto_server(config: Path) -> Iterator[str]:
    """moto's S3 on a free loopback port: its URL. Empty AWS config files in the directory ``config`` stand
    in for the user's (so no real credentials are read) until the server stops."""
    from moto.server import ThreadedMotoServer

    from kodori.devtools.servers import free_port

    (config / "config").write_text("")
    (config / "credentials").write_text("")
    saved = {k: os.environ.get(k) for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
    os.environ["AWS_CONFIG_FILE"] = str(config / "config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(config / "credentials")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for moto's server at ``endpoint``."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


def storage_options(endpoint: str, bucket: str, location: str = "prefix") -> dict[str, Any]:
    """The ``OPTIONS`` of an ``S3Storage`` that keeps its objects under ``location/`` in ``bucket``."""
    return {
        "bucket_name": bucket,
        "endpoint_url": endpoint,
        "region_name": REGION,
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
        "location": location,
        "default_acl": None,
        "querystring_auth": False,
    }


def delete_bucket(s3: Any, bucket: str) -> None:
    """Delete every object of ``bucket``, then the bucket."""
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)
