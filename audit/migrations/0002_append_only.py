"""The database itself refuses UPDATE, DELETE and TRUNCATE on audit events and checkpoints.

The ORM already refuses (``audit.models``); this catches raw SQL, other clients and bugs. TRUNCATE is let
through only in a session that set ``kodori.audit_allow_truncate = on``, which the test settings do so the
test runner can empty tables between tests. Anyone who owns the tables can still disable the triggers: the
hash chain and the signed checkpoints, not this, are what make tampering evident (docs/audit.md, "Limits").
"""

from __future__ import annotations

from django.db import migrations

FUNCTION = """
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('kodori.audit_allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
"""

TABLES = ("audit_auditevent", "audit_checkpoint")


def _triggers(table: str) -> str:
    return f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""


def _drop(table: str) -> str:
    return f"""
DROP TRIGGER IF EXISTS {table}_append_only ON {table};
DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.RunSQL(FUNCTION, "DROP FUNCTION IF EXISTS audit_refuse_change();"),
        *[migrations.RunSQL(_triggers(table), _drop(table)) for table in TABLES],
    ]
