"""``manage.py check_key_id``: the verdict support and operators see, and its exit status (0 or 2)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

BASE_DIR = Path(__file__).resolve().parents[2]
VERSION = "0123456789abcdef0123456789abcdef"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("check_key_id", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "identifier", "normalized", "host"),
    [
        (
            "aws",
            "arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-0123456789ABCDEF0123456789abcdef",
            f"arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-{VERSION}",
            "kms.cn-north-1.amazonaws.com.cn",
        ),
        (
            "azure",
            f"https://MyHsm.managedhsm.usgovcloudapi.net/keys/kek/{VERSION}",
            f"https://myhsm.managedhsm.usgovcloudapi.net/keys/kek/{VERSION}",
            "myhsm.managedhsm.usgovcloudapi.net",
        ),
        (
            "gcp",
            "projects/acme-prod/locations/global/keyRings/kodori/cryptoKeys/kek/cryptoKeyVersions/2",
            "projects/acme-prod/locations/global/keyRings/kodori/cryptoKeys/kek/cryptoKeyVersions/2",
            "cloudkms.googleapis.com",
        ),
        (
            "aws-role",
            "arn:aws:iam::111122223333:role/byok/kodori",
            "arn:aws:iam::111122223333:role/byok/kodori",
            "sts.<key region>.amazonaws.com",
        ),
        (
            "azure-directory",
            "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "login.microsoftonline.com",
        ),
    ],
    ids=["aws", "azure", "gcp", "aws-role", "azure-directory"],
)
def test_it_prints_the_normalized_form_and_the_host(
    kind: str, identifier: str, normalized: str, host: str
) -> None:
    lines = run(kind, identifier).splitlines()
    assert lines[0] == f"accepted: {normalized}"
    assert lines[1].startswith("host: ") and host in lines[1]


def test_it_prints_the_refusal_and_exits_2() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("check_key_id", "azure", f"https://169.254.169.254/keys/kek/{VERSION}", stdout=out)
    assert info.value.code == 2
    assert out.getvalue().startswith("refused: The key URL's host is an IP address")
    assert "https://<vault>.vault.azure.net/keys/<name>/<version>" in out.getvalue()


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check_key_id", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_exits_0_for_an_accepted_identifier() -> None:
    result = manage("aws", "arn:aws:kms:eu-west-1:111122223333:alias/kodori/acme")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "accepted: arn:aws:kms:eu-west-1:111122223333:alias/kodori/acme",
        "host: kms.eu-west-1.amazonaws.com",
    ]


def test_it_exits_2_for_a_refused_identifier() -> None:
    result = manage("azure", f"https://myvault.vault.azure.net@evil.com/keys/kek/{VERSION}")
    assert result.returncode == 2
    assert result.stdout.startswith("refused: The key URL contains user information")
    assert "Traceback" not in result.stderr


def test_it_refuses_an_unknown_kind() -> None:
    result = manage("oracle", "anything")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
