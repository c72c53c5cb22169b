"""Per key version data-key counts that pages read instead of counting a million rows (issue 17).

``tenant_key_versions.data_key_count`` is a base; ``data_key_count_deltas`` holds what statements changed
since it was last folded. Three statement-level triggers on ``data_keys`` read each statement's transition
tables and append one delta row per key version, in the same transaction as the rows, whoever writes them
(an upload, a delete, the re-wrap walk, an erasure, a bulk COPY). Appending locks no shared row, so
counting adds no lock a writer could wait for or deadlock on. A version's count is its base plus its pending
deltas, read in one statement (``encryption.counters``); ``fold_data_key_counts()`` moves deltas into the
bases, and a beat task calls it.
"""

from django.db import migrations, models

FUNCTIONS = """
CREATE FUNCTION data_keys_count_by_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_key_count_deltas (tkv_id, n)
        SELECT tkv_id, count(*) FROM new_rows GROUP BY tkv_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_key_count_deltas (tkv_id, n)
        SELECT tkv_id, -count(*) FROM old_rows GROUP BY tkv_id;
    ELSE
        INSERT INTO data_key_count_deltas (tkv_id, n)
        SELECT tkv_id, sum(n) FROM (
            SELECT tkv_id, count(*) AS n FROM new_rows GROUP BY tkv_id
            UNION ALL
            SELECT tkv_id, -count(*) AS n FROM old_rows GROUP BY tkv_id
        ) moved GROUP BY tkv_id HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER data_keys_counted_insert AFTER INSERT ON data_keys
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION data_keys_count_by_version();
CREATE TRIGGER data_keys_counted_update AFTER UPDATE ON data_keys
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION data_keys_count_by_version();
CREATE TRIGGER data_keys_counted_delete AFTER DELETE ON data_keys
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION data_keys_count_by_version();

-- Move every pending delta into its version's base, in one statement (one snapshot): a delta is either
-- folded and gone or still pending, never both. Returns how many delta rows it folded.
CREATE FUNCTION fold_data_key_counts() RETURNS bigint LANGUAGE sql AS $$
    WITH moved AS (DELETE FROM data_key_count_deltas RETURNING tkv_id, n),
    summed AS (SELECT tkv_id, sum(n)::bigint AS n, count(*) AS deltas FROM moved GROUP BY tkv_id),
    applied AS (
        UPDATE tenant_key_versions t SET data_key_count = t.data_key_count + s.n
        FROM summed s WHERE t.id = s.tkv_id AND s.n <> 0
    )
    SELECT coalesce(sum(deltas), 0)::bigint FROM summed;
$$;

UPDATE tenant_key_versions t SET data_key_count = d.n
FROM (SELECT tkv_id, count(*) AS n FROM data_keys GROUP BY tkv_id) d WHERE t.id = d.tkv_id;
"""

REVERSE = """
DROP TRIGGER data_keys_counted_insert ON data_keys;
DROP TRIGGER data_keys_counted_update ON data_keys;
DROP TRIGGER data_keys_counted_delete ON data_keys;
DROP FUNCTION data_keys_count_by_version();
DROP FUNCTION fold_data_key_counts();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("encryption", "0004_one_row_per_kms_key"),
        ("tenants", "0002_tenant_state"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenantkeyversion",
            name="data_key_count",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddConstraint(
            model_name="tenantkeyversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("data_key_count__gte", 0)), name="tkv_data_key_count_valid"
            ),
        ),
        migrations.CreateModel(
            name="DataKeyCountDelta",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("tkv_id", models.BigIntegerField(db_index=True)),
                ("n", models.BigIntegerField()),
            ],
            options={"db_table": "data_key_count_deltas"},
        ),
        migrations.RunSQL(FUNCTIONS, REVERSE),
    ]
