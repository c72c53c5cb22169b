"""A local AWS KMS + STS + IAM for Kodori: moto's server behind a proxy that enforces what moto leaves out.

Why a proxy in front of moto rather than moto's own IAM enforcement mode: in that mode moto still accepts an
AssumeRole without an ExternalId when the trust policy demands one, matches KMS permissions only on
``Resource: "*"``, ignores key policies and key state, and answers KMS denials as HTTP 403 with the code "403"
where boto3 expects ``AccessDeniedException``. Kodori's sealing logic keys off exactly those error types, so
the proxy (``aws_proxy``) keeps moto in its permissive default mode for storage and cryptography and adds, per
request: SigV4 verification against the caller's known secret; trust policies with conditions
(``sts:ExternalId``) and role existence for AssumeRole; key policy + identity policy evaluation for KMS
(``aws_policy``); key state (``DisabledException``, ``KMSInvalidStateException``); AWS-shaped errors with
messages; injected throttling, 5xx and latency; per-operation call counters. Everything else (IAM, S3, …)
passes through to moto.

Identities: the *customer* account is moto's (``123456789012``); its root credentials (:attr:`customer_root`)
can do anything there. *Kodori's* deployment identity is ``arn:aws:iam::111122223333:user/kodori`` with static
keys (:attr:`kodori_credentials`) and an identity policy allowing ``sts:AssumeRole`` and ``kms:*``; a customer
key is usable by it only through a role the customer created, as in production.

Limits inherited from moto: its state is process-global, so the emulators of one process share one moto server
and only one emulator should run at a time (``start()`` resets moto); moto itself refuses DescribeKey to
everyone when a key policy has a Deny of ``kms:*``/``kms:Describe*`` on ``Resource: "*"``, so write such Deny
statements with the key's ARN as Resource. Not implemented: grants, multi-region keys, asymmetric keys beyond
moto's, SCPs/permission boundaries, session policies on AssumeRole, AssumeRoleWithWebIdentity checks. Run
standalone with ``python -m emulators.aws --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

from emulators.aws_auth import CredentialStore, Principal
from emulators.aws_enforce import Gatekeeper
from emulators.aws_proxy import AwsProxyServer
from emulators.faults import FaultControls, FaultInjector

CUSTOMER_ACCOUNT = "123456789012"  # moto's default account
KODORI_ACCOUNT = "111122223333"
KODORI_ARN = f"arn:aws:iam::{KODORI_ACCOUNT}:user/kodori"
KODORI_KEY_ACTIONS = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
]
KODORI_IDENTITY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole", "kms:*"], "Resource": "*"}],
}


_moto_lock = threading.Lock()
_moto_server: ThreadedMotoServer | None = None


def _shared_moto_address() -> tuple[str, int]:
    """One moto server per process, started on first use and left running (a daemon thread).

    moto keeps its state in module globals, so a second server in the same process would share it anyway;
    reusing one also saves its start-up and its half-second shutdown poll on every test.
    """
    global _moto_server
    with _moto_lock:
        if _moto_server is None:
            # moto's werkzeug server logs every request on stderr; the proxy keeps its own call log instead.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            _moto_server = server
        host, port = _moto_server.get_host_and_port()
        return host, int(port)


class AwsKmsEmulator(FaultControls):
    """Starts, configures and stops moto + the enforcing proxy. Every public method is also an admin call.

    Faults: ``throttle`` answers HTTP 400 ``ThrottlingException`` (KMS) / ``Throttling`` (STS);
    ``unavailable`` answers HTTP 500 ``KMSInternalException`` (KMS) / 503 ``ServiceUnavailable`` (STS), which
    boto3 retries. Counters cover KMS and STS operations (``Encrypt``, ``AssumeRole``…), not IAM/S3.
    """

    ADMIN_METHODS = frozenset(
        {
            "settings", "create_key", "disable_key", "enable_key", "schedule_key_deletion",
            "cancel_key_deletion", "create_tenant_role", "revoke_role_access", "restore_role_access",
            "revoke_key_access", "restore_key_access", "expire_sessions", "throttle", "unavailable",
            "set_latency", "clear_faults", "faults_state", "counts", "outcome_counts", "calls", "reset",
        }
    )  # fmt: skip

    def __init__(self, port: int = 0, region: str = "us-east-1") -> None:
        self.region = region
        self._requested_port = port
        self.faults = FaultInjector()
        self.credentials = CredentialStore()
        self.kodori_credentials = (
            "AKIA" + secrets.token_hex(8).upper(),
            secrets.token_urlsafe(30),
        )
        self.customer_root = ("AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
        self._internal = ("AKIAINTERNAL" + secrets.token_hex(4).upper(), secrets.token_urlsafe(30))
        self._proxy: AwsProxyServer | None = None
        self._thread: threading.Thread | None = None
        self.gatekeeper: Gatekeeper | None = None
        self._revoked_role_policies: dict[str, list[tuple[str, str]]] = {}
        self._revoked_key_policies: dict[str, str] = {}
        self._register_identities()

    def _register_identities(self) -> None:
        self.credentials.add(
            Principal(KODORI_ARN, *self.kodori_credentials, identity_policies=(KODORI_IDENTITY_POLICY,))
        )
        self.credentials.add(
            Principal(f"arn:aws:iam::{CUSTOMER_ACCOUNT}:root", *self.customer_root, is_root=True)
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> AwsKmsEmulator:
        host, moto_port = _shared_moto_address()
        self.moto_url = f"http://{host}:{moto_port}"
        self.gatekeeper = Gatekeeper(self.moto_url, *self._internal)
        self._proxy = AwsProxyServer(
            self._requested_port, (host, moto_port), self, self.credentials, self.gatekeeper, self.faults
        )
        self.port = int(self._proxy.server_address[1])
        self._thread = threading.Thread(
            target=self._proxy.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="aws-emulator-proxy",
            daemon=True,
        )
        self._thread.start()
        # moto keeps its state in module globals shared by every server in the process: start from a clean
        # slate.
        self._proxy.forward("POST", "/moto-api/reset", {"Content-Length": "0"}, b"")
        return self

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AwsKmsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """The one URL for every AWS client (``endpoint_url=``, or ``AWS_ENDPOINT_URL``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"{self.endpoint_url}/_emulator"

    def _admin(self, service: str) -> Any:
        assert self.gatekeeper is not None, "start() the emulator first"
        return self.gatekeeper.client(service, self.region if service == "kms" else "us-east-1")

    def _changed(self) -> None:
        if self.gatekeeper is not None:
            self.gatekeeper.invalidate()

    # -- keys ------------------------------------------------------------------------------------------------

    def _key_id(self, key: str) -> str:
        # moto's state-changing calls want the bare key id; callers hold ARNs and aliases too.
        return str(self._admin("kms").describe_key(KeyId=key)["KeyMetadata"]["KeyId"])

    def create_key(self, alias: str | None = None, description: str = "Kodori test KEK") -> str:
        """A symmetric key in the customer account (default key policy: the account decides through IAM)."""
        kms = self._admin("kms")
        arn = str(kms.create_key(Description=description)["KeyMetadata"]["Arn"])
        if alias:
            kms.create_alias(
                AliasName=alias if alias.startswith("alias/") else f"alias/{alias}", TargetKeyId=arn
            )
        self._changed()
        return arn

    def disable_key(self, key_id: str) -> None:
        self._admin("kms").disable_key(KeyId=self._key_id(key_id))
        self._changed()

    def enable_key(self, key_id: str) -> None:
        self._admin("kms").enable_key(KeyId=self._key_id(key_id))
        self._changed()

    def schedule_key_deletion(self, key_id: str, days: int = 7) -> None:
        self._admin("kms").schedule_key_deletion(KeyId=self._key_id(key_id), PendingWindowInDays=days)
        self._changed()

    def cancel_key_deletion(self, key_id: str) -> None:
        """Back to Disabled, as on AWS; call :meth:`enable_key` to use it again."""
        self._admin("kms").cancel_key_deletion(KeyId=self._key_id(key_id))
        self._changed()

    # -- roles and access ------------------------------------------------------------------------------------

    def create_tenant_role(
        self,
        role_name: str,
        external_id: str | None,
        key_arn: str,
        trusted_principal: str = KODORI_ARN,
        actions: list[str] | None = None,
    ) -> str:
        """The role a customer creates for Kodori: trust with an ExternalId condition, KMS use of one key."""
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Principal": {"AWS": trusted_principal},
            "Action": "sts:AssumeRole",
        }
        if external_id is not None:
            statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
        iam = self._admin("iam")
        trust = {"Version": "2012-10-17", "Statement": [statement]}
        arn = str(
            iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        )
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions or KODORI_KEY_ACTIONS, "Resource": key_arn}],
        }
        iam.put_role_policy(RoleName=role_name, PolicyName="kodori-kms", PolicyDocument=json.dumps(policy))
        self._changed()
        return arn

    def revoke_role_access(self, role_name: str) -> int:
        """Delete the role's inline policies (kept for :meth:`restore_role_access`); its sessions lose
        access."""
        iam = self._admin("iam")
        saved = self._revoked_role_policies.setdefault(role_name, [])
        for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
            saved.append((name, json.dumps(document)))
            iam.delete_role_policy(RoleName=role_name, PolicyName=name)
        self._changed()
        return len(saved)

    def restore_role_access(self, role_name: str) -> None:
        iam = self._admin("iam")
        for name, document in self._revoked_role_policies.pop(role_name, []):
            iam.put_role_policy(RoleName=role_name, PolicyName=name, PolicyDocument=document)
        self._changed()

    def revoke_key_access(self, key_id: str, principal_arn: str) -> None:
        """Add an explicit Deny for ``principal_arn`` (e.g. the tenant role's ARN) to the key policy."""
        kms = self._admin("kms")
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        key_id = meta["KeyId"]
        policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        self._revoked_key_policies.setdefault(key_id, json.dumps(policy))
        # Resource names the key rather than "*": moto applies any Deny of kms:* on "*" to every DescribeKey,
        # whoever the principal, and the proxy needs DescribeKey to learn the key's state.
        deny = {
            "Sid": "EmulatorRevoked",
            "Effect": "Deny",
            "Principal": {"AWS": principal_arn},
            "Action": "kms:*",
            "Resource": meta["Arn"],
        }
        policy["Statement"] = [*policy.get("Statement", []), deny]
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
        self._changed()

    def restore_key_access(self, key_id: str) -> None:
        key_id = self._key_id(key_id)
        if key_id in self._revoked_key_policies:
            policy = self._revoked_key_policies.pop(key_id)
            self._admin("kms").put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
        self._changed()

    def expire_sessions(self, role_arn: str | None = None) -> int:
        """Make issued temporary credentials (of one role, or all) stop working: ``ExpiredTokenException``."""
        return self.credentials.expire_sessions(role_arn)

    # -- faults and accounting -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Wipe moto's state, issued sessions, faults and counters (the long-term identities stay)."""
        assert self._proxy is not None, "start() the emulator first"
        self._proxy.forward("POST", "/moto-api/reset", {"Content-Length": "0"}, b"")
        self.credentials.clear_sessions()
        self._revoked_role_policies.clear()
        self._revoked_key_policies.clear()
        self.faults.reset()
        self._changed()

    def settings(self) -> dict[str, Any]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.kodori_credentials[0],
            "AWS_SECRET_ACCESS_KEY": self.kodori_credentials[1],
            "KODORI_AWS_PRINCIPAL_ARN": KODORI_ARN,
            "AWS_CUSTOMER_ACCOUNT": CUSTOMER_ACCOUNT,
            "AWS_EMULATOR_ADMIN_URL": self.admin_url,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.aws", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=28452, help="proxy port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="ROLE:EXTERNAL_ID",
        help="create a key and a tenant role trusting Kodori with this ExternalId (repeatable)",
    )
    parser.add_argument("--settings-file", help="also write the settings JSON to this file")
    args = parser.parse_args(argv)

    emulator = AwsKmsEmulator(port=args.port, region=args.region).start()
    settings = emulator.settings()
    tenants = []
    for spec in args.tenant:
        role, _, external_id = spec.partition(":")
        key_arn = emulator.create_key(alias=f"alias/{role}")
        role_arn = emulator.create_tenant_role(role, external_id or None, key_arn)
        tenants.append({"role_arn": role_arn, "external_id": external_id, "key_arn": key_arn})
    settings["tenants"] = tenants
    text = json.dumps(settings, indent=2)
    print(text, flush=True)
    if args.settings_file:
        Path(args.settings_file).write_text(text)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
