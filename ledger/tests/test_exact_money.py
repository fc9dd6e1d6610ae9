"""The money path with amounts of 17 to 27 significant digits: accrue -> epoch -> publish -> claim on anvil.

`make test` runs this on PostgreSQL and again on SQLite, where a claim of 79047737257405776 wei once came back from
the database as 79047737257405800 and failed on-chain with InvalidProof()."""
from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.tests.factories import UserFactory
from ledger import outbox
from ledger.models import RewardAccrual, RewardClaim, RewardEpoch
from ledger.selectors import balances_for, earnings_by_model
from ledger.services import address_for_user, reward_claim_request, rewards_accrue
from ledger.tasks import rewards_epoch_close_task

pytestmark = pytest.mark.chain
E18 = 10**18
AMOUNTS = {  # OPEN: the failed claim of the report, and one with 27 significant digits
    "erin": Decimal("0.079047737257405776"),
    "frank": Decimal("123456789.123456789012345678"),
}


def test_rewards_with_every_digit_significant_are_claimed_exactly(chain):
    token = chain.c["OpenToken"]
    users = {name: UserFactory(username=name) for name in AMOUNTS}
    # two accruals each, so the epoch adds them: 0.079047737257405776 + 0.000000000000000001 etc.
    for ref, extra in (("inference:1", Decimal(0)), ("inference:2", Decimal("0.000000000000000001"))):
        rewards_accrue(allocations={users[n].pk: (a if not extra else extra) for n, a in AMOUNTS.items()},
                       source="inference", reference=ref, model_id=7)
    expected = {n: int(a * E18) + 1 for n, a in AMOUNTS.items()}
    for name, user in users.items():
        stored = sorted(RewardAccrual.objects.filter(user=user).values_list("amount", flat=True))
        assert stored == sorted([AMOUNTS[name], Decimal("0.000000000000000001")])
        assert balances_for(user=user).pending * E18 == expected[name]
        [row] = earnings_by_model(user=user)
        assert row["total"] * E18 == expected[name] and row["events"] == 2

    epoch = RewardEpoch.objects.get(pk=rewards_epoch_close_task())
    assert int(epoch.total_wei) == sum(expected.values())
    outbox.outbox_process()  # publish and fund
    epoch.refresh_from_db()
    assert epoch.status == RewardEpoch.Status.PUBLISHED
    for name, user in users.items():
        claim = RewardClaim.objects.get(epoch=epoch, user=user)
        assert int(claim.amount_wei) == expected[name]  # read back from the database, every digit
        reward_claim_request(claim=claim, user=user)
    outbox.outbox_process()
    for name, user in users.items():
        claim = RewardClaim.objects.get(epoch=epoch, user=user)
        assert claim.status == RewardClaim.Status.CLAIMED, claim
        assert token.functions.balanceOf(address_for_user(user)).call() == expected[name]
        assert balances_for(user=user).claimed * E18 == expected[name]
