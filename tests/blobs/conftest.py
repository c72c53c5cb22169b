"""Fixtures of the blobs tests: a private blob directory per test (``blob_root``), and a moto S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3 import moto_server


@pytest.fixture(autouse=True)
def _private_blob_root(blob_root: Path) -> Iterator[None]:
    yield


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 over real HTTP on loopback, with empty AWS config files so no real credentials are read."""
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url
