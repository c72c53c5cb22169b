"""The test database's variant of the audit tables' guard: TRUNCATE passes in a session that asks for it.

The test runner empties every table between transactional tests with TRUNCATE, which the guard refuses
(``audit_refuse_change``, migrations 0002 and 0008). Production must not have a way around it that the
application's own database role could take: any role may SET a custom setting, so a guard that read one
would be no guard. The production function (migration 0008) therefore has no exception at all, and this
variant, which lets TRUNCATE through when the session set ``kodori.audit_allow_truncate = on`` (the test
settings connect with it), is installed only after ``migrate`` in a process with ``DJANGO_ENV=test``
(``AuditConfig.ready``).
UPDATE and DELETE are refused here as in production.

``manage.py check --database default`` fails (``audit.E002``) if a production database holds this variant,
or if any guard trigger is disabled.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections

BYPASS_SETTING = "kodori.audit_allow_truncate"

FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('{BYPASS_SETTING}', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
"""


def install_for_tests(*, using: str = "default", **kwargs: Any) -> None:
    """``post_migrate`` receiver: give the test database its TRUNCATE door; nowhere else does anything."""
    if settings.DJANGO_ENV != "test":
        return
    with connections[using].cursor() as cursor:
        cursor.execute(FUNCTION)
