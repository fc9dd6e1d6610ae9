import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import accounts.models


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ("contributor", "model developer", "curator"):
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    initial = True
    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [
        migrations.CreateModel(
            name="Profile",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("wallet_address", models.CharField(blank=True, max_length=42, validators=[accounts.models.wallet_validator])),
                ("bio", models.CharField(blank=True, max_length=280)),
                ("user", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="profile", to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.RunPython(create_groups, migrations.RunPython.noop),
    ]
