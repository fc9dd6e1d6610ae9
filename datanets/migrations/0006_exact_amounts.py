"""Money stored exactly on every database (core.fields.ExactDecimalField); every stored digit is kept."""
from decimal import Decimal  # noqa: F401 - defaults below

from django.db import migrations

from core.fields import convert_to_exact


class Migration(migrations.Migration):
    dependencies = [
        ('datanets', '0005_record_hash_columns_c_collation'),
    ]

    operations = [
        *convert_to_exact('datanets', 'contribution', 'stake', max_digits=38, decimal_places=18, default=Decimal('0')),
        *convert_to_exact('datanets', 'datanet', 'min_stake', max_digits=38, decimal_places=18, default=Decimal('10')),
    ]
