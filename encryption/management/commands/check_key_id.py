"""Check a key identifier the way Kodori will when a tenant registers it.

    $ python manage.py check_key_id gcp projects/my-project/locations/global/keyRings/kodori/cryptoKeys/kek
    accepted: projects/my-project/locations/global/keyRings/kodori/cryptoKeys/kek
    host: cloudkms.googleapis.com

Exit status 0 when accepted, 2 when refused (``refused: <the message the tenant would see>``), so support
and operators can check an identifier before a tenant registers it, or in a script. Both verdicts go to
standard output. The host printed is the production one; local emulator endpoints come from settings only.
Usage errors (an unknown kind) also exit 2, as argparse does; an identifier starting with '-' goes after '--'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from encryption.identifiers import (
    AZURE_LOGIN_HOSTS,
    InvalidKeyIdentifier,
    aws_dns_suffix,
    endpoint_host_for,
    parse_aws_key_arn,
    parse_aws_role_arn,
    parse_azure_directory_id,
    parse_azure_key_url,
    parse_gcp_crypto_key,
)

REFUSED_EXIT_CODE = 2


def _aws(value: str) -> tuple[str, str]:
    key = parse_aws_key_arn(value)
    return key.arn, endpoint_host_for(key)


def _aws_role(value: str) -> tuple[str, str]:
    role = parse_aws_role_arn(value)
    # The role ARN has no region: Kodori calls the STS endpoint of the key's region, in the role's partition.
    return role.arn, f"sts.<key region>.{aws_dns_suffix(role.partition)} (STS in the key's region)"


def _azure(value: str) -> tuple[str, str]:
    key = parse_azure_key_url(value)
    return key.key_id, endpoint_host_for(key)


def _azure_directory(value: str) -> tuple[str, str]:
    # Sign-in happens in the key's cloud, which the directory id alone does not tell (see login_host_for).
    hosts = ", ".join(f"{host} ({cloud})" for cloud, host in AZURE_LOGIN_HOSTS.items())
    return parse_azure_directory_id(value), f"the sign-in host of the key's cloud: {hosts}"


def _gcp(value: str) -> tuple[str, str]:
    key = parse_gcp_crypto_key(value)
    return key.name, endpoint_host_for(key)


CHECKS: dict[str, Callable[[str], tuple[str, str]]] = {
    "aws": _aws,
    "aws-role": _aws_role,
    "azure": _azure,
    "azure-directory": _azure_directory,
    "gcp": _gcp,
}


class Command(BaseCommand):
    help = "Check a customer key identifier: prints 'accepted: …' and exits 0, or 'refused: …' and exits 2."
    # Pure parsing: no database, no network, nothing that system checks would guard.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=list(CHECKS), help="which kind of identifier")
        parser.add_argument("identifier", help="the identifier exactly as the tenant would enter it")

    def handle(self, *args: Any, kind: str, identifier: str, **options: Any) -> None:
        try:
            normalized, host = CHECKS[kind](identifier)
        except InvalidKeyIdentifier as exc:
            self.stdout.write(f"refused: {exc}")
            raise SystemExit(REFUSED_EXIT_CODE) from None
        self.stdout.write(f"accepted: {normalized}")
        self.stdout.write(f"host: {host}")
