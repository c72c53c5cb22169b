"""System checks: a malformed audit signing key fails ``manage.py check`` instead of the first checkpoint, and
(``check --database default``) a production database whose audit guard has a way around it fails too."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.migrations.recorder import MigrationRecorder

from . import signing
from .truncate_bypass import BYPASS_SETTING

# Every trigger that guards the audit tables (migrations 0002 and 0008); a disabled one guards nothing.
GUARD_MIGRATION = "0008_truncate_guard"
GUARD_TRIGGERS = (
    "audit_auditevent_append_only",
    "audit_auditevent_no_truncate",
    "audit_checkpoint_append_only",
    "audit_checkpoint_no_truncate",
    "audit_chainbreak_guard",
    "audit_chainbreak_append_only",
    "audit_chainbreak_no_truncate",
)


@register()
def check_signing_key(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        signing.private_key_bytes()
        signing.trusted_public_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="See docs/audit.md, 'Checkpoints and key rotation'.", id="audit.E001")]
    return []


def guard_problems(using: str = "default") -> list[str]:
    """What is wrong with the database's audit guard: a TRUNCATE door in its function, or a trigger off."""
    problems = []
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'audit_refuse_change'")
        sources = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(%s)",
            [list(GUARD_TRIGGERS)],
        )
        triggers = dict(cursor.fetchall())
    if any(BYPASS_SETTING in source for source in sources):
        problems.append(f"audit_refuse_change() lets TRUNCATE through when a session sets {BYPASS_SETTING}")
    for name in GUARD_TRIGGERS:
        if name not in triggers:
            problems.append(f"trigger {name} is missing")
        elif triggers[name] == "D":
            problems.append(f"trigger {name} is disabled")
    return problems


def _guard_migrated(alias: str) -> bool:
    """Whether the migration that completes the guard has run on ``alias`` (an unreadable database: yes, so
    the check itself reports why)."""
    try:
        return ("audit", GUARD_MIGRATION) in MigrationRecorder(connections[alias]).applied_migrations()
    except DatabaseError:
        return True


@register(Tags.database)
def check_audit_guard(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --database default`` in production: the database refuses to change the audit log."""
    if not getattr(settings, "PRODUCTION", False) or not databases:
        return []
    messages: list[CheckMessage] = []
    for alias in databases:
        if not _guard_migrated(alias):
            continue  # a new database: ``migrate`` (which runs this check first) is what installs the guard
        try:
            problems = guard_problems(alias)
        except DatabaseError as exc:
            problems = [f"cannot inspect the audit guard: {exc}"]
        hint = "Run `manage.py migrate audit` with DJANGO_ENV=production; see docs/audit.md, 'Append-only'."
        messages += [Error(f"{alias}: {problem}", hint=hint, id="audit.E002") for problem in problems]
    return messages
