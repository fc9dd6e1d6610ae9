from django.db import migrations, models


def existing_versions_done(apps, schema_editor):
    # Versions made before this were exported inside their request: they are done.
    apps.get_model("datanets", "DatanetVersion").objects.update(export_state="done", export_progress=1.0)


class Migration(migrations.Migration):

    dependencies = [
        ('datanets', '0010_datanet_task_chat'),
    ]

    operations = [
        migrations.AddField(
            model_name='datanetversion',
            name='export_error',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='datanetversion',
            name='export_progress',
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name='datanetversion',
            name='export_state',
            field=models.CharField(choices=[('queued', 'Export queued'), ('running', 'Exporting'), ('done', 'Exported'), ('failed', 'Export failed')], default='queued', max_length=10),
        ),
        migrations.RunPython(existing_versions_done, migrations.RunPython.noop),
    ]
