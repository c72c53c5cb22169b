"""``audit_append``: one round trip that locks the tenant's chain, reads its head and inserts the next event.

Appends of one tenant are serialized by a transaction-level advisory lock, held until the caller's transaction
ends. Doing the lock, the read of the head and the insert inside one PL/pgSQL call keeps client round trips
out of that critical section. Each statement of a volatile PL/pgSQL function takes a fresh snapshot under READ
COMMITTED, so the head read after the lock sees the previous holder's committed event.

The hash is SHA-256(prev_hash ‖ body), where Python passes the canonical body in three pieces around the two
values only known under the lock, ``created_at`` and ``seq`` (``audit.encoding.body_pieces``). Python recomputes
the hash from the returned row before the caller's transaction can commit (``audit.services.record``).
"""

from __future__ import annotations

from django.db import migrations

FUNCTION = r"""
CREATE FUNCTION audit_append(
    p_tenant bigint, p_type text, p_created_at timestamptz, p_actor_id bigint, p_actor_name text,
    p_actor_email text, p_request_id text, p_ip text, p_payload text,
    p_body_a bytea, p_body_b bytea, p_body_c bytea
) RETURNS TABLE (event_id bigint, event_seq bigint, event_created_at timestamptz, event_prev_hash text,
                 event_hash text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last_seq bigint;
    last_hash text;
    last_created timestamptz;
    stamp text;
BEGIN
    PERFORM pg_advisory_xact_lock(1262764373, (p_tenant % 2147483648)::int4);
    SELECT e.seq, e.hash, e.created_at INTO last_seq, last_hash, last_created
        FROM audit_auditevent e WHERE e.tenant_id = p_tenant ORDER BY e.seq DESC LIMIT 1;
    event_seq := coalesce(last_seq, 0) + 1;
    event_prev_hash := coalesce(last_hash, repeat('0', 64));
    -- Never earlier than the previous event, so time order is sequence order even if clocks disagree.
    event_created_at := greatest(p_created_at, last_created);
    stamp := to_char(event_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    event_hash := encode(sha256(decode(event_prev_hash, 'hex') || p_body_a || convert_to(stamp, 'UTF8')
                                || p_body_b || convert_to(event_seq::text, 'UTF8') || p_body_c), 'hex');
    INSERT INTO audit_auditevent (tenant_id, seq, type, created_at, actor_id, actor_name, actor_email,
                                  request_id, ip, payload, prev_hash, hash)
        VALUES (p_tenant, event_seq, p_type, event_created_at, p_actor_id, p_actor_name, p_actor_email,
                p_request_id, p_ip, p_payload::jsonb, event_prev_hash, event_hash)
        RETURNING id INTO event_id;
    RETURN NEXT;
END
$$;
"""

DROP = (
    "DROP FUNCTION IF EXISTS audit_append(bigint, text, timestamptz, bigint, text, text, text, text, text, "
    "bytea, bytea, bytea);"
)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    operations = [migrations.RunSQL(FUNCTION, DROP)]
