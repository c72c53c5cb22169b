"""AWS KMS key ARNs, alias ARNs and IAM role ARNs, with their partitions and regions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .common import InvalidKeyIdentifier, _check_text, _refuse

# --- AWS ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Partition:
    region: re.Pattern[str]
    dns_suffix: str  # botocore's partitions.json: kms.<region>.<suffix> and sts.<region>.<suffix>


_PARTITIONS: dict[str, _Partition] = {
    "aws": _Partition(re.compile(r"(?:us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d{1,2}"), "amazonaws.com"),
    "aws-cn": _Partition(re.compile(r"cn-[a-z]+-\d{1,2}"), "amazonaws.com.cn"),
    "aws-us-gov": _Partition(re.compile(r"us-gov-[a-z]+-\d{1,2}"), "amazonaws.com"),
    "aws-iso": _Partition(re.compile(r"us-iso-[a-z]+-\d{1,2}"), "c2s.ic.gov"),
    "aws-iso-b": _Partition(re.compile(r"us-isob-[a-z]+-\d{1,2}"), "sc2s.sgov.gov"),
    "aws-iso-e": _Partition(re.compile(r"eu-isoe-[a-z]+-\d{1,2}"), "cloud.adc-e.uk"),
    "aws-iso-f": _Partition(re.compile(r"us-isof-[a-z]+-\d{1,2}"), "csp.hci.ic.gov"),
    "aws-eusc": _Partition(re.compile(r"eusc-de-[a-z]+-\d{1,2}"), "amazonaws.eu"),
}
_PARTITION_LIST = ", ".join(_PARTITIONS)
_ACCOUNT = re.compile(r"\d{12}")
_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}")
_ALIAS = re.compile(r"[A-Za-z0-9/_-]{1,250}")
_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")
_ROLE_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_+=,.@-]+")

AWS_KEY_ACCEPTED = (
    "Kodori accepts a KMS key ARN, arn:<partition>:kms:<region>:<12-digit account>:key/<key id> "
    "(e.g. arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab, or key/mrk-<32 hex> "
    "for a multi-Region key), or an alias ARN such as arn:aws:kms:us-east-1:111122223333:alias/my-key; "
    f"partitions: {_PARTITION_LIST}"
)
AWS_ROLE_ACCEPTED = (
    "Kodori accepts an IAM role ARN, arn:<partition>:iam::<12-digit account>:role/<optional path/><name> "
    f"(e.g. arn:aws:iam::111122223333:role/kodori-kms); partitions: {_PARTITION_LIST}"
)


@dataclass(frozen=True)
class AwsKeyArn:
    """A customer managed KMS key named by its key ARN or alias ARN.

    ``resource_id`` is what follows ``key/`` (the key id) or ``alias/`` (the alias name); ``arn`` is the
    normalized ARN that Kodori passes as ``KeyId``.
    """

    partition: str
    region: str
    account: str
    resource_type: Literal["key", "alias"]
    resource_id: str
    arn: str


@dataclass(frozen=True)
class AwsRoleArn:
    """The IAM role Kodori assumes (with the tenant's ExternalId) to use the tenant's key."""

    partition: str
    account: str
    path: str  # "/" or "/segment/.../"
    name: str
    arn: str


def _split_arn(value: str, service: str, ok: str) -> list[str]:
    if not value.startswith("arn:"):
        if _KEY_ID.fullmatch(value.lower()) or value.startswith("alias/"):
            raise _refuse(
                "A bare key id or alias name is not enough: Kodori needs the full ARN, which carries the "
                "region and the account",
                ok,
            )
        raise _refuse("The value is not an ARN (it must start with 'arn:')", ok)
    parts = value.split(":", 5)
    if len(parts) != 6:
        raise _refuse("The ARN has too few ':'-separated parts", ok)
    partition = parts[1]
    if partition not in _PARTITIONS:
        raise _refuse(f"The ARN names an unknown partition (known: {_PARTITION_LIST})", ok)
    if parts[2] != service:
        raise _refuse(f"The ARN is for the '{parts[2][:20]}' service, not '{service}'", ok)
    if not _ACCOUNT.fullmatch(parts[4]):
        raise _refuse("The account in the ARN must be exactly 12 digits", ok)
    return parts


def parse_aws_key_arn(value: object) -> AwsKeyArn:
    """Parse ``arn:<partition>:kms:<region>:<account>:key/<id>`` or ``...:alias/<name>``."""
    ok = AWS_KEY_ACCEPTED
    text = _check_text(value, "The key ARN", ok)
    _, partition, _, region, account, resource = _split_arn(text, "kms", ok)
    if not _PARTITIONS[partition].region.fullmatch(region):
        owner = next((name for name, p in _PARTITIONS.items() if p.region.fullmatch(region)), None)
        problem = (
            f"The region '{region}' belongs to the {owner} partition, not {partition}"
            if owner
            else "The region in the ARN is missing or not a known AWS region format"
        )
        raise _refuse(problem, ok)
    kind, _, rest = resource.partition("/")
    if kind == "key":
        key_id = rest.lower()  # AWS issues lowercase ids; a pasted uppercase id names the same key
        if not _KEY_ID.fullmatch(key_id):
            raise _refuse("The key id must be a UUID or mrk- followed by 32 hex digits", ok)
        arn = f"arn:{partition}:kms:{region}:{account}:key/{key_id}"
        return AwsKeyArn(partition, region, account, "key", key_id, arn)
    if kind == "alias":
        if rest.startswith("aws/"):
            raise _refuse(
                "alias/aws/... names an AWS managed key, which cannot be shared with Kodori; create a "
                "customer managed key and give its ARN or alias ARN",
                ok,
            )
        if not _ALIAS.fullmatch(rest):
            raise _refuse(
                "The alias name may contain only letters, digits, '/', '_' and '-' (1-250 characters)",
                ok,
            )
        return AwsKeyArn(partition, region, account, "alias", rest, text)
    raise _refuse("The ARN must name a key (key/...) or an alias (alias/...)", ok)


def parse_aws_role_arn(value: object) -> AwsRoleArn:
    """Parse ``arn:<partition>:iam::<account>:role/<path/><name>``."""
    ok = AWS_ROLE_ACCEPTED
    text = _check_text(value, "The role ARN", ok)
    _, partition, _, region, account, resource = _split_arn(text, "iam", ok)
    if region:
        raise _refuse("An IAM role ARN has no region (arn:aws:iam::<account>:role/...)", ok)
    if not resource.startswith("role/"):
        raise _refuse("The ARN must name a role (role/...)", ok)
    *segments, name = resource[len("role/") :].split("/")
    if not _ROLE_NAME.fullmatch(name):
        raise _refuse("The role name must be 1-64 letters, digits or the characters _+=,.@-", ok)
    if not all(_ROLE_PATH_SEGMENT.fullmatch(s) for s in segments):
        raise _refuse("The role path must be '/'-separated letters, digits or _+=,.@-", ok)
    if segments and segments[0] in ("aws-service-role", "aws-reserved"):
        # Service-linked and IAM Identity Center roles trust only AWS services: Kodori can never assume them.
        raise _refuse("Roles under /aws-service-role/ or /aws-reserved/ cannot be assumed by Kodori", ok)
    path = "/" + "".join(f"{s}/" for s in segments)
    if len(path) > 512:
        raise _refuse("The role path is longer than 512 characters", ok)
    return AwsRoleArn(partition, account, path, name, text)


def check_aws_role_for_key(role: AwsRoleArn, key: AwsKeyArn) -> None:
    """Refuse a role and key in different partitions (credentials never cross partitions).

    Different accounts are fine: the key policy can grant a role of another account of the same partition.
    """
    if role.partition != key.partition:
        raise InvalidKeyIdentifier(
            f"The role is in the {role.partition} partition but the key is in {key.partition}; AWS "
            "credentials work only within one partition. Kodori accepts a role and a key of the same "
            "partition (their accounts may differ)."
        )
