"""Money stored exactly on every database (core.fields.ExactDecimalField); every stored digit is kept."""
from decimal import Decimal  # noqa: F401 - defaults below

from django.db import migrations

from core.fields import convert_to_exact


class Migration(migrations.Migration):
    dependencies = [
        ('serving', '0001_initial'),
    ]

    operations = [
        *convert_to_exact('serving', 'inference', 'fee', max_digits=36, decimal_places=18, default=0,
                          help_text='OPEN charged for this call'),
    ]
