"""Contract behaviour through web3.py on anvil: access control, one-time writes, slash arithmetic and dust, reward funding,
signed curator decisions, and the token's supply and governance extensions."""
from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ledger.tests.conftest import TREASURY
from ledger.tests.factories import revert_name

pytestmark = pytest.mark.chain
E18 = 10**18
H = b"\x11" * 32


def _create(chain, datanet_id=1, curators=(), min_stake=10 * E18, bps=2500):
    reg = chain.c["DatanetRegistry"]
    chain.signer.sync_nonce()
    chain.signer.transact(reg.functions.createDatanet(datanet_id, chain.actor(0).address, list(curators), min_stake, bps))
    return reg


def test_token_supply_and_extensions(chain):
    token = chain.c["OpenToken"]
    assert token.functions.totalSupply().call() == 1_000_000_000 * E18
    assert (token.functions.name().call(), token.functions.symbol().call(), token.functions.decimals().call()) == \
        ("Open", "OPEN", 18)
    me = chain.signer.address
    assert token.functions.nonces(me).call() == 0  # ERC20Permit
    chain.signer.sync_nonce()
    chain.signer.transact(token.functions.delegate(me))  # ERC20Votes: voting power follows delegation
    assert token.functions.getVotes(me).call() == token.functions.balanceOf(me).call()


def test_registry_access_control_and_one_time_writes(chain):
    outsider = chain.actor(1)
    curator = chain.actor(2)
    reg = _create(chain, curators=[curator.address])
    assert revert_name(reg.functions.createDatanet(2, outsider.address, [], 0, 0), outsider.address) == \
        "AccessControlUnauthorizedAccount"
    assert revert_name(reg.functions.createDatanet(1, outsider.address, [], 0, 0), chain.signer.address) == "DatanetExists"
    assert revert_name(reg.functions.createDatanet(3, outsider.address, [], 0, 10_001), chain.signer.address) == "BadSlash"
    too_many = [Account.create().address for _ in range(33)]
    assert revert_name(reg.functions.createDatanet(3, outsider.address, too_many, 0, 0), chain.signer.address) == \
        "TooManyCurators"
    assert revert_name(reg.functions.setCurator(1, outsider.address, True), outsider.address) == "NotOwnerOrOperator"
    assert revert_name(reg.functions.stake(1, H, outsider.address, E18), chain.signer.address) == "StakeTooSmall"
    chain.signer.transact(reg.functions.stake(1, H, outsider.address, 10 * E18))
    assert revert_name(reg.functions.stake(1, H, outsider.address, 10 * E18), chain.signer.address) == "StakeExists"
    # only a curator decides, directly or by a signature the operator relays
    assert revert_name(reg.functions.accept(1, H), outsider.address) == "NotCurator"
    assert revert_name(reg.functions.accept(1, H), chain.signer.address) == "NotCurator"  # not even the operator
    digest = reg.functions.decisionDigest(1, H, True).call()
    forged = Account.unsafe_sign_hash(digest, outsider.key).signature
    assert revert_name(reg.functions.decideBySig(1, H, True, bytes(forged)), chain.signer.address) == "NotCurator"
    signed = Account.unsafe_sign_hash(digest, curator.key).signature
    chain.signer.transact(reg.functions.decideBySig(1, H, True, bytes(signed)))
    assert reg.functions.stakes(1, H).call()[3] == 2
    assert revert_name(reg.functions.reject(1, H), curator.address) == "NotPending"
    # versions: operator or curator, once per number, never an empty root
    assert revert_name(reg.functions.registerVersion(1, 1, H, 5), outsider.address) == "NotCurator"
    assert revert_name(reg.functions.registerVersion(1, 1, b"\0" * 32, 5), chain.signer.address) == "EmptyRoot"
    assert chain.transact_as(curator, reg.functions.registerVersion(1, 1, H, 5))["status"] == 1
    assert revert_name(reg.functions.registerVersion(1, 1, H, 5), chain.signer.address) == "VersionExists"
    assert revert_name(reg.functions.registerVersion(9, 1, H, 5), chain.signer.address) == "UnknownDatanet"


def test_model_registry_once_per_adapter(chain):
    models = chain.c["ModelRegistry"]
    call = models.functions.registerModel(H, 1, "base", H, H, chain.actor(0).address)
    assert revert_name(call, chain.actor(1).address) == "AccessControlUnauthorizedAccount"
    chain.signer.sync_nonce()
    chain.signer.transact(call)
    assert revert_name(call, chain.signer.address) == "AlreadyRegistered"
    assert revert_name(models.functions.registerModel(b"\x22" * 32, 1, "x" * 201, H, H, chain.actor(0).address),
                       chain.signer.address) == "BaseModelTooLong"
    assert models.functions.modelCount().call() == 1


@hsettings(max_examples=25, deadline=None)
@given(amount=st.integers(min_value=0, max_value=2**128 - 1), bps=st.integers(min_value=0, max_value=10_000))
def test_slash_arithmetic_rounds_down_and_returns_the_dust(chain_deployment, anvil, amount, bps):
    from ledger import client

    w3 = client.get_web3(anvil.url)
    reg = client.contract(w3, "DatanetRegistry", chain_deployment["DatanetRegistry"][0])
    slashed, returned = reg.functions.slashAmounts(amount, bps).call()
    assert slashed == amount * bps // 10_000 and slashed + returned == amount


def test_reject_moves_exact_amounts(chain):
    token = chain.c["OpenToken"]
    curator = chain.actor(2)
    reg = _create(chain, curators=[curator.address], min_stake=1, bps=3333)
    staker_before = token.functions.balanceOf(chain.signer.address).call()
    treasury_before = token.functions.balanceOf(TREASURY).call()
    chain.signer.transact(reg.functions.stake(1, H, chain.actor(0).address, 7))
    assert chain.transact_as(curator, reg.functions.reject(1, H))["status"] == 1
    assert token.functions.balanceOf(TREASURY).call() - treasury_before == 2  # floor(7 * 3333 / 10000)
    assert staker_before - token.functions.balanceOf(chain.signer.address).call() == 2  # 5 came back, dust included
    assert token.functions.balanceOf(reg.address).call() == 0


def test_accept_bonds_the_stake_slashable_within_the_bond_and_released_after(chain):
    """Accept keeps the stake (bonded for bondSeconds); within it a curator (directly or by signature) slashes
    it with the rejection's split, once; after it anyone releases it to the staker, once."""
    token = chain.c["OpenToken"]
    curator, outsider = chain.actor(2), chain.actor(1)
    reg = _create(chain, curators=[curator.address], min_stake=1, bps=3333)
    bond = reg.functions.bondSeconds().call()
    assert bond > 0
    h2 = b"\x22" * 32
    chain.signer.transact(reg.functions.stake(1, H, chain.actor(0).address, 7))
    chain.signer.transact(reg.functions.stake(1, h2, chain.actor(0).address, 10 * E18))
    held = token.functions.balanceOf(reg.address).call()
    accepted = chain.transact_as(curator, reg.functions.accept(1, H))
    assert accepted["status"] == 1
    assert chain.transact_as(curator, reg.functions.accept(1, h2))["status"] == 1
    assert token.functions.balanceOf(reg.address).call() == held  # nothing released at accept
    stake = reg.functions.stakes(1, H).call()
    assert (stake[3], stake[5]) == (2, 1)  # Accepted, Bonded
    assert stake[4] == chain.w3.eth.get_block(accepted["blockNumber"])["timestamp"] + bond
    # within the bond: nobody releases; only a curator slashes
    assert revert_name(reg.functions.release(1, H), outsider.address) == "BondRunning"
    assert revert_name(reg.functions.slashAccepted(1, H), outsider.address) == "NotCurator"
    forged = Account.unsafe_sign_hash(reg.functions.slashDigest(1, H).call(), outsider.key).signature
    assert revert_name(reg.functions.slashAcceptedBySig(1, H, bytes(forged)), chain.signer.address) == "NotCurator"
    treasury_before = token.functions.balanceOf(TREASURY).call()
    staker_before = token.functions.balanceOf(chain.signer.address).call()
    signed = Account.unsafe_sign_hash(reg.functions.slashDigest(1, H).call(), curator.key).signature
    chain.signer.transact(reg.functions.slashAcceptedBySig(1, H, bytes(signed)))
    assert token.functions.balanceOf(TREASURY).call() - treasury_before == 2  # floor(7 * 3333 / 10000)
    assert token.functions.balanceOf(chain.signer.address).call() - staker_before == 5
    assert reg.functions.stakes(1, H).call()[5] == 3  # Slashed
    assert revert_name(reg.functions.slashAccepted(1, H), curator.address) == "NotBonded"
    assert revert_name(reg.functions.release(1, H), outsider.address) == "NotBonded"
    # after the bond: no slash; anyone releases the whole stake to its staker, once
    chain.mine(bond + 1)
    assert revert_name(reg.functions.slashAccepted(1, h2), curator.address) == "BondOver"
    staker_before = token.functions.balanceOf(chain.signer.address).call()
    assert chain.transact_as(outsider, reg.functions.release(1, h2))["status"] == 1
    assert token.functions.balanceOf(chain.signer.address).call() - staker_before == 10 * E18
    assert token.functions.balanceOf(reg.address).call() == held - 7 - 10 * E18
    assert revert_name(reg.functions.release(1, h2), outsider.address) == "NotBonded"
    # pending and rejected stakes have no bond
    assert revert_name(reg.functions.slashAccepted(1, b"\x33" * 32), curator.address) == "NotBonded"


def test_bond_seconds_is_governed(chain):
    reg = chain.c["DatanetRegistry"]
    assert revert_name(reg.functions.setBondSeconds(5), chain.signer.address) == "AccessControlUnauthorizedAccount"


def test_distributor_never_pays_more_than_funded_and_totals_only_grow(chain):
    """A root whose leaves add up to more than was funded pays until the funding runs out, then ExceedsFunding;
    funding never shrinks; a tree of another generation is refused; claimMany pays each account once."""
    from ledger.services import reward_tree

    dist, token = chain.c["RewardDistributor"], chain.c["OpenToken"]
    a, b, c = (chain.actor(i).address for i in (1, 2, 3))
    s = chain.signer
    s.sync_nonce()
    s.transact(token.functions.approve(dist.address, 2**255))
    now = chain.w3.eth.get_block("latest")["timestamp"]
    tree = reward_tree({a: 6, b: 5, c: 4})  # leaves sum to 15; only 10 funded
    proof = {acct: tree.proof(i) for i, (acct, _) in enumerate(tree.values)}
    assert revert_name(dist.functions.publishEpoch(1, 1, tree.root, 10, now + 3600), s.address) == "WrongGeneration"
    assert revert_name(dist.functions.publishEpoch(1, 0, tree.root, 2**96, now + 3600), s.address) == "FundingOverflow"
    s.transact(dist.functions.publishEpoch(1, 0, tree.root, 10, now + 3600))
    assert revert_name(dist.functions.publishEpoch(2, 0, tree.root, 9, now + 3600), s.address) == "FundingDecreased"
    assert revert_name(dist.functions.publishEpoch(2, 0, tree.root, 10, now + 3599), s.address) == "DeadlineInPast"
    s.transact(dist.functions.claim(a, 6, proof[a]))
    assert revert_name(dist.functions.claim(b, 5, proof[b]), s.address) == "ExceedsFunding"
    s.transact(dist.functions.claim(c, 4, proof[c]))
    funded, claimed, _, _ = dist.functions.state().call()
    assert (funded, claimed) == (10, 10) and token.functions.balanceOf(dist.address).call() == 0

    # the next epoch raises b's and c's totals and funds the difference: one claimMany pays only what is new
    later = reward_tree({a: 6, b: 5, c: 9})
    proof = {acct: later.proof(i) for i, (acct, _) in enumerate(later.values)}
    s.transact(dist.functions.publishEpoch(2, 0, later.root, 20, now + 3600))
    assert token.functions.balanceOf(dist.address).call() == 10
    accounts = [a, b, c, c]  # a has nothing new, c twice: skipped, not paid twice
    s.transact(dist.functions.claimMany(accounts, [6, 5, 9, 9], [proof[x] for x in accounts]))
    assert [token.functions.balanceOf(x).call() for x in (a, b, c)] == [6, 5, 9]
    assert dist.functions.state().call()[:2] == [20, 20] and token.functions.balanceOf(dist.address).call() == 0
    assert revert_name(dist.functions.claimMany([a], [7], [proof[a]]), s.address) == "InvalidProof"
