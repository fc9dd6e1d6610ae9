"""Contract behaviour through web3.py on anvil: access control, one-time writes, slash arithmetic and dust,
signed curator decisions, and the token's supply and governance extensions."""
from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ledger.tests.conftest import TREASURY
from ledger.tests.test_rewards import revert_name

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
