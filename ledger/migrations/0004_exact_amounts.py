"""Money stored exactly on every database (core.fields.ExactDecimalField); every stored digit is kept."""
from django.db import migrations

from core.fields import convert_to_exact


class Migration(migrations.Migration):
    dependencies = [
        ('ledger', '0003_governance_sweep'),
    ]

    operations = [
        *convert_to_exact('ledger', 'rewardaccrual', 'amount', max_digits=38, decimal_places=18),
        *convert_to_exact('ledger', 'rewardclaim', 'amount_wei', max_digits=78, decimal_places=0),
        *convert_to_exact('ledger', 'rewardepoch', 'total_wei', max_digits=78, decimal_places=0),
    ]
