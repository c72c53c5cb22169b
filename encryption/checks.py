"""System checks: the deployment's own settings never hold static cloud credentials for customer keys.

Kodori reaches customer keys only through federation (AWS AssumeRole with an ExternalId, Azure
federated credentials, GCP workload identity federation). A client secret, a service-account key file or a
private key in the deployment's configuration would be a long-lived secret that defeats that design, so
``manage.py check`` (and every process start) refuses it, naming the setting and the federated alternative,
never the value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks

from .credentials import find_static_credentials

# Environment variables the cloud SDKs would silently pick up as static credentials.
_SDK_SECRETS = {
    "AZURE_CLIENT_SECRET": "Kodori authenticates to Azure with a federated credential "
    "(KODORI_AZURE_FEDERATED_TOKEN_FILE); remove the client secret.",
    "AZURE_CLIENT_CERTIFICATE_PATH": "Kodori authenticates to Azure with a federated credential "
    "(KODORI_AZURE_FEDERATED_TOKEN_FILE); remove the certificate.",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD": "Kodori authenticates to Azure with a federated credential; "
    "remove the certificate password.",
}


def _service_account_key_file(path: str) -> bool:
    try:
        data = json.loads(Path(path).read_text()[:1_000_000])
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("type") == "service_account" or "private_key" in data)


@checks.register(checks.Tags.security)
def check_no_static_cloud_credentials(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name in sorted(dir(settings)):
        if not name.startswith("KODORI_"):
            continue
        for found in find_static_credentials(getattr(settings, name), name):
            errors.append(checks.Error(found.message, id="encryption.E001", obj=name))
    for name, advice in _SDK_SECRETS.items():
        if os.environ.get(name):
            errors.append(checks.Error(f"{name} is set. {advice}", id="encryption.E002", obj=name))
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if key_file and _service_account_key_file(key_file):
        errors.append(
            checks.Error(
                "GOOGLE_APPLICATION_CREDENTIALS points to a service-account key file. Kodori uses "
                "workload identity federation (KODORI_GCP_WIF_AUDIENCE, KODORI_GCP_SUBJECT_TOKEN_FILE); "
                "delete the key.",
                id="encryption.E003",
                obj="GOOGLE_APPLICATION_CREDENTIALS",
            )
        )
    if settings.PRODUCTION and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        errors.append(
            checks.Warning(
                "AWS_SECRET_ACCESS_KEY is set: Kodori's own AWS identity uses a long-lived access key. "
                "Prefer an instance profile or pod role (IRSA); tenants' keys are always reached through "
                "AssumeRole.",
                id="encryption.W001",
                obj="AWS_SECRET_ACCESS_KEY",
            )
        )
    return errors
