"""Browsing by review status at a million records (issue 16, item 4; benchmarks/browse.py).

1. `Record.contribution` is indexed by (contribution_id, id) instead of contribution_id alone: the same
   prefix for the cascade and a contribution's records, and a status filter (the ids of a few
   contributions, the pending ones last in id order) reads its page in id order from it instead of
   walking the primary key through every record before them (a curator's pending page: 657 ms -> 0.1 ms
   of execution at 1M records). One index replaced by one: no more index writes per ingested row.
   Done with AddIndex and a plain DROP INDEX of the old one, not AlterField: on SQLite an AlterField
   remakes datanets_record, which drops the FTS5 triggers (migration 0012) and copies every record.
   (SQLite: an index holds the rowid anyway, so the new index is the old one's size.)
2. PostgreSQL: the full-text index's expression gets statistics target 500 (ANALYZE keeps 5,000 of the
   commonest words instead of 1,000). The planner estimates a word it has no statistics for at half the
   rarest kept word's frequency: 1,400 records of 1M at the default, so it walked the id order computing
   to_tsvector on every record to find no match (13 s, a parallel plan, for a search with no match at 1M
   records); at 500 the estimate is ~180 and it takes the GIN index (0.1 ms). ANALYZE of datanets_record
   samples 150,000 rows instead of 30,000 (3.2 s of CPU instead of 0.6 s at 1M records).
"""
from django.db import migrations, models

PG_FTS_INDEX = "datanets_record_text_fts"
SEARCH_STATISTICS = 500


def _single_column_contribution_indexes(schema_editor) -> list[str]:
    conn = schema_editor.connection
    with conn.cursor() as cur:
        constraints = conn.introspection.get_constraints(cur, "datanets_record")
    return [name for name, c in constraints.items()
            if c["index"] and not c["primary_key"] and not c["unique"] and c["columns"] == ["contribution_id"]]


def contribution_index_drop(apps, schema_editor):
    for name in _single_column_contribution_indexes(schema_editor):
        schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")
    conn = schema_editor.connection
    if conn.vendor == "sqlite":
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")
            analyzed = cur.fetchone() is not None
        if analyzed:  # the database keeps planner statistics: give the new index its own, like the others
            schema_editor.execute("ANALYZE datanets_record")


def contribution_index_restore(apps, schema_editor):
    if not _single_column_contribution_indexes(schema_editor):
        schema_editor.execute("CREATE INDEX datanets_record_contribution_id ON datanets_record (contribution_id)")


def search_statistics(target: int):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER INDEX IF EXISTS {PG_FTS_INDEX} ALTER COLUMN 1 SET STATISTICS {target}")
            schema_editor.execute("ANALYZE datanets_record")  # the new statistics now, not at the next autoanalyze
    return apply


class Migration(migrations.Migration):

    dependencies = [
        ('datanets', '0012_record_browse_indexes_and_search'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='record',
                    name='contribution',
                    field=models.ForeignKey(db_index=False, on_delete=models.deletion.CASCADE, related_name='records',
                                            to='datanets.contribution'),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddIndex(
            model_name='record',
            index=models.Index(fields=['contribution', 'id'], name='datanets_record_by_contrib'),
        ),
        migrations.RunPython(contribution_index_drop, contribution_index_restore),
        migrations.RunPython(search_statistics(SEARCH_STATISTICS), search_statistics(-1)),
    ]
