"""The AWS emulator with a memory: customer-account keys and roles survive a restart (``make run``).

moto keeps everything in memory, and a KMS key's material is random: a key re-created after a restart, even
with the same ARN, could not decrypt what the old one encrypted. :class:`PersistentAwsKmsEmulator` therefore
writes a snapshot of the customer account to a JSON file (mode 0600: it holds key material) and, on start,
puts every key back into moto with its key id, ARN, material, state, policy, aliases and tags, and every IAM
role with its trust policy and inline policies. Data Kodori wrapped under an emulated key before the restart
still unwraps after it, under the same key ARN and alias ARN.

When the snapshot is written: after every admin call that changes something (``create_key``, ``disable_key``,
``provision_tenant``, ``revoke_role_access``…), every few seconds if anything else changed (keys created by a
boto3 client through the proxy), and on ``stop()``. Symmetric and HMAC keys are kept (their material is all
there is); asymmetric keys would come back with a new private key, so they are left out. Attached managed
policies, instance profiles, grants and users are not kept. Kodori's own deployment credentials are new on
every start, as before: a role trusts Kodori's principal ARN, which does not change.

Restoring reaches into moto's in-process backends (``moto.kms.models.kms_backends``,
``moto.iam.models.iam_backends``): moto's API cannot create a key with a given id or import material into an
``AWS_KMS`` key. moto runs in this process (``aws._shared_moto_address``), so those are the live objects.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from emulators.aws import CUSTOMER_ACCOUNT, KODORI_ARN, AwsKmsEmulator

logger = logging.getLogger(__name__)

STATE_VERSION = 1
# What a demo role may do with its key: exactly what Kodori's provider calls.
TENANT_ROLE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
_SAVE_INTERVAL_SECONDS = 5.0


def _kms_backends() -> Any:
    from moto.kms.models import kms_backends

    return kms_backends


def _iam_backend() -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[CUSTOMER_ACCOUNT]["global"]


def snapshot(revoked_roles: dict[str, list[tuple[str, str]]], revoked_keys: dict[str, str]) -> dict[str, Any]:
    """The customer account's keys and roles as JSON-able data (key material base64)."""
    keys = []
    for account, region, backend in list(_kms_backends().iter_backends()):
        if account != CUSTOMER_ACCOUNT:
            continue
        for key in list(backend.keys.values()):
            if not (key.key_spec == "SYMMETRIC_DEFAULT" or str(key.key_spec).startswith("HMAC_")):
                continue
            deletion = key.deletion_date.isoformat() if key.deletion_date else None
            keys.append(
                {
                    "region": region,
                    "id": key.id,
                    "arn": key.arn,
                    "description": key.description,
                    "key_usage": key.key_usage,
                    "key_spec": key.key_spec,
                    "origin": key.origin,
                    "multi_region": bool(key.multi_region),
                    "material": base64.b64encode(key.key_material).decode("ascii"),
                    "creation_date": key.creation_date,
                    "enabled": bool(key.enabled),
                    "key_state": key.key_state,
                    "deletion_date": deletion,
                    "rotation": bool(key.key_rotation_status),
                    "policy": key.policy,
                    "aliases": sorted(key.aliases),
                    "tags": backend.tagger.list_tags_for_resource(key.id).get("Tags", []),
                }
            )
    roles = []
    for role in list(_iam_backend().roles.values()):
        roles.append(
            {
                "name": role.name,
                "path": role.path,
                "description": role.description or "",
                "trust": role.assume_role_policy_document,
                "policies": dict(role.policies),
            }
        )
    return {
        "version": STATE_VERSION,
        "account": CUSTOMER_ACCOUNT,
        "keys": sorted(keys, key=lambda k: (k["region"], k["creation_date"], k["id"])),
        "roles": sorted(roles, key=lambda r: r["name"]),
        "revoked_role_policies": {name: [list(p) for p in saved] for name, saved in revoked_roles.items()},
        "revoked_key_policies": dict(revoked_keys),
    }


def _restore_key(saved: dict[str, Any]) -> None:
    backend = _kms_backends()[CUSTOMER_ACCOUNT][saved["region"]]
    key = backend.create_key(
        saved["policy"],
        saved["key_usage"],
        saved["key_spec"],
        saved["description"],
        None,
        saved["multi_region"],
        saved["origin"],
    )
    del backend.keys[key.id]
    key.id, key.arn = saved["id"], saved["arn"]
    if saved["multi_region"]:
        key.multi_region_configuration["PrimaryKey"]["Arn"] = key.arn
    key.key_material = base64.b64decode(saved["material"])
    key.creation_date = saved["creation_date"]
    key.enabled = saved["enabled"]
    key.key_state = saved["key_state"]
    key.key_rotation_status = saved["rotation"]
    if saved["deletion_date"]:
        key.deletion_date = datetime.datetime.fromisoformat(saved["deletion_date"])
    backend.keys[key.id] = key
    for alias in saved["aliases"]:
        backend.create_alias(key.id, alias)
    if saved["tags"]:
        backend.tagger.tag_resource(key.id, saved["tags"])


class PersistentAwsKmsEmulator(AwsKmsEmulator):
    """:class:`AwsKmsEmulator` whose customer account is kept in ``state_file`` (see the module docstring).

    ``provision_tenant`` (also an admin call) creates or updates, idempotently, what a customer sets up for
    Kodori: a key with an alias, and a role that trusts Kodori's principal with the tenant's ExternalId and
    may use that key.
    """

    ADMIN_METHODS = AwsKmsEmulator.ADMIN_METHODS | frozenset({"provision_tenant", "save_state"})

    def __init__(self, state_file: str | os.PathLike[str], port: int = 0, region: str = "us-east-1") -> None:
        super().__init__(port=port, region=region)
        self.state_file = Path(state_file)
        self._save_lock = threading.Lock()
        self._saved_text = ""
        self._persisting = False
        self._stop_saver = threading.Event()
        self._saver: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> PersistentAwsKmsEmulator:
        super().start()  # resets moto
        try:
            self._restore()
        except BaseException:
            super().stop()
            raise
        self._persisting = True
        self._stop_saver.clear()
        self._saver = threading.Thread(target=self._save_periodically, name="aws-emulator-saver", daemon=True)
        self._saver.start()
        return self

    def warm_up(self) -> None:
        """Make the admin clients and moto's first request per service (a tenth of a second or more each) in
        a background thread, so the first admin call does not wait for them. ``start_all`` calls it once every
        emulator is up: before, the thread would hold the GIL against their start-up."""

        def run() -> None:
            with contextlib.suppress(Exception):
                self._admin("kms").list_keys(Limit=1)
                self._admin("iam").list_roles(MaxItems=1)

        threading.Thread(target=run, name="aws-emulator-warm-up", daemon=True).start()

    def stop(self) -> None:
        if self._persisting:
            self._stop_saver.set()
            if self._saver is not None:
                self._saver.join(timeout=5)
                self._saver = None
            self.save_state()
            self._persisting = False
        super().stop()

    def _changed(self) -> None:
        super()._changed()
        if self._persisting:
            self.save_state()

    def _save_periodically(self) -> None:
        while not self._stop_saver.wait(_SAVE_INTERVAL_SECONDS):
            try:
                self.save_state()
            except Exception:  # a moto dict changing under the snapshot: the next round catches up
                logger.exception("could not save the AWS emulator's state")

    # -- persistence -----------------------------------------------------------------------------------------

    def save_state(self) -> bool:
        """Write the snapshot if it changed since the last write; True when it wrote."""
        with self._save_lock:
            data = snapshot(self._revoked_role_policies, self._revoked_key_policies)
            text = json.dumps(data, indent=1, sort_keys=True) + "\n"
            if text == self._saved_text:
                return False
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            tmp.replace(self.state_file)
            self._saved_text = text
            return True

    def _restore(self) -> None:
        if not self.state_file.exists():
            return
        text = self.state_file.read_text(encoding="utf-8")
        data = json.loads(text)
        if data.get("version") != STATE_VERSION or data.get("account") != CUSTOMER_ACCOUNT:
            raise ValueError(f"{self.state_file}: not an AWS emulator state file this version can read")
        for key in data["keys"]:
            _restore_key(key)
        iam = _iam_backend()
        for role in data["roles"]:
            iam.create_role(role["name"], role["trust"], role["path"], None, role["description"], [], None)
            for name, document in role["policies"].items():
                iam.put_role_policy(role["name"], name, document)
        self._revoked_role_policies.update(
            {name: [(p[0], p[1]) for p in saved] for name, saved in data["revoked_role_policies"].items()}
        )
        self._revoked_key_policies.update(data["revoked_key_policies"])
        super()._changed()
        self._saved_text = text

    # -- what a customer sets up for Kodori ------------------------------------------------------------------

    def provision_tenant(self, name: str, external_id: str) -> dict[str, str]:
        """Key ``alias/<name>`` and role ``<name>`` trusting Kodori with ``external_id``; returns their ARNs.

        Idempotent: an existing key is kept as it is (whatever state it was put in); an existing role gets the
        trust policy with this ExternalId and its key policy back, unless its access was revoked with
        ``revoke_role_access`` (``restore_role_access`` brings it back).
        """
        if not external_id:
            raise ValueError("external_id is required: the role must demand the tenant's ExternalId")
        kms, iam = self._admin("kms"), self._admin("iam")
        alias = f"alias/{name}"
        try:
            key_arn = str(kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"])
        except ClientError as err:
            if err.response["Error"]["Code"] != "NotFoundException":
                raise
            key_arn = self.create_key(alias=alias, description=f"Kodori demo key ({name})")
        try:
            role_arn = str(iam.get_role(RoleName=name)["Role"]["Arn"])
        except ClientError as err:
            if err.response["Error"]["Code"] != "NoSuchEntity":
                raise
            role_arn = self.create_tenant_role(name, external_id, key_arn, actions=TENANT_ROLE_ACTIONS)
        else:
            trust = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": KODORI_ARN},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                    }
                ],
            }
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            if name not in self._revoked_role_policies:
                policy = {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": TENANT_ROLE_ACTIONS, "Resource": key_arn}],
                }
                iam.put_role_policy(RoleName=name, PolicyName="kodori-kms", PolicyDocument=json.dumps(policy))
            self._changed()
        region = key_arn.split(":")[3]
        return {
            "key_arn": key_arn,
            "alias_arn": f"arn:aws:kms:{region}:{CUSTOMER_ACCOUNT}:{alias}",
            "role_arn": role_arn,
            "region": region,
        }
