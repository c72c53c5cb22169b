"""The hand-written OpenAPI document, exercised by schemathesis against a live server: no server errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.blobs.support import make_blob, make_token

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.django_db
def test_the_document_is_openapi_3_1_and_names_every_api_route() -> None:
    document = Client().get(reverse("blobs:api_openapi")).json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/blobs",
        "/blobs/{blob_id}",
        "/openapi.json",
        "/exports",
        "/exports/{export_id}",
        "/exports/{export_id}/parts/{number}",
        "/tenant/deletion",
    }
    assert set(document["paths"]["/blobs/{blob_id}"]) == {"parameters", "get", "head", "delete"}
    assert document["servers"] == [{"url": "http://testserver/api/v1"}]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_errors(live_server: Any, member: Any, tmp_path: Path) -> None:
    make_blob(member, b"something to find", name="seed.txt")
    report = tmp_path / "report"
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{live_server.url}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {make_token(member)}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "25",
        "--workers",
        "1",
        "--seed",
        "4",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(report),
        "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output or " passed" in output, output[-3000:]
    junit = next(report.glob("*.xml")).read_text()
    assert "<failure" not in junit
    json.dumps(output)  # the run's text is kept in the failure message above when it matters
