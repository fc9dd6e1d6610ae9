"""Rewards on anvil: leaf encoding and standard trees against the contract and @openzeppelin/merkle-tree, cumulative
epochs -> publish -> one claim for all -> sweep of a quiet generation, reentrancy, and the fee split's fallback (its votes: test_governance.py)."""
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
from ledger import client, outbox
from ledger.models import LedgerTransaction, RewardClaim, RewardEpoch
from ledger.services import (
    ERR_ALREADY,
    ERR_EXTERNAL_WALLET,
    ERR_NOT_PUBLISHED,
    address_for_user,
    epoch_totals,
    epoch_tree_download,
    fee_split_get,
    reward_claim_request,
    reward_leaf,
    reward_tree,
    rewards_accrue,
    rewards_epoch_close,
    rewards_epochs_sweep,
)
from ledger.tasks import rewards_epoch_close_task
from ledger.tests.conftest import TREASURY
from ledger.tests.factories import revert_name

pytestmark = pytest.mark.chain
E18 = 10**18
_epoch_ids = itertools.count(10_000)


def run():
    return outbox.outbox_process()


addresses = st.binary(min_size=20, max_size=20).map(lambda b: client.get_web3("http://x").to_checksum_address(b))
amounts = st.integers(min_value=1, max_value=2**96 - 1)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(addresses, amounts, min_size=1, max_size=17))
def test_merkle_tree_and_leaf_encoding_match_the_contract(chain, allocation):
    dist = chain.c["RewardDistributor"]
    tree = reward_tree(allocation)
    epoch_id = next(_epoch_ids)
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3600 + epoch_id  # never below the last one
    chain.signer.sync_nonce()
    chain.signer.transact(dist.functions.publishEpoch(epoch_id, 0, tree.root, 0, deadline))
    for i, (account, amount) in enumerate(tree.values):
        assert dist.functions.leaf(account, amount).call() == reward_leaf(account, amount)
        assert dist.functions.verify(epoch_id, account, amount, tree.proof(i)).call()
        assert not dist.functions.verify(epoch_id, account, amount - 1 if amount > 1 else 2, tree.proof(i)).call()


def _accrue_and_close(users_amounts: dict, ref: str = "inference:1"):
    rewards_accrue(allocations={u.pk: Decimal(a) for u, a in users_amounts.items()}, source="inference", reference=ref,
                   model_id=5)
    epoch_id = rewards_epoch_close_task()  # the beat task, run in-process
    return RewardEpoch.objects.get(pk=epoch_id)


def test_cumulative_epochs_one_claim_collects_everything_then_the_sweep(chain):
    dist, token = chain.c["RewardDistributor"], chain.c["OpenToken"]
    custodial, unclaimed, external = UserFactory(), UserFactory(), UserFactory()
    wallet = chain.actor(0)
    external.profile.wallet_address = wallet.address
    external.profile.save()
    first = _accrue_and_close({custodial: "1.5", unclaimed: "2", external: "0.000000000000000003"})
    claim = RewardClaim.objects.get(epoch=first, user=custodial)
    with pytest.raises(ApplicationError, match=ERR_NOT_PUBLISHED.split(";")[0]):
        reward_claim_request(claim=claim, user=custodial)
    run()
    # the second epoch carries every earlier total: custodial 1.5 + 1, the others unchanged
    second = _accrue_and_close({custodial: "1"}, ref="inference:2")
    assert second.total_wei == E18 and second.claims.count() == 1
    assert epoch_totals(second) == {address_for_user(custodial): int(2.5 * E18), address_for_user(unclaimed): 2 * E18,
                                    wallet.address: 3}
    assert second.funded_wei == int(4.5 * E18) + 3 and first.funded_wei == int(3.5 * E18) + 3
    run()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == RewardEpoch.Status.PUBLISHED
    funded, claimed_total, deadline, generation = dist.functions.state().call()
    assert (funded, claimed_total, generation) == (second.funded_wei, 0, 0)
    assert deadline == int(second.deadline.timestamp()) and dist.functions.currentEpoch().call() == second.pk
    assert dist.functions.root().call().hex() == second.root[2:]
    assert token.functions.balanceOf(dist.address).call() == second.funded_wei  # funded up to the cumulative sum
    assert revert_name(dist.functions.publishEpoch(first.pk, 0, b"\1" * 32, funded, deadline),
                       chain.signer.address) == "StaleEpoch"

    # custodial: one request (from the older row) queues both rows and one claim pays 2.5 OPEN
    with pytest.raises(ApplicationError) as other:
        reward_claim_request(claim=claim, user=unclaimed)
    assert other.value.status_code == 403
    reward_claim_request(claim=claim, user=custodial)
    with pytest.raises(ApplicationError, match=ERR_ALREADY):
        reward_claim_request(claim=RewardClaim.objects.get(epoch=second, user=custodial), user=custodial)
    assert LedgerTransaction.objects.filter(kind="reward_claim").count() == 1
    run()
    assert set(RewardClaim.objects.filter(user=custodial).values_list("status", flat=True)) == {RewardClaim.Status.CLAIMED}
    assert token.functions.balanceOf(address_for_user(custodial)).call() == int(2.5 * E18)
    assert dist.functions.claimed(0, address_for_user(custodial)).call() == int(2.5 * E18)

    # an own wallet claims with the newest tree's proof (the download); once per total; an old root's proof fails
    ext = RewardClaim.objects.get(epoch=first, user=external)
    with pytest.raises(ApplicationError, match="own wallet") as own:
        reward_claim_request(claim=ext, user=external)
    assert own.value.extra["proof"] == ext.proof and ERR_EXTERNAL_WALLET.startswith("This reward")
    assert revert_name(dist.functions.claim(wallet.address, 3, ext.proof), wallet.address) == "InvalidProof"
    dump = epoch_tree_download(epoch=second)
    i = next(k for k, v in enumerate(dump["values"]) if v["value"][0] == wallet.address)
    assert revert_name(dist.functions.claim(wallet.address, 4, dump["proofs"][i]), wallet.address) == "InvalidProof"
    assert chain.transact_as(wallet, dist.functions.claim(wallet.address, 3, dump["proofs"][i]))["status"] == 1
    assert token.functions.balanceOf(wallet.address).call() == 3
    assert revert_name(dist.functions.claim(wallet.address, 3, dump["proofs"][i]), wallet.address) == "AlreadyClaimed"
    assert revert_name(dist.functions.publishEpoch(999, 0, b"\1" * 32, funded, 2**39), wallet.address) == \
        "AccessControlUnauthorizedAccount"

    # the sweep: refused while the newest epoch's window is open; after it, the unclaimed 2 OPEN return
    assert rewards_epochs_sweep() == []
    assert revert_name(dist.functions.sweep(), wallet.address) == "ClaimWindowOpen"
    treasury_before = token.functions.balanceOf(TREASURY).call()
    chain.mine(seconds=int((second.deadline - second.created_at).total_seconds()) + 3600)
    later = second.deadline + timedelta(hours=1)
    assert sorted(e.pk for e in rewards_epochs_sweep(now=later)) == [first.pk, second.pk]
    run()
    left = RewardClaim.objects.get(user=unclaimed)
    assert left.status == RewardClaim.Status.EXPIRED
    assert set(RewardEpoch.objects.values_list("status", flat=True)) == {RewardEpoch.Status.SWEPT}
    assert token.functions.balanceOf(TREASURY).call() - treasury_before == 2 * E18
    assert token.functions.balanceOf(dist.address).call() == 0
    assert dist.functions.state().call()[3] == 1 and dist.functions.root().call() == b"\0" * 32
    assert revert_name(dist.functions.claim(left.account, int(left.cumulative_wei), left.proof), wallet.address) == \
        "NothingPublished"
    assert rewards_epochs_sweep(now=later) == []  # never twice

    # a new generation: totals restart from zero, and the unclaimed account earns and claims afresh
    rewards_accrue(allocations={unclaimed.pk: Decimal(1)}, source="inference", reference="inference:3")
    third = rewards_epoch_close(now=later + timedelta(hours=1))  # the chain's clock is 30 days on by now
    assert third.generation == 1 and epoch_totals(third) == {address_for_user(unclaimed): E18}
    run()
    reward_claim_request(claim=RewardClaim.objects.get(epoch=third), user=unclaimed)
    run()
    assert token.functions.balanceOf(address_for_user(unclaimed)).call() == E18
    assert set(LedgerTransaction.objects.values_list("status", flat=True)) == {LedgerTransaction.Status.CONFIRMED}


TREE_CHECK = r"""
const {StandardMerkleTree} = require("@openzeppelin/merkle-tree");
const dump = JSON.parse(require("fs").readFileSync(0, "utf8"));
const tree = StandardMerkleTree.load(dump);
const ok = dump.values.every((v, i) => StandardMerkleTree.verify(dump.root, dump.leafEncoding, v.value, dump.proofs[i]));
process.stdout.write(JSON.stringify({root: tree.root, ok}));
"""


def test_epoch_tree_downloads_and_standard_tooling_recomputes_the_root(db, client):
    """The epoch page's tree.json and the API's tree are the same dump; @openzeppelin/merkle-tree loads it."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    users = [UserFactory() for _ in range(5)]  # 5 leaves: where the old layout's root differed from the standard
    rewards_accrue(allocations={u.pk: Decimal("0.079047737257405776") * (i + 1) for i, u in enumerate(users)},
                   source="inference", reference="tree", model_id=1)
    epoch = rewards_epoch_close()
    page = client.get(f"/ledger/epochs/{epoch.pk}/tree.json")
    assert page.status_code == 200 and "attachment" in page["Content-Disposition"]
    dump = json.loads(page.content)
    client.force_login(users[0])
    assert client.get(f"/api/v1/ledger/epochs/{epoch.pk}/tree/").json() == dump
    assert f"/ledger/epochs/{epoch.pk}/tree.json" in client.get("/ledger/epochs/").content.decode()
    assert dump["format"] == "standard-v1" and dump["leafEncoding"] == ["address", "uint256"]
    assert {v["value"][1] for v in dump["values"]} >= {"79047737257405776"}  # exact, as a string
    result = subprocess.run([shutil.which("node"), "-e", TREE_CHECK], input=json.dumps(dump), capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"root": epoch.root, "ok": True}


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
    tree = reward_tree({a: 5, b: 7})
    proof = {acct: tree.proof(i) for i, (acct, _) in enumerate(tree.values)}
    s.transact(evil.functions.approve(dist_address, 12))
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    s.transact(dist.functions.publishEpoch(1, 0, tree.root, 12, deadline))
    s.transact(evil.functions.arm(dist_address, dist.encode_abi("claim", args=[b, 7, proof[b]])))
    s.transact(dist.functions.claim(a, 5, proof[a]))
    assert evil.functions.reentered().call() is True
    assert evil.functions.reentrySucceeded().call() is False
    assert client.decode_revert(evil.functions.reentryError().call()) == "ReentrancyGuardReentrantCall()"
    assert dist.functions.claimed(0, a).call() == 5 and dist.functions.claimed(0, b).call() == 0
    assert evil.functions.balanceOf(dist_address).call() == 7


# The fee split changes only through a token vote and the timelock: ledger/tests/test_governance.py.


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
