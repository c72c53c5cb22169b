"""System checks refuse static cloud credentials in the deployment's own configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import override_settings

from encryption.checks import check_no_static_cloud_credentials


def ids() -> list[str]:
    return [str(m.id) for m in check_no_static_cloud_credentials()]


def test_a_clean_configuration_passes() -> None:
    assert ids() == []


def test_a_client_secret_in_a_kodori_setting_is_refused_without_echoing_it() -> None:
    secret = "abc8Q~" + "Zy1" * 11 + "a"
    with override_settings(KODORI_AZURE_CLIENT_SECRET=secret):
        messages = check_no_static_cloud_credentials()
    assert [str(m.id) for m in messages] == ["encryption.E001"]
    assert secret not in messages[0].msg and "KODORI_AZURE_CLIENT_SECRET" in messages[0].msg


def test_an_azure_client_secret_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "anything")
    assert ids() == ["encryption.E002"]


def test_a_service_account_key_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    assert ids() == ["encryption.E003"]


def test_an_external_account_config_is_fine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "wif.json"
    config.write_text(json.dumps({"type": "external_account", "audience": "//iam.googleapis.com/projects/1"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(config))
    assert ids() == []
