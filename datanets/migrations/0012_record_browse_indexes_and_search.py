"""Browsing a Datanet at a million records (issue 16, item 4): per-contribution label counts, the
contributor browse index, a partial index of conflicts, and full-text search per database:
PostgreSQL a GIN index on to_tsvector('simple', text); SQLite an FTS5 table over the records, kept by
triggers. On SQLite a later migration that rebuilds datanets_record (Django's table remake) drops the
triggers with the table: such a migration must execute SQLITE_FTS below again (datanets/tests/test_browse.py
checks that search finds records ingested after migrating, on each database)."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


PG_FTS_INDEX = "datanets_record_text_fts"
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS datanets_record_fts USING fts5(text, content='datanets_record', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS datanets_record_fts_ai AFTER INSERT ON datanets_record BEGIN "
    "INSERT INTO datanets_record_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS datanets_record_fts_ad AFTER DELETE ON datanets_record BEGIN "
    "INSERT INTO datanets_record_fts(datanets_record_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS datanets_record_fts_au AFTER UPDATE OF text ON datanets_record BEGIN "
    "INSERT INTO datanets_record_fts(datanets_record_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO datanets_record_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO datanets_record_fts(datanets_record_fts) VALUES ('rebuild')",
]


def sqlite_fts_create(schema_editor) -> None:
    for sql in SQLITE_FTS:
        schema_editor.execute(sql)


def search_index_create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {PG_FTS_INDEX} ON datanets_record "
                              f"USING gin (to_tsvector('simple'::regconfig, text))")
    elif vendor == "sqlite":
        sqlite_fts_create(schema_editor)


def search_index_drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {PG_FTS_INDEX}")
    elif vendor == "sqlite":
        for name in ("ai", "ad", "au"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS datanets_record_fts_{name}")
        schema_editor.execute("DROP TABLE IF EXISTS datanets_record_fts")


def label_counts_fill(apps, schema_editor):
    Contribution = apps.get_model("datanets", "Contribution")
    Record = apps.get_model("datanets", "Record")
    for cid in Contribution.objects.values_list("id", flat=True).iterator():
        counts = dict(Record.objects.filter(contribution_id=cid).values_list("label").annotate(n=models.Count("id"))
                      .order_by())
        Contribution.objects.filter(id=cid).update(label_counts=counts)


class Migration(migrations.Migration):

    dependencies = [
        ('datanets', '0011_version_export_state'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='contribution',
            name='label_counts',
            field=models.JSONField(blank=True, default=dict, help_text='Stored records per label, counted at ingest'),
        ),
        migrations.AlterField(
            model_name='record',
            name='contributor',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='records', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddIndex(
            model_name='record',
            index=models.Index(fields=['contributor', 'datanet', 'id'], name='datanets_record_contrib_browse'),
        ),
        migrations.AddIndex(
            model_name='record',
            index=models.Index(condition=models.Q(('is_conflict', True)), fields=['datanet'], name='datanets_record_conflicts'),
        ),
        migrations.RunPython(label_counts_fill, migrations.RunPython.noop),
        migrations.RunPython(search_index_create, search_index_drop),
    ]
