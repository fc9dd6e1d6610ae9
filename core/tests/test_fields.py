"""Money is exact on every database: these run on PostgreSQL in `make test` and again on SQLite (the embedded
default), where a `DecimalField` used to come back through a 15-digit float."""
from __future__ import annotations

import decimal
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from accounts.tests.factories import UserFactory
from core.fields import exact_sum, exact_sums_by
from ledger.models import RewardAccrual, RewardClaim, RewardEpoch

# The claim that failed on-chain on SQLite: 17 significant digits.
ERIN_WEI = 79047737257405776


def _epoch(total_wei) -> RewardEpoch:
    return RewardEpoch.objects.create(root="0x" + "ab" * 32, total_wei=total_wei,
                                      deadline=timezone.now() + timedelta(days=1))


@pytest.mark.django_db
def test_wei_amounts_round_trip_every_digit():
    user = UserFactory()
    biggest = 10**78 - 1  # 78 digits: any uint256 amount fits
    epoch = _epoch(biggest)
    claims = [RewardClaim.objects.create(epoch=epoch, user=user, account=f"0x{i:040x}", amount_wei=amount)
              for i, amount in enumerate([ERIN_WEI, 2**256 - 1, 1, 0], start=1)]
    epoch.refresh_from_db()
    assert epoch.total_wei == biggest
    for claim, amount in zip(claims, [ERIN_WEI, 2**256 - 1, 1, 0], strict=True):
        claim.refresh_from_db()
        assert int(claim.amount_wei) == amount


token_amounts = st.decimals(min_value=0, max_value=Decimal("99999999999999999999.999999999999999999"),
                            places=18, allow_nan=False, allow_infinity=False)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(token_amounts, min_size=1, max_size=12))
@pytest.mark.django_db
def test_token_amounts_round_trip_and_sum_exactly(amounts):
    user = UserFactory()
    RewardAccrual.objects.filter(user=user).delete()
    for i, amount in enumerate(amounts):
        RewardAccrual.objects.create(user=user, amount=amount, source="test", reference=str(i), model_id=i % 3)
    stored = list(RewardAccrual.objects.filter(user=user).order_by("id").values_list("amount", flat=True))
    assert stored == amounts
    with decimal.localcontext(decimal.Context(prec=100)):
        assert exact_sum(RewardAccrual.objects.filter(user=user), "amount") == sum(amounts, Decimal(0))
        by_model = exact_sums_by(RewardAccrual.objects.filter(user=user), "amount", by="model_id")
        assert by_model == {m: sum(amounts[m::3], Decimal(0)) for m in range(min(3, len(amounts)))}


@pytest.mark.django_db
def test_filters_and_ordering_compare_numbers_not_text():
    user = UserFactory()
    values = [Decimal("0.000000000000000001"), Decimal("9.5"), Decimal("10"), Decimal("0"), Decimal("123456.7")]
    for i, v in enumerate(values):
        RewardAccrual.objects.create(user=user, amount=v, source="order", reference=str(i))
    qs = RewardAccrual.objects.filter(user=user)
    assert list(qs.order_by("amount").values_list("amount", flat=True)) == sorted(values)
    assert sorted(qs.filter(amount__gt=Decimal("9.5")).values_list("amount", flat=True)) == [Decimal("10"),
                                                                                             Decimal("123456.7")]
    assert qs.filter(amount__gt=0).count() == 4
    assert exact_sum(qs.none(), "amount") == 0


@pytest.mark.django_db
def test_a_negative_amount_is_refused_where_it_cannot_be_ordered():
    user = UserFactory()
    if connection.vendor == "sqlite":
        with pytest.raises(ValueError, match="cannot be negative"):
            RewardAccrual.objects.create(user=user, amount=Decimal("-1"), source="neg", reference="1")
    else:  # numeric on PostgreSQL stores the sign exactly
        row = RewardAccrual.objects.create(user=user, amount=Decimal("-1.5"), source="neg", reference="1")
        row.refresh_from_db()
        assert row.amount == Decimal("-1.5")


@pytest.mark.django_db(transaction=True)
def test_migration_keeps_every_digit_of_existing_rows():
    """Rows written by the old DecimalField are converted exactly (on SQLite a big wei value sat as an INTEGER,
    which the old field read back rounded; the migration reads it through the driver instead)."""
    executor = MigrationExecutor(connection)
    before = [("ledger", "0003_governance_sweep")]
    latest = executor.loader.graph.leaf_nodes("ledger")
    executor.migrate(before)
    try:
        old_apps = executor.loader.project_state(before).apps
        user = UserFactory()
        epoch_model = old_apps.get_model("ledger", "RewardEpoch")
        claim_model = old_apps.get_model("ledger", "RewardClaim")
        epoch = epoch_model.objects.create(root="0x" + "cd" * 32, total_wei=0, deadline=timezone.now())
        claim = claim_model.objects.create(epoch_id=epoch.pk, user_id=user.pk, account="0x" + "11" * 20, amount_wei=0)
        with connection.cursor() as cursor:
            # Raw SQL: the value as the old column held it, without the old field's rounding on the way in.
            cursor.execute("UPDATE ledger_rewardclaim SET amount_wei = %s WHERE id = %s", [ERIN_WEI, claim.pk])
            cursor.execute("SELECT amount_wei FROM ledger_rewardclaim WHERE id = %s", [claim.pk])
            assert int(cursor.fetchone()[0]) == ERIN_WEI
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert int(RewardClaim.objects.get(pk=claim.pk).amount_wei) == ERIN_WEI
