"""Create the demo tenants and users that `make run` prints. Safe to re-run: nothing duplicated or reset.

Both demo tenants get cloud KMS switched on (through ``set_cloud_kms_enabled``, so the audit log records it
with a reason), so their owners can try every key flow against the local emulators. Only once: a tenant
whose switch was ever flipped, by this command or by support in the admin, keeps what it has.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from audit.models import AuditEvent, EventType
from tenants.models import Membership, Role, Tenant, TenantState
from tenants.services import set_cloud_kms_enabled

# Initech is there to be deleted: try export, scheduled deletion and erasure on it without losing Acme.
TENANTS = [("acme", "Acme Corp"), ("globex", "Globex"), ("initech", "Initech")]
# (e-mail, tenant slug, role)
MEMBERS = [
    ("owner@acme.test", "acme", Role.OWNER),
    ("admin@acme.test", "acme", Role.ADMIN),
    ("member@acme.test", "acme", Role.MEMBER),
    ("viewer@acme.test", "acme", Role.VIEWER),
    ("owner@globex.test", "globex", Role.OWNER),
    # The acme owner also helps at Globex, to show the tenant switcher.
    ("owner@acme.test", "globex", Role.ADMIN),
    ("owner@acme.test", "initech", Role.OWNER),
]
STAFF_EMAIL = "support@kodori.test"
CLOUD_KMS_REASON = (
    "Demo tenant: switched on by seed_demo so every key flow can be tried against the emulators"
)
SUPPORT_GROUP = "Support"
# change_tenantkey: the key admin's only action, re-enabling a disabled key on a customer's request.
SUPPORT_PERMISSIONS = [
    "view_tenant",
    "change_tenant",
    "view_membership",
    "view_tenantkey",
    "change_tenantkey",
    "view_chainbreak",
    "change_chainbreak",
    "view_scrubpass",
    "view_deletionrequest",
    # An erased tenant's audit chain stays readable by support only, until TENANT_AUDIT_RETENTION_DAYS end.
    "view_auditevent",
    "view_checkpoint",
]


class Command(BaseCommand):
    help = "Create the demo tenants (acme, globex), their users and a support (staff) user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password",
            default=os.environ.get("KODORI_DEMO_PASSWORD", ""),
            help="Password given to demo users when they are first created (default: $KODORI_DEMO_PASSWORD).",
        )

    @transaction.atomic
    def handle(self, *args: Any, password: str, **options: Any) -> None:
        if len(password) < 12:
            raise CommandError("Give --password (at least 12 characters) or set KODORI_DEMO_PASSWORD.")
        user_model = get_user_model()
        tenants = {}
        for slug, name in TENANTS:
            tenants[slug], _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name})

        def user(email: str, **extra: Any) -> Any:
            existing = user_model.objects.filter(username=email).first()
            if existing is not None:
                return existing
            return user_model.objects.create_user(username=email, email=email, password=password, **extra)

        # A demo tenant that was erased stays erased: nobody is added back to it.
        gone = {TenantState.ERASING, TenantState.ERASED}
        for email, slug, role in MEMBERS:
            if tenants[slug].state in gone:
                continue
            Membership.objects.get_or_create(user=user(email), tenant=tenants[slug], defaults={"role": role})

        switches = [EventType.TENANT_CLOUD_KMS_ENABLED, EventType.TENANT_CLOUD_KMS_DISABLED]
        for tenant in tenants.values():
            if tenant.state in gone:
                continue
            if not AuditEvent.objects.filter(tenant=tenant, type__in=switches).exists():
                set_cloud_kms_enabled(tenant, True, actor=None, reason=CLOUD_KMS_REASON)

        staff = user(STAFF_EMAIL, is_staff=True)
        group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
        group.permissions.set(Permission.objects.filter(codename__in=SUPPORT_PERMISSIONS))
        staff.groups.add(group)

        self.stdout.write("Demo logins (password for each, unless you changed it since):")
        self.stdout.write(f"  password: {password}")
        for email, slug, role in MEMBERS:
            if tenants[slug].state not in gone:
                self.stdout.write(f"  {email:<22} {role.label:<7} in {tenants[slug].name}")
        self.stdout.write(f"  {STAFF_EMAIL:<22} support staff (Django admin at /admin/)")
        self.stdout.write(
            "  Initech is for trying offboarding (Export, Tenant deletion); start with "
            "TENANT_DELETION_SHORT_WINDOW_SECONDS=120 make run to watch an erasure finish."
        )
