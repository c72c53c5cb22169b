"""Client-side helpers for the GCP emulator tests: Kodori's client construction and checksummed calls.

``make_client`` is the construction ``docs/emulators.md`` prescribes for Kodori's GCP provider: keep the two
in step.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import google_crc32c
import grpc
from google.auth import identity_pool
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import KeyManagementServiceGrpcTransport

from emulators.gcp_kms import EMULATOR_UNIVERSE, KMS_SCOPE, GcpKmsEmulator


def make_client(endpoint: str, credentials: Any) -> kms_v1.KeyManagementServiceClient:
    """Exactly what Kodori's provider does when a GCP KMS endpoint override is configured."""
    transport = functools.partial(
        KeyManagementServiceGrpcTransport,
        ssl_channel_credentials=grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
    )
    return kms_v1.KeyManagementServiceClient(
        credentials=credentials,
        transport=transport,
        client_options={"api_endpoint": endpoint, "universe_domain": EMULATOR_UNIVERSE},
    )


def federated(emulator: GcpKmsEmulator, tmp_path: Path, token: str | None = None, **config: Any) -> Any:
    """Workload identity federation credentials reading a subject token file, as a credential config would."""
    token_file = tmp_path / "subject-token.jwt"
    token_file.write_text(token if token is not None else emulator.mint_subject_token())
    info = {**emulator.credential_config(str(token_file)), **config}
    return identity_pool.Credentials.from_info(info, scopes=[KMS_SCOPE])


class MintingSupplier(identity_pool.SubjectTokenSupplier):
    """Stands in for Kodori minting its own workload identity JWT in-process instead of reading a file."""

    def __init__(self, emulator: GcpKmsEmulator) -> None:
        self.emulator = emulator
        self.calls = 0

    def get_subject_token(self, context: Any, request: Any) -> str:
        self.calls += 1
        return self.emulator.mint_subject_token()


def crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def encrypt(
    kms: kms_v1.KeyManagementServiceClient, name: str, plaintext: bytes, aad: bytes, **kw: Any
) -> Any:
    request = {
        "name": name,
        "plaintext": plaintext,
        "additional_authenticated_data": aad,
        "plaintext_crc32c": crc(plaintext),
        "additional_authenticated_data_crc32c": crc(aad),
    }
    return kms.encrypt(request=request, **kw)


def decrypt(
    kms: kms_v1.KeyManagementServiceClient, name: str, ciphertext: bytes, aad: bytes, **kw: Any
) -> Any:
    request = {
        "name": name,
        "ciphertext": ciphertext,
        "additional_authenticated_data": aad,
        "ciphertext_crc32c": crc(ciphertext),
        "additional_authenticated_data_crc32c": crc(aad),
    }
    return kms.decrypt(request=request, **kw)
