"""Money stored exactly on every database (core.fields.ExactDecimalField); every stored digit is kept."""
from django.db import migrations

from core.fields import convert_to_exact


class Migration(migrations.Migration):
    dependencies = [
        ('attribution', '0001_index_and_weights'),
    ]

    operations = [
        *convert_to_exact('attribution', 'modelcontributorweight', 'weight', max_digits=20, decimal_places=18),
    ]
