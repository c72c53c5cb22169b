"""Fixtures of the blobs tests: a private blob directory per test, tokens, and a moto S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def blob_root(settings: Any, tmp_path: Path) -> Path:
    """Blob objects of this test go here, so a test can see exactly what storage holds."""
    root = tmp_path / "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "blobs.storage.BlobFileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


@pytest.fixture(autouse=True)
def _private_blob_root(blob_root: Path) -> Iterator[None]:
    yield


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 over real HTTP on loopback, with empty AWS config files so no real credentials are read."""
    import os

    from moto.server import ThreadedMotoServer

    from kodori.devtools.servers import free_port

    config = tmp_path_factory.mktemp("aws")
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
