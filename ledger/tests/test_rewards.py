"""Rewards on anvil: leaf encoding and Merkle proofs against the contract, epoch close -> publish ->
claim once -> sweep after the deadline, reentrancy, and the fee split changed only through the timelock."""
from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from accounts.tests.factories import UserFactory
from core.errors import ApplicationError
from core.merkle import keccak256, merkle_proof, merkle_root
from ledger import client, outbox
from ledger.models import GovernanceProposal, LedgerTransaction, RewardClaim, RewardEpoch
from ledger.services import (
    ERR_ALREADY,
    ERR_EXTERNAL_WALLET,
    ERR_NOT_PUBLISHED,
    ERR_NOT_READY,
    address_for_user,
    fee_split_get,
    fee_split_propose,
    governance_execute,
    reward_claim_request,
    reward_leaf,
    rewards_accrue,
    rewards_epochs_sweep,
)
from ledger.tasks import rewards_epoch_close_task
from ledger.tests.conftest import TREASURY

pytestmark = pytest.mark.chain
E18 = 10**18
_epoch_ids = itertools.count(10_000)


def run():
    return outbox.outbox_process()


def revert_name(call, sender) -> str:
    try:
        call.call({"from": sender})
    except Exception as exc:
        reverted = client.revert_from_exception(exc)
        assert reverted is not None, exc
        return reverted.error
    raise AssertionError("the call did not revert")


addresses = st.binary(min_size=20, max_size=20).map(lambda b: client.get_web3("http://x").to_checksum_address(b))
amounts = st.integers(min_value=1, max_value=2**128 - 1)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(addresses, amounts, min_size=1, max_size=17))
def test_merkle_tree_and_leaf_encoding_match_the_contract(chain, allocation):
    dist = chain.c["RewardDistributor"]
    leaves = {a: reward_leaf(a, v) for a, v in allocation.items()}
    root = merkle_root(list(leaves.values()), keccak256)
    epoch_id = next(_epoch_ids)
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    chain.signer.sync_nonce()
    chain.signer.transact(dist.functions.publishEpoch(epoch_id, root, 0, deadline))
    for account, amount in allocation.items():
        assert dist.functions.leaf(account, amount).call() == leaves[account]
        proof = merkle_proof(list(leaves.values()), leaves[account], keccak256)
        assert dist.functions.verify(epoch_id, account, amount, proof).call()
        assert not dist.functions.verify(epoch_id, account, amount - 1 if amount > 1 else 2, proof).call()


def _accrue_and_close(users_amounts: dict, ref: str = "inference:1"):
    rewards_accrue(allocations={u.pk: Decimal(a) for u, a in users_amounts.items()}, source="inference", reference=ref,
                   model_id=5)
    epoch_id = rewards_epoch_close_task()  # the beat task, run in-process
    return RewardEpoch.objects.get(pk=epoch_id)


def test_epoch_publish_claim_once_and_sweep(chain):
    dist, token = chain.c["RewardDistributor"], chain.c["OpenToken"]
    custodial, unclaimed, external = UserFactory(), UserFactory(), UserFactory()
    wallet = chain.actor(0)
    external.profile.wallet_address = wallet.address
    external.profile.save()
    epoch = _accrue_and_close({custodial: "1.5", unclaimed: "2", external: "0.000000000000000003"})
    rewards_accrue(allocations={custodial.pk: Decimal("1")}, source="inference",
                   reference="inference:2")
    second = rewards_epoch_close_task()  # the later accrual goes to the next epoch, not this one
    assert second == epoch.pk + 1
    assert epoch.total_wei == Decimal(int(3.5 * E18) + 3) and epoch.claims.count() == 3
    claim = RewardClaim.objects.get(epoch=epoch, user=custodial)
    with pytest.raises(ApplicationError, match=ERR_NOT_PUBLISHED.split(";")[0]):
        reward_claim_request(claim=claim, user=custodial)

    run()
    epoch.refresh_from_db()
    assert epoch.status == RewardEpoch.Status.PUBLISHED
    on_chain = dist.functions.epochs(epoch.pk).call()
    assert on_chain[0].hex() == epoch.root[2:] and on_chain[1] == int(epoch.total_wei)
    assert on_chain[3] == int(epoch.deadline.timestamp())

    # a custodial wallet: the server claims through the outbox, once
    with pytest.raises(ApplicationError) as other:
        reward_claim_request(claim=claim, user=unclaimed)
    assert other.value.status_code == 403
    reward_claim_request(claim=claim, user=custodial)
    with pytest.raises(ApplicationError, match=ERR_ALREADY):
        reward_claim_request(claim=claim, user=custodial)
    run()
    claim.refresh_from_db()
    assert claim.status == RewardClaim.Status.CLAIMED
    assert token.functions.balanceOf(address_for_user(custodial)).call() == int(1.5 * E18)

    # an external wallet gets its proof and claims itself; a second claim and a wrong proof revert
    ext = RewardClaim.objects.get(epoch=epoch, user=external)
    with pytest.raises(ApplicationError, match="own wallet") as own:
        reward_claim_request(claim=ext, user=external)
    assert own.value.extra["proof"] == ext.proof and ERR_EXTERNAL_WALLET.startswith("This reward")
    assert chain.transact_as(wallet, dist.functions.claim(epoch.pk, wallet.address, 3, ext.proof))["status"] == 1
    assert token.functions.balanceOf(wallet.address).call() == 3
    assert revert_name(dist.functions.claim(epoch.pk, wallet.address, 3, ext.proof), wallet.address) == "AlreadyClaimed"
    other_claim = RewardClaim.objects.get(epoch=epoch, user=unclaimed)
    assert revert_name(dist.functions.claim(epoch.pk, other_claim.account, int(other_claim.amount_wei), ext.proof),
                       wallet.address) == "InvalidProof"
    assert revert_name(dist.functions.claim(epoch.pk, other_claim.account, int(other_claim.amount_wei) + 1,
                                            other_claim.proof), wallet.address) == "InvalidProof"
    # nobody but the operator publishes
    assert revert_name(dist.functions.publishEpoch(999, b"\1" * 32, 0, 2**40), wallet.address) == \
        "AccessControlUnauthorizedAccount"

    # the sweep: nothing before the deadline; after it, the unclaimed 2 OPEN return to the treasury
    assert rewards_epochs_sweep() == []
    assert revert_name(dist.functions.sweep(epoch.pk), wallet.address) == "ClaimWindowOpen"
    treasury_before = token.functions.balanceOf(TREASURY).call()
    chain.mine(seconds=int((epoch.deadline - epoch.created_at).total_seconds()) + 3600)
    later = epoch.deadline + timedelta(hours=1)
    assert sorted(e.pk for e in rewards_epochs_sweep(now=later)) == [epoch.pk, second]
    run()
    epoch.refresh_from_db()
    other_claim.refresh_from_db()
    assert epoch.status == RewardEpoch.Status.SWEPT and other_claim.status == RewardClaim.Status.EXPIRED
    # unclaimed: 2 OPEN in this epoch, 1 OPEN in the second
    assert token.functions.balanceOf(TREASURY).call() - treasury_before == 3 * E18
    assert dist.functions.epochs(epoch.pk).call()[4] is True
    assert revert_name(dist.functions.claim(epoch.pk, other_claim.account, int(other_claim.amount_wei),
                                            other_claim.proof), wallet.address) == "ClaimWindowClosed"
    assert rewards_epochs_sweep(now=later) == []  # never twice


def test_reentrant_token_cannot_claim_twice(chain):
    """A token that calls back into claim() during the payout transfer is stopped by the reentrancy guard."""
    s = chain.signer
    s.sync_nonce()
    evil_address, _ = s.deploy("ReentrantToken")
    evil = client.contract(chain.w3, "ReentrantToken", evil_address)
    dist_address, _ = s.deploy("RewardDistributor", evil_address, TREASURY, s.address, s.address, s.address,
                               (7000, 2000, 1000))
    dist = client.contract(chain.w3, "RewardDistributor", dist_address)
    a, b = chain.actor(1).address, chain.actor(2).address
    leaves = [reward_leaf(a, 5), reward_leaf(b, 7)]
    root = merkle_root(leaves, keccak256)
    proof_a, proof_b = (merkle_proof(leaves, x, keccak256) for x in leaves)
    s.transact(evil.functions.approve(dist_address, 12))
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    s.transact(dist.functions.publishEpoch(1, root, 12, deadline))
    s.transact(evil.functions.arm(dist_address, dist.encode_abi("claim", args=[1, b, 7, proof_b])))
    s.transact(dist.functions.claim(1, a, 5, proof_a))
    assert evil.functions.reentered().call() is True
    assert evil.functions.reentrySucceeded().call() is False
    assert client.decode_revert(evil.functions.reentryError().call()) == "ReentrancyGuardReentrantCall()"
    assert dist.functions.claimed(1, a).call() and not dist.functions.claimed(1, b).call()
    assert evil.functions.balanceOf(dist_address).call() == 7


def test_fee_split_changes_only_through_the_timelock(chain):
    dist, timelock = chain.c["RewardDistributor"], chain.c["Governance"]
    assert fee_split_get(refresh=True) == {"contributors": Decimal("0.7"), "developer": Decimal("0.2"),
                                           "protocol": Decimal("0.1")}
    # the operator/admin cannot set it directly; nor can anyone else
    assert revert_name(dist.functions.setFeeSplit((5000, 4000, 1000)), chain.signer.address) == \
        "AccessControlUnauthorizedAccount"
    with pytest.raises(ApplicationError, match="sum to 10000"):
        fee_split_propose(contributors_bps=5000, developer_bps=4000, protocol_bps=2000)

    proposal = fee_split_propose(contributors_bps=6000, developer_bps=3000, protocol_bps=1000)
    run()
    proposal.refresh_from_db()
    assert proposal.status == GovernanceProposal.Status.SCHEDULED and proposal.ready_at is not None
    with pytest.raises(ApplicationError, match=ERR_NOT_READY):
        governance_execute(proposal=proposal)
    data = dist.encode_abi("setFeeSplit", args=[(6000, 3000, 1000)])
    salt = bytes.fromhex(proposal.salt[2:])
    assert revert_name(timelock.functions.execute(dist.address, 0, data, b"\0" * 32, salt), chain.signer.address) == \
        "TimelockUnexpectedOperationState"
    assert list(dist.functions.feeSplit().call()) == [7000, 2000, 1000]

    chain.mine(seconds=61)  # the test deployment's delay is 60 s
    # only the executor set may run it, even once it is ready
    assert revert_name(timelock.functions.execute(dist.address, 0, data, b"\0" * 32, salt),
                       chain.actor(3).address) == "AccessControlUnauthorizedAccount"
    governance_execute(proposal=proposal)
    run()
    proposal.refresh_from_db()
    assert proposal.status == GovernanceProposal.Status.EXECUTED
    assert list(dist.functions.feeSplit().call()) == [6000, 3000, 1000]
    assert fee_split_get() == {"contributors": Decimal("0.6"), "developer": Decimal("0.3"), "protocol": Decimal("0.1")}
    assert set(LedgerTransaction.objects.values_list("status", flat=True)) == {LedgerTransaction.Status.CONFIRMED}


def test_fee_split_falls_back_to_the_last_value_read_when_the_chain_is_down(db, settings):
    from ledger.models import ChainParameter
    from ledger.services import fee_split_cache_clear

    ChainParameter.objects.create(chain_id=31337, name="fee_split", value={"bps": [6000, 3000, 1000]})
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"
    assert fee_split_get()["contributors"] == Decimal("0.6")
    ChainParameter.objects.all().delete()
    assert fee_split_get()["contributors"] == Decimal("0.6")  # remembered a while: callers do not each wait
    fee_split_cache_clear()
    assert fee_split_get() == {"contributors": Decimal("0.7"), "developer": Decimal("0.2"), "protocol": Decimal("0.1")}
