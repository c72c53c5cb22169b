"""A million files per tenant (issue 17): per-tenant totals kept by PostgreSQL, an index per sort of the list
ending in the id (keyset pages), and a trigram index for name search (``pg_trgm``, a trusted extension that
the database owner may create).

Totals work as ``encryption`` 0005's data-key counts do: ``blob_tenant_stats`` is a base, and three
statement-level triggers on ``blobs`` append one row per tenant to ``blob_stat_deltas`` for each statement
that changes a total, in the same transaction as the rows. Appending locks no shared row (no foreign key
either), so counting adds no lock that uploads, deletes or the sweeper could wait for or deadlock on. A
tenant's totals are its base plus its pending deltas, read in one statement (``TenantBlobStats.of``);
``fold_blob_stats()`` moves deltas into the bases. A statement that changes no total (the scrub marking a blob
verified) appends nothing.
"""

import django.contrib.postgres.indexes
import django.db.models.deletion
import django.db.models.functions.text
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

_DELTA = """
    INSERT INTO blob_stat_deltas (tenant_id, ready_count, ready_bytes, total_bytes)
    SELECT tenant_id, sum(c), sum(b), sum(t) FROM ({rows}) x
    GROUP BY tenant_id HAVING sum(c) <> 0 OR sum(b) <> 0 OR sum(t) <> 0;
"""
_ROWS = """
    SELECT tenant_id, {sign}count(*) FILTER (WHERE status = 'ready') AS c,
        {sign}coalesce(sum(size) FILTER (WHERE status = 'ready'), 0)::bigint AS b, {sign}sum(size)::bigint AS t
    FROM {table} GROUP BY tenant_id
"""
_NEW, _OLD = _ROWS.format(sign="", table="new_rows"), _ROWS.format(sign="-", table="old_rows")

FUNCTION = f"""
CREATE FUNCTION blobs_count_by_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_DELTA.format(rows=_NEW)}
    ELSIF TG_OP = 'DELETE' THEN
        {_DELTA.format(rows=_OLD)}
    ELSE
        {_DELTA.format(rows=_NEW + " UNION ALL " + _OLD)}
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER blobs_counted_insert AFTER INSERT ON blobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION blobs_count_by_tenant();
CREATE TRIGGER blobs_counted_update AFTER UPDATE ON blobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION blobs_count_by_tenant();
CREATE TRIGGER blobs_counted_delete AFTER DELETE ON blobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION blobs_count_by_tenant();

-- Move every pending delta into its tenant's base in one statement (one snapshot); deltas of a tenant that
-- no longer exists are dropped. Returns how many delta rows it folded.
CREATE FUNCTION fold_blob_stats() RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO blob_tenant_stats (tenant_id, ready_count, ready_bytes, total_bytes)
    SELECT DISTINCT d.tenant_id, 0, 0, 0 FROM blob_stat_deltas d JOIN tenants_tenant t ON t.id = d.tenant_id
    ON CONFLICT (tenant_id) DO NOTHING;
    -- A delta that arrived after the statement above, for a tenant with no base yet, waits for the next fold.
    WITH moved AS (
        DELETE FROM blob_stat_deltas d
        WHERE EXISTS (SELECT 1 FROM blob_tenant_stats s WHERE s.tenant_id = d.tenant_id)
            OR NOT EXISTS (SELECT 1 FROM tenants_tenant t WHERE t.id = d.tenant_id)
        RETURNING tenant_id, ready_count, ready_bytes, total_bytes
    ),
    summed AS (
        SELECT tenant_id, sum(ready_count)::bigint AS c, sum(ready_bytes)::bigint AS b,
            sum(total_bytes)::bigint AS t, count(*) AS deltas
        FROM moved GROUP BY tenant_id
    ),
    applied AS (
        UPDATE blob_tenant_stats s SET ready_count = s.ready_count + d.c, ready_bytes = s.ready_bytes + d.b,
            total_bytes = s.total_bytes + d.t
        FROM summed d WHERE s.tenant_id = d.tenant_id
    )
    SELECT coalesce(sum(deltas), 0)::bigint FROM summed;
$$;

INSERT INTO blob_tenant_stats (tenant_id, ready_count, ready_bytes, total_bytes)
SELECT tenant_id, count(*) FILTER (WHERE status = 'ready'),
    coalesce(sum(size) FILTER (WHERE status = 'ready'), 0), sum(size)
FROM blobs GROUP BY tenant_id;
"""  # noqa: S608 (fixed SQL assembled from this module's constants)

REVERSE = """
DROP TRIGGER blobs_counted_insert ON blobs;
DROP TRIGGER blobs_counted_update ON blobs;
DROP TRIGGER blobs_counted_delete ON blobs;
DROP FUNCTION blobs_count_by_tenant();
DROP FUNCTION fold_blob_stats();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("blobs", "0003_scrub_passes"),
        ("encryption", "0005_data_key_counts"),
        ("tenants", "0002_tenant_state"),
    ]

    operations = [
        TrigramExtension(),
        migrations.CreateModel(
            name="TenantBlobStats",
            fields=[
                (
                    "tenant",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="tenants.tenant",
                    ),
                ),
                ("ready_count", models.BigIntegerField(default=0)),
                ("ready_bytes", models.BigIntegerField(default=0)),
                ("total_bytes", models.BigIntegerField(default=0)),
            ],
            options={"verbose_name_plural": "tenant blob stats", "db_table": "blob_tenant_stats"},
        ),
        migrations.CreateModel(
            name="BlobStatDelta",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("tenant_id", models.BigIntegerField(db_index=True)),
                ("ready_count", models.BigIntegerField()),
                ("ready_bytes", models.BigIntegerField()),
                ("total_bytes", models.BigIntegerField()),
            ],
            options={"db_table": "blob_stat_deltas"},
        ),
        migrations.AddConstraint(
            model_name="tenantblobstats",
            constraint=models.CheckConstraint(
                condition=models.Q(("ready_bytes__gte", 0), ("ready_count__gte", 0), ("total_bytes__gte", 0)),
                name="blob_tenant_stats_not_negative",
            ),
        ),
        migrations.RemoveIndex(model_name="blob", name="blobs_tenant_name"),
        migrations.AddIndex(
            model_name="blob",
            index=models.Index(fields=["tenant", "status", "name", "id"], name="blobs_tenant_name_id"),
        ),
        migrations.AddIndex(
            model_name="blob",
            index=models.Index(fields=["tenant", "status", "size", "id"], name="blobs_tenant_size_id"),
        ),
        # Written out: Django's own SQL for an operator class on an expression wraps both in one pair of
        # parentheses, which PostgreSQL refuses.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'CREATE INDEX "blobs_name_trgm" ON "blobs" USING gin ((UPPER("name")) gin_trgm_ops)',
                    'DROP INDEX "blobs_name_trgm"',
                )
            ],
            state_operations=[
                migrations.AddIndex(
                    model_name="blob",
                    index=django.contrib.postgres.indexes.GinIndex(
                        django.contrib.postgres.indexes.OpClass(
                            django.db.models.functions.text.Upper("name"), name="gin_trgm_ops"
                        ),
                        name="blobs_name_trgm",
                    ),
                )
            ],
        ),
        migrations.RunSQL(FUNCTION, REVERSE),
    ]
