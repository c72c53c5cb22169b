"""The gRPC half of the GCP Cloud KMS emulator: ``google.cloud.kms.v1.KeyManagementService`` on 127.0.0.1.

google-cloud-kms ships the message classes but no servicer base class, so the service is registered with
``grpc.method_handlers_generic_handler`` under the real fully-qualified service name and the messages' own
protobuf classes (``EncryptRequest.pb()``) as (de)serializers. The real ``KeyManagementServiceClient``
therefore talks to it over its real wire protocol; only the host differs.

Implemented methods: GetCryptoKey, GetCryptoKeyVersion, Encrypt, Decrypt, CreateKeyRing, CreateCryptoKey.
Anything else answers UNIMPLEMENTED (gRPC's default for an unknown method).

Each call goes: authenticate the bearer token from the ``authorization`` metadata (UNAUTHENTICATED otherwise),
draw injected faults and latency, check the principal's IAM permission on the resource (PERMISSION_DENIED "…
(or it may not exist)", as GCP hides existence from callers without access), then do the work. Raw protobuf
(not proto-plus) is used server-side because it exposes wrapper-field presence directly:
``HasField("plaintext_crc32c")`` is how a checksum of 0 is told apart from no checksum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.cloud.kms_v1.types import resources, service
from google.protobuf import timestamp_pb2

from emulators.faults import FaultInjector
from emulators.gcp_state import MAX_PAYLOAD, CryptoKey, KmsError, KmsStore, crc32c, split_version_name

SERVICE_NAME = "google.cloud.kms.v1.KeyManagementService"

_CryptoKeyPb = resources.CryptoKey.pb()
_VersionPb = resources.CryptoKeyVersion.pb()
_KeyRingPb = resources.KeyRing.pb()

_FAULT_STATUS = {
    "throttle": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Quota exceeded for quota metric 'Cryptographic requests' and limit "
        "'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'.",
    ),
    "unavailable": (grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."),
}

_UNAUTHENTICATED = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential."
)
_INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential."
)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class KmsServicer:
    """Implements the KMS methods against a :class:`KmsStore`, with faults and call accounting."""

    def __init__(self, store: KmsStore, faults: FaultInjector) -> None:
        self.store = store
        self.faults = faults

    def generic_handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {
            "GetCryptoKey": (service.GetCryptoKeyRequest, self.get_crypto_key),
            "GetCryptoKeyVersion": (service.GetCryptoKeyVersionRequest, self.get_crypto_key_version),
            "Encrypt": (service.EncryptRequest, self.encrypt),
            "Decrypt": (service.DecryptRequest, self.decrypt),
            "CreateKeyRing": (service.CreateKeyRingRequest, self.create_key_ring),
            "CreateCryptoKey": (service.CreateCryptoKeyRequest, self.create_crypto_key),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, method),
                request_deserializer=request_type.pb().FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
            for name, (request_type, method) in methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _wrap(
        self, operation: str, method: Callable[[Any, str], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._authenticate(context)
            if principal is None:
                self.faults.record(operation, "anonymous", "UNAUTHENTICATED")
                has_header = any(k == "authorization" for k, _ in context.invocation_metadata())
                message = _INVALID_CREDENTIALS if has_header else _UNAUTHENTICATED
                context.abort(grpc.StatusCode.UNAUTHENTICATED, message)  # raises
                return None
            fault = self.faults.before_call(operation)
            if fault is not None:
                code, message = _FAULT_STATUS[fault]
                self.faults.record(operation, principal, code.name)
                context.abort(code, message)
            try:
                response = method(request, principal)
            except KmsError as err:
                self.faults.record(operation, principal, err.code)
                context.abort(getattr(grpc.StatusCode, err.code), err.message)
            self.faults.record(operation, principal, "ok")
            return response

        return handle

    def _authenticate(self, context: grpc.ServicerContext) -> str | None:
        for key, value in context.invocation_metadata():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                return self.store.principal_for_token(value[len("Bearer ") :].strip())
        return None

    def _require(self, principal: str, permission: str, resource: str) -> None:
        if not self.store.has_permission(principal, permission, resource):
            raise KmsError(
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
            )

    # -- resources -------------------------------------------------------------------------------------------

    def _version_pb(self, key: CryptoKey, number: int) -> Any:
        version = key.versions[number]
        message = _VersionPb(
            name=key.version_name(number),
            state=_VersionPb.CryptoKeyVersionState.Value(version.state.value),
            protection_level=int(resources.ProtectionLevel.SOFTWARE),
            algorithm=_VersionPb.CryptoKeyVersionAlgorithm.Value("GOOGLE_SYMMETRIC_ENCRYPTION"),
        )
        message.create_time.CopyFrom(_timestamp(version.create_time))
        if version.destroy_time is not None:
            message.destroy_time.CopyFrom(_timestamp(version.destroy_time))
        return message

    def _key_pb(self, key: CryptoKey) -> Any:
        message = _CryptoKeyPb(name=key.name, purpose=_CryptoKeyPb.CryptoKeyPurpose.Value("ENCRYPT_DECRYPT"))
        message.create_time.CopyFrom(_timestamp(key.create_time))
        message.version_template.algorithm = _VersionPb.CryptoKeyVersionAlgorithm.Value(
            "GOOGLE_SYMMETRIC_ENCRYPTION"
        )
        message.version_template.protection_level = int(resources.ProtectionLevel.SOFTWARE)
        if key.primary is not None:
            message.primary.CopyFrom(self._version_pb(key, key.primary))
        return message

    def get_crypto_key(self, request: Any, principal: str) -> Any:
        self._require(principal, "cloudkms.cryptoKeys.get", request.name)
        with self.store.lock:
            return self._key_pb(self.store.get_key(request.name))

    def get_crypto_key_version(self, request: Any, principal: str) -> Any:
        self._require(principal, "cloudkms.cryptoKeyVersions.get", request.name)
        key_name, number = split_version_name(request.name)
        with self.store.lock:
            key = self.store.get_key(key_name)
            self.store.get_version(key_name, number)
            return self._version_pb(key, int(number or 0))

    def create_key_ring(self, request: Any, principal: str) -> Any:
        self._require(principal, "cloudkms.keyRings.create", request.parent)
        parts = request.parent.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "locations":
            raise KmsError(
                "INVALID_ARGUMENT", f"Resource name [{request.parent}] does not match any known type."
            )
        name = self.store.create_key_ring(parts[1], parts[3], request.key_ring_id)
        ring = _KeyRingPb(name=name)
        ring.create_time.CopyFrom(_timestamp(self.store.key_rings[name]))
        return ring

    def create_crypto_key(self, request: Any, principal: str) -> Any:
        self._require(principal, "cloudkms.cryptoKeys.create", request.parent)
        purpose = request.crypto_key.purpose
        if purpose not in (0, _CryptoKeyPb.CryptoKeyPurpose.Value("ENCRYPT_DECRYPT")):
            raise KmsError("INVALID_ARGUMENT", "The emulator only supports ENCRYPT_DECRYPT keys.")
        name = self.store.create_crypto_key(
            request.parent, request.crypto_key_id, with_version=not request.skip_initial_version_creation
        )
        with self.store.lock:
            return self._key_pb(self.store.get_key(name))

    # -- cryptography ----------------------------------------------------------------------------------------

    def encrypt(self, request: Any, principal: str) -> Any:
        key_name, number = split_version_name(request.name)
        self._require(principal, "cloudkms.cryptoKeyVersions.useToEncrypt", request.name)
        plaintext, aad = request.plaintext, request.additional_authenticated_data
        if len(plaintext) > MAX_PAYLOAD:
            raise KmsError("INVALID_ARGUMENT", "The plaintext must be at most 65536 bytes.")
        if len(aad) > MAX_PAYLOAD:
            raise KmsError(
                "INVALID_ARGUMENT", "The additional_authenticated_data must be at most 65536 bytes."
            )
        _check_crc(request, "plaintext_crc32c", "plaintext", plaintext)
        _check_crc(request, "additional_authenticated_data_crc32c", "additional_authenticated_data", aad)
        with self.store.lock:
            key = self.store.get_key(key_name)
            if number is None:
                if key.primary is None:
                    raise KmsError("FAILED_PRECONDITION", f"{key.name} has no primary CryptoKeyVersion.")
                number = key.primary
            version = self.store.get_version(key_name, number)
            _require_enabled(key, number, version.state.value)
            ciphertext = self.store.encrypt(key, number, plaintext, aad)
            version_name = key.version_name(number)
        return service.EncryptResponse.pb()(
            name=version_name,
            ciphertext=ciphertext,
            ciphertext_crc32c={"value": crc32c(ciphertext)},
            verified_plaintext_crc32c=request.HasField("plaintext_crc32c"),
            verified_additional_authenticated_data_crc32c=request.HasField(
                "additional_authenticated_data_crc32c"
            ),
            protection_level=int(resources.ProtectionLevel.SOFTWARE),
        )

    def decrypt(self, request: Any, principal: str) -> Any:
        key_name, number = split_version_name(request.name)
        if number is not None:
            raise KmsError(
                "INVALID_ARGUMENT", f"Resource name [{request.name}] does not match any known type."
            )
        self._require(principal, "cloudkms.cryptoKeyVersions.useToDecrypt", request.name)
        _check_crc(request, "ciphertext_crc32c", "ciphertext", request.ciphertext)
        aad = request.additional_authenticated_data
        _check_crc(request, "additional_authenticated_data_crc32c", "additional_authenticated_data", aad)
        with self.store.lock:
            key = self.store.get_key(key_name)
            used = self.store.parse_ciphertext(key, request.ciphertext)
            _require_enabled(key, used, key.versions[used].state.value)
            plaintext = self.store.decrypt(key, used, request.ciphertext, aad)
            used_primary = used == key.primary
        return service.DecryptResponse.pb()(
            plaintext=plaintext,
            plaintext_crc32c={"value": crc32c(plaintext)},
            used_primary=used_primary,
            protection_level=int(resources.ProtectionLevel.SOFTWARE),
        )


def _check_crc(request: Any, field: str, data_field: str, data: bytes) -> None:
    # The real API checks only when the client sent the wrapper; a sent value of 0 is checked like any other.
    if request.HasField(field) and getattr(request, field).value != crc32c(data):
        raise KmsError(
            "INVALID_ARGUMENT",
            f"The checksum in field {field} did not match the data in field {data_field}.",
        )


def _require_enabled(key: CryptoKey, number: int, state: str) -> None:
    if state != "ENABLED":
        raise KmsError(
            "FAILED_PRECONDITION", f"{key.version_name(number)} is not enabled, current state is: {state}."
        )
