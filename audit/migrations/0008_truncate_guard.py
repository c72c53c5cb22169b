"""The database guards the audit tables without a bypass, and keeps ``ChainBreak`` rows as evidence.

Migration 0002's ``audit_refuse_change`` let TRUNCATE through in any session that set the custom setting
``kodori.audit_allow_truncate = on``. Any role may SET a custom setting, so that was a door for the
application's own database role. Here the function is recreated without it: in a database migrated for
production nothing lets UPDATE, DELETE or TRUNCATE through but disabling the triggers, which needs the table's
owner. The test runner, which empties tables between tests, gets a variant with the door back from
``audit.truncate_bypass``, installed after ``migrate`` only when ``DJANGO_ENV=test`` (docs/audit.md).

``audit_chainbreak`` rows are never deleted or truncated, and an update may only acknowledge a break once, or
note when it was last seen again: what was found, where and when stays as it was found.
"""

from __future__ import annotations

from django.db import migrations

REFUSE = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
"""

# What 0002 installed, for unapplying this migration.
REFUSE_0002 = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('kodori.audit_allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
"""

BREAK_GUARD = """
CREATE FUNCTION audit_chainbreak_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.tenant_id, NEW.first_bad_seq, NEW.last_bad_seq, NEW.kind, NEW.detail, NEW.reason,
        NEW.found_at, NEW.found_by)
       IS DISTINCT FROM
       (OLD.id, OLD.tenant_id, OLD.first_bad_seq, OLD.last_bad_seq, OLD.kind, OLD.detail, OLD.reason,
        OLD.found_at, OLD.found_by)
       OR (OLD.acknowledged_at IS NOT NULL
           AND (NEW.acknowledged_at, NEW.ack_actor_id, NEW.ack_actor_name, NEW.ack_actor_email, NEW.ack_via,
                NEW.ack_reason, NEW.ack_seq)
               IS DISTINCT FROM
               (OLD.acknowledged_at, OLD.ack_actor_id, OLD.ack_actor_name, OLD.ack_actor_email, OLD.ack_via,
                OLD.ack_reason, OLD.ack_seq))
    THEN
        RAISE EXCEPTION 'a chain break is kept as found and acknowledged once: UPDATE of break % refused', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_chainbreak_guard BEFORE UPDATE ON audit_chainbreak
    FOR EACH ROW EXECUTE FUNCTION audit_chainbreak_guard();
CREATE TRIGGER audit_chainbreak_append_only BEFORE DELETE ON audit_chainbreak
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chainbreak_no_truncate BEFORE TRUNCATE ON audit_chainbreak
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""

DROP_BREAK_GUARD = """
DROP TRIGGER IF EXISTS audit_chainbreak_no_truncate ON audit_chainbreak;
DROP TRIGGER IF EXISTS audit_chainbreak_append_only ON audit_chainbreak;
DROP TRIGGER IF EXISTS audit_chainbreak_guard ON audit_chainbreak;
DROP FUNCTION IF EXISTS audit_chainbreak_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_chain_breaks")]

    operations = [
        migrations.RunSQL(REFUSE, REFUSE_0002),
        migrations.RunSQL(BREAK_GUARD, DROP_BREAK_GUARD),
    ]
