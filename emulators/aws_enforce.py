"""The decisions the AWS emulator's proxy adds on top of moto: who may assume a role, who may use a key, and
whether the key's state allows it.

Facts come from moto itself over its public API (DescribeKey, GetKeyPolicy, GetRole, the role's inline and
attached policies), so keys and roles created with any boto3 client are covered, not only those made by the
emulator's helpers. Those lookups cost a moto round trip each, so they are cached, and the whole cache is
dropped whenever a request that could change them (any IAM or KMS call that is not a read, or an emulator
admin call) passes. Refusals are raised as :class:`Refusal` with the error code and message AWS would send.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from emulators.aws_auth import Principal
from emulators.aws_policy import ALLOW, DENY, account_of, evaluate

# Operations whose key must be Enabled, as KMS refuses cryptographic use of a disabled or pending-deletion
# key.
CRYPTO_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncrypt",
        "GenerateDataKeyPair",
    }
)
READ_PREFIXES = ("Get", "List", "Describe")


class Refusal(Exception):
    """An AWS error to send back instead of forwarding: ``code`` (``__type`` / ``Code``), message, HTTP
    status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def is_write(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES) and operation not in CRYPTO_OPERATIONS


@dataclass(frozen=True)
class KeyInfo:
    arn: str
    key_id: str
    state: str
    policy: dict[str, Any]


class Gatekeeper:
    """Looks facts up in moto (through its own admin clients) and decides."""

    def __init__(self, moto_url: str, internal_key: str, internal_secret: str) -> None:
        self._moto_url = moto_url
        self._credentials = {"aws_access_key_id": internal_key, "aws_secret_access_key": internal_secret}
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], Any] = {}

    def client(self, service: str, region: str = "us-east-1") -> Any:
        with self._lock:
            if (service, region) not in self._clients:
                self._clients[(service, region)] = boto3.client(
                    service,
                    region_name=region,
                    endpoint_url=self._moto_url,
                    config=Config(retries={"total_max_attempts": 1}),
                    **self._credentials,
                )
            return self._clients[(service, region)]

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def _cached(self, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = load()
        with self._lock:
            self._cache[key] = value
        return value

    # -- facts -----------------------------------------------------------------------------------------------

    def key_info(self, key_id: str, region: str) -> KeyInfo:
        def load() -> KeyInfo:
            kms = self.client("kms", region)
            try:
                meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
            except ClientError as err:
                if err.response["Error"]["Code"] == "NotFoundException":
                    raise Refusal("NotFoundException", f"Key '{key_id}' does not exist") from None
                raise
            policy = json.loads(kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"])
            return KeyInfo(meta["Arn"], meta["KeyId"], meta["KeyState"], policy)

        return self._cached(("key", region, key_id), load)

    def role_policies(self, role_name: str) -> list[dict[str, Any]]:
        def load() -> list[dict[str, Any]]:
            iam = self.client("iam")
            documents = []
            for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
                documents.append(iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"])
            for attached in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
                policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
                version = iam.get_policy_version(
                    PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
                )
                documents.append(version["PolicyVersion"]["Document"])
            return documents

        try:
            return self._cached(("role-policies", role_name), load)
        except ClientError as err:
            if err.response["Error"]["Code"] == "NoSuchEntity":
                return []  # the role was deleted: its sessions keep no permissions
            raise

    def trust_policy(self, role_arn: str) -> dict[str, Any] | None:
        role_name = role_arn.rsplit("/", 1)[-1]

        def load() -> dict[str, Any] | None:
            try:
                role = self.client("iam").get_role(RoleName=role_name)["Role"]
            except ClientError as err:
                if err.response["Error"]["Code"] == "NoSuchEntity":
                    return None
                raise
            if role["Arn"] != role_arn:
                return None  # same name, other path or account: not the role asked for
            return role["AssumeRolePolicyDocument"]

        return self._cached(("trust", role_arn), load)

    def identity_policies(self, principal: Principal) -> list[dict[str, Any]]:
        if principal.role_arn is not None:
            return self.role_policies(principal.role_arn.rsplit("/", 1)[-1])
        return list(principal.identity_policies)

    # -- decisions -------------------------------------------------------------------------------------------

    def authorize_assume_role(self, principal: Principal, role_arn: str, external_id: str | None) -> None:
        refusal = Refusal(
            "AccessDenied",
            f"User: {principal.arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
            403,
        )
        trust = self.trust_policy(role_arn)
        if trust is None:
            raise refusal  # AWS does not say whether the role exists
        context = {
            "sts:ExternalId": external_id,
            "aws:PrincipalArn": principal.arn,
            "aws:PrincipalAccount": principal.account,
        }
        if evaluate([trust], "sts:AssumeRole", role_arn, principal.arn, context) != ALLOW:
            raise refusal
        if principal.is_root:
            return
        if evaluate(self.identity_policies(principal), "sts:AssumeRole", role_arn, None, context) != ALLOW:
            raise refusal

    def authorize_kms(
        self, principal: Principal, action: str, key: KeyInfo | None, context: dict[str, Any]
    ) -> None:
        """Key policy and identity policies together, as KMS evaluates them."""
        resource = key.arn if key is not None else "*"
        context = {**context, "aws:PrincipalArn": principal.arn, "kms:CallerAccount": principal.account}
        identity = evaluate(self.identity_policies(principal), action, resource, None, context)
        if key is None:
            # Calls on no particular key (CreateKey, ListKeys): IAM alone decides.
            if principal.is_root or identity == ALLOW:
                return
            raise self._denied(
                principal, action, resource, "no identity-based policy allows the " + action + " action"
            )
        key_any = evaluate([key.policy], action, resource, principal.arn, context)
        if DENY in (identity, key_any):
            raise self._denied(principal, action, resource, "with an explicit deny")
        same_account = principal.account == account_of(key.arn)
        if principal.is_root and same_account and key_any == ALLOW:
            return
        key_direct = evaluate([key.policy], action, resource, principal.arn, context, accept_account=False)
        if same_account and key_direct == ALLOW:
            return
        if key_any == ALLOW and identity == ALLOW:
            return
        reason = (
            "no identity-based policy allows the " + action + " action"
            if key_any == ALLOW
            else "no resource-based policy allows the " + action + " action"
        )
        raise self._denied(principal, action, resource, reason)

    @staticmethod
    def _denied(principal: Principal, action: str, resource: str, reason: str) -> Refusal:
        return Refusal(
            "AccessDeniedException",
            f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} "
            f"because {reason}",
        )

    @staticmethod
    def require_usable(key: KeyInfo) -> None:
        if key.state == "Disabled":
            raise Refusal("DisabledException", f"{key.arn} is disabled.")
        if key.state == "PendingDeletion":
            raise Refusal("KMSInvalidStateException", f"{key.arn} is pending deletion.")
        if key.state != "Enabled":
            raise Refusal("KMSInvalidStateException", f"{key.arn} is {key.state}.")
