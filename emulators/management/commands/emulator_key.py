"""Play the customer: disable, enable, revoke or restore a key in the running local emulators."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emulators.dev import EmulatorControl, EmulatorError

ACTIONS = ("disable", "enable", "revoke", "restore")
HELP = """\
Act on a key in the running emulators as the customer would in their cloud:

  aws   disable|enable  <key ARN, alias ARN or key id>   the key's state (DisableKey / EnableKey)
  aws   revoke|restore  <role ARN or role name>          remove / put back the role's permission policy
  azure disable|enable  <key URL or key name>            that key version (all versions for a bare name)
  azure revoke|restore  <key URL or key name>            Kodori's application loses / regains its access
                                                         to the whole vault (a restart of make run
                                                         grants it again)
  gcp   disable|enable  <CryptoKey or version name>      the version's state (version 1 for a CryptoKey)
  gcp   revoke|restore  <CryptoKey name>                 Kodori's principal loses / regains
                                                         roles/cloudkms.cryptoKeyEncrypterDecrypter on it

Kodori notices at its next probe of the key (every 30 s under make run), at once with "Retry now" on
/encryption, or when a file needs the key after Kodori's key cache expired.
"""


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        from argparse import RawDescriptionHelpFormatter

        return super().create_parser(prog_name, subcommand, formatter_class=RawDescriptionHelpFormatter)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("cloud", choices=("aws", "azure", "gcp"))
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("id", help="the key (or, for aws revoke|restore, the role); see above")
        parser.add_argument(
            "--state-dir",
            default=str(Path(settings.DEV_STATE_DIR) / "emulators"),
            help="the emulators' state directory (to find the Azure emulator when not in make run)",
        )

    def handle(self, *args: Any, cloud: str, action: str, id: str, state_dir: str, **options: Any) -> None:
        control = EmulatorControl(Path(state_dir))
        try:
            done = getattr(self, f"_{cloud}")(control, action, id.strip())
        except EmulatorError as err:
            raise CommandError(str(err)) from None
        self.stdout.write(done)

    @staticmethod
    def _aws(control: EmulatorControl, action: str, ident: str) -> str:
        if action in ("disable", "enable"):
            if ident.startswith("arn:") and ":iam::" in ident:
                raise CommandError("aws disable|enable takes a key: give its key ARN, alias ARN or key id.")
            control.aws(f"{action}_key", key_id=ident)
            return f"AWS KMS key {ident} {action}d in the emulator."
        if ident.startswith("arn:") and ":kms:" in ident:
            raise CommandError("aws revoke|restore takes the role Kodori assumes: give its role ARN or name.")
        role = ident.rsplit("/", 1)[-1]
        if action == "revoke":
            control.aws("revoke_role_access", role_name=role)
            return f"Role {role}: its permission policy is removed; Kodori's sessions lose access at once."
        control.aws("restore_role_access", role_name=role)
        return f"Role {role}: its permission policy is back."

    @staticmethod
    def _azure(control: EmulatorControl, action: str, ident: str) -> str:
        parts = (urlsplit(ident).path if "://" in ident else "/keys/" + ident).strip("/").split("/")
        if len(parts) < 2 or parts[0] != "keys" or not parts[1]:
            raise CommandError(
                "Give an Azure key URL (https://<vault>.vault.azure.net/keys/<name>/<version>)."
            )
        name, version = parts[1], (parts[2] if len(parts) > 2 and parts[2] else None)
        if action in ("disable", "enable"):
            control.azure(f"keys/{name}/{action}", {"version": version} if version else {})
            which = f"version {version}" if version else "every version"
            return f"Azure key {name}, {which}: {action}d in the emulator."
        client_id = control.azure_client_id()
        if action == "revoke":
            control.azure("revoke", {"principal": client_id})
            return f"Kodori's application {client_id} has no access to the emulator's vault any more."
        control.azure("grants", {"principal": client_id})
        return f"Kodori's application {client_id} has its access to the emulator's vault back."

    @staticmethod
    def _gcp(control: EmulatorControl, action: str, ident: str) -> str:
        key, _, number = ident.partition("/cryptoKeyVersions/")
        if not key.startswith("projects/") or "/cryptoKeys/" not in key:
            raise CommandError(
                "Give a CryptoKey name (projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>) or a version."
            )
        if action in ("disable", "enable"):
            version = f"{key}/cryptoKeyVersions/{number or 1}"
            control.gcp("set_version_state", version=version, state=f"{action.upper()}D")
            return f"GCP key version {version} {action}d in the emulator."
        if action == "revoke":
            control.gcp("revoke", resource=key)
            return f"Kodori's principal has no role on {key} any more."
        control.gcp("grant", resource=key)
        return f"Kodori's principal has roles/cloudkms.cryptoKeyEncrypterDecrypter on {key} again."
