"""The HTTP front of the AWS emulator: a reverse proxy on 127.0.0.1 that enforces what moto does not.

Every request from boto3 arrives here. KMS (JSON protocol, ``X-Amz-Target: TrentService.<Op>``) and STS (query
protocol, ``Action=<Op>``) requests are authenticated (SigV4 against the caller's known secret), may be hit by
an injected fault, are authorized (trust policy with ``sts:ExternalId`` for AssumeRole; key policy + identity
policy for KMS), are checked against the key's state, and only then forwarded to moto; the answer goes back
unchanged unless a check on it fails (Decrypt learns its key from moto's answer). STS ``GetCallerIdentity`` is
answered here, from the proxy's own record of who signed. IAM, S3 and the rest pass through untouched (writes
drop the policy cache), so one endpoint URL serves every service.

``/_emulator/<method>`` is the admin API (JSON body = keyword arguments of ``AwsKmsEmulator.<method>``).
"""

from __future__ import annotations

import datetime
import http.client
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from emulators.aws_auth import AuthError, CredentialStore, Principal, parse_authorization
from emulators.aws_enforce import CRYPTO_OPERATIONS, Gatekeeper, KeyInfo, Refusal, is_write
from emulators.faults import FaultInjector
from emulators.https_server import JsonRequestHandler

if TYPE_CHECKING:
    from emulators.aws import AwsKmsEmulator

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_AUTH_CODES = {
    "kms": {"unknown": "UnrecognizedClientException", "signature": "InvalidSignatureException",
            "expired": "ExpiredTokenException"},
    "sts": {"unknown": "InvalidClientTokenId", "signature": "SignatureDoesNotMatch",
            "expired": "ExpiredToken"},
}  # fmt: skip
_FAULTS = {
    "kms": {"throttle": (400, "ThrottlingException", "Rate exceeded"),
            "unavailable": (500, "KMSInternalException", "An internal error occurred.")},
    "sts": {"throttle": (400, "Throttling", "Rate exceeded"),
            "unavailable": (503, "ServiceUnavailable", "Service is unavailable.")},
}  # fmt: skip


class AwsProxyServer(ThreadingHTTPServer):
    """Plain-HTTP reverse proxy to one moto server, holding the emulator's credentials, faults and
    gatekeeper."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        port: int,
        moto_address: tuple[str, int],
        emulator: AwsKmsEmulator,
        credentials: CredentialStore,
        gatekeeper: Gatekeeper,
        faults: FaultInjector,
    ) -> None:
        self.moto_address = moto_address
        self.emulator = emulator
        self.credentials = credentials
        self.gatekeeper = gatekeeper
        self.faults = faults
        self._local = threading.local()
        super().__init__(("127.0.0.1", port), _ProxyHandler)

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[Any], bytes]:
        """Send one request to moto on this thread's kept-alive connection; reconnect once if it went
        stale."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(*self.moto_address, timeout=60)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class _ProxyHandler(JsonRequestHandler):
    server: AwsProxyServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # -- routing ---------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self.parse_target()
        if self.path_only.startswith("/_emulator/"):
            self._admin()
            return
        body = self.read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        signed = parse_authorization(self.headers.get("Authorization"))
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith("TrentService."):
            self._kms(target.split(".", 1)[1], headers, body)
        elif signed is not None and signed.service == "sts":
            self._sts(headers, body)
        else:
            if signed is not None and signed.service == "iam":
                action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
                if is_write(action):
                    self.server.gatekeeper.invalidate()
            self._relay(*self.server.forward(self.command, self.path, headers, body))

    def _authenticate(
        self, service: str, operation: str, headers: dict[str, str], body: bytes
    ) -> Principal | None:
        try:
            return self.server.credentials.authenticate(self.command, self.path, headers, body)
        except AuthError as err:
            self.server.faults.record(operation, "anonymous", _AUTH_CODES[service][err.kind])
            self._error(
                service,
                Refusal(_AUTH_CODES[service][err.kind], err.message, 400 if service == "kms" else 403),
            )
            return None

    def _fault(self, service: str, operation: str, principal: Principal) -> bool:
        fault = self.server.faults.before_call(operation)
        if fault is None:
            return False
        status, code, message = _FAULTS[service][fault]
        self.server.faults.record(operation, principal.arn, code)
        self._error(service, Refusal(code, message, status))
        return True

    # -- KMS -------------------------------------------------------------------------------------------------

    def _kms(self, operation: str, headers: dict[str, str], body: bytes) -> None:
        principal = self._authenticate("kms", operation, headers, body)
        if principal is None or self._fault("kms", operation, principal):
            return
        gate, region = self.server.gatekeeper, _region(self.headers.get("Authorization"))
        try:
            params = json.loads(body or b"{}")
            context = {
                f"kms:EncryptionContext:{k}": v for k, v in (params.get("EncryptionContext") or {}).items()
            }
            requested = params.get("DestinationKeyId") if operation == "ReEncrypt" else params.get("KeyId")
            action = "kms:ReEncryptTo" if operation == "ReEncrypt" else f"kms:{operation}"
            key: KeyInfo | None = gate.key_info(requested, region) if requested else None
            if key is not None or operation not in ("Decrypt",):
                gate.authorize_kms(principal, action, key, context)
            if key is not None and operation in CRYPTO_OPERATIONS:
                gate.require_usable(key)
            status, response_headers, data = self.server.forward(self.command, self.path, headers, body)
            if status == 200 and operation in ("Decrypt", "ReEncrypt"):
                # The key that was really used is only known from moto's answer: check it before releasing
                # anything.
                used = json.loads(data)["SourceKeyId" if operation == "ReEncrypt" else "KeyId"]
                used_key = gate.key_info(used, region)
                from_action = "kms:ReEncryptFrom" if operation == "ReEncrypt" else "kms:Decrypt"
                gate.authorize_kms(principal, from_action, used_key, context)
                gate.require_usable(used_key)
            if status == 400 and operation == "Decrypt" and requested and b"AccessDeniedException" in data:
                # moto says AccessDenied when KeyId does not match the ciphertext; KMS says
                # IncorrectKeyException.
                raise Refusal(
                    "IncorrectKeyException",
                    "The key ID in the request does not identify a CMK that can perform this operation.",
                )
        except Refusal as refusal:
            self.server.faults.record(operation, principal.arn, refusal.code)
            self._error("kms", refusal)
            return
        if is_write(operation):
            gate.invalidate()
        self.server.faults.record(operation, principal.arn, "ok" if status < 400 else _json_error_code(data))
        self._relay(status, response_headers, data)

    # -- STS -------------------------------------------------------------------------------------------------

    def _sts(self, headers: dict[str, str], body: bytes) -> None:
        query = urlsplit(self.path).query
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace") or query).items()}
        operation = form.get("Action", "")
        principal = self._authenticate("sts", operation, headers, body)
        if principal is None or self._fault("sts", operation, principal):
            return
        if operation == "GetCallerIdentity":
            self.server.faults.record(operation, principal.arn, "ok")
            self._sts_result("GetCallerIdentity", principal.caller_identity())
            return
        if operation == "AssumeRole":
            role_arn = form.get("RoleArn", "")
            try:
                self.server.gatekeeper.authorize_assume_role(principal, role_arn, form.get("ExternalId"))
            except Refusal as refusal:
                self.server.faults.record(operation, principal.arn, refusal.code)
                self._error("sts", refusal)
                return
        status, response_headers, data = self.server.forward(self.command, self.path, headers, body)
        if status == 200 and operation == "AssumeRole":
            self._remember_session(data, form)
        self.server.faults.record(operation, principal.arn, "ok" if status < 400 else str(status))
        self._relay(status, response_headers, data)

    def _remember_session(self, data: bytes, form: dict[str, str]) -> None:
        root = ET.fromstring(data)  # noqa: S314 (moto's own answer on loopback, not outside input)
        found = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        expires_at = time.time() + int(form.get("DurationSeconds") or 3600)
        try:
            stamp = found.get("Expiration", "").replace("Z", "+00:00")
            expires_at = min(expires_at, datetime.datetime.fromisoformat(stamp).timestamp())
        except ValueError:
            pass
        self.server.credentials.add(
            Principal(
                arn=found["Arn"],
                access_key_id=found["AccessKeyId"],
                secret_access_key=found["SecretAccessKey"],
                session_token=found["SessionToken"],
                expires_at=expires_at,
                role_arn=form["RoleArn"],
            )
        )

    def _sts_result(self, operation: str, fields: dict[str, str]) -> None:
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
        xml = (
            f'<{operation}Response xmlns="{STS_NS}"><{operation}Result>{inner}</{operation}Result>'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{operation}Response>"
        )
        self._relay(200, [("Content-Type", "text/xml")], xml.encode())

    # -- answers ---------------------------------------------------------------------------------------------

    def _error(self, service: str, refusal: Refusal) -> None:
        request_id = str(uuid.uuid4())
        if service == "kms":
            body = json.dumps({"__type": refusal.code, "message": refusal.message}).encode()
            content_type = "application/x-amz-json-1.1"
        else:
            kind = "Receiver" if refusal.status >= 500 else "Sender"
            body = (
                f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>{kind}</Type><Code>{refusal.code}</Code>'
                f"<Message>{_xml_escape(refusal.message)}</Message></Error><RequestId>{request_id}</RequestId>"
                "</ErrorResponse>"
            ).encode()
            content_type = "text/xml"
        self._relay(refusal.status, [("Content-Type", content_type), ("x-amzn-RequestId", request_id)], body)

    def _relay(self, status: int, headers: list[Any], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() not in ("content-length", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _admin(self) -> None:
        name = self.path_only[len("/_emulator/") :]
        emulator = self.server.emulator
        try:
            kwargs = self.read_json() if self.command in ("POST", "PUT") else {}
        except ValueError as err:
            self.send_json(400, {"error": str(err)})
            return
        if name not in emulator.ADMIN_METHODS:
            self.send_json(
                404, {"error": f"unknown admin method {name!r}", "methods": sorted(emulator.ADMIN_METHODS)}
            )
            return
        try:
            result = getattr(emulator, name)(**kwargs)
        except (TypeError, ValueError, KeyError) as err:
            self.send_json(400, {"error": str(err)})
            return
        except Exception as err:  # a boto3 ClientError from moto and the like: report it, keep serving
            self.send_json(409, {"error": str(err), "type": type(err).__name__})
            return
        self.send_json(200, {"result": json.loads(json.dumps(result, default=str))})


def _region(authorization: str | None) -> str:
    signed = parse_authorization(authorization)
    return signed.region if signed is not None else "us-east-1"


def _json_error_code(data: bytes) -> str:
    try:
        return str(json.loads(data).get("__type", "error")).rsplit("#", 1)[-1]
    except ValueError:
        return "error"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
