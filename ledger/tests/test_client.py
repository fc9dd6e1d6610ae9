import pytest
from django.core.management import call_command

from ledger import client
from ledger.deploy import CONTRACTS
from ledger.models import ContractDeployment

pytestmark = pytest.mark.chain


def test_chain_down_gives_a_clear_error(settings):
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"  # nothing listens on the discard port
    client.reset_signers()
    with pytest.raises(client.ChainUnavailable, match="does not answer"):
        client.get_signer()
    assert client.chain_status()["ok"] is False


def test_no_key_outside_dev_chain_is_refused(settings):
    settings.LEDGER_PRIVATE_KEY = ""
    settings.DEBUG = False
    with pytest.raises(client.ChainConfigError, match="LEDGER_PRIVATE_KEY"):
        client.ledger_private_key(31337)
    settings.DEBUG = True
    assert client.ledger_private_key(31337) == client.ANVIL_DEV_KEY
    with pytest.raises(client.ChainConfigError):
        client.ledger_private_key(1)


def test_signer_repr_hides_the_key(chain):
    assert client.ANVIL_DEV_KEY[2:] not in repr(chain.signer)
    assert chain.signer.address in repr(chain.signer)


def test_nonce_is_local_and_resynced_after_an_error(chain):
    token = chain.c["OpenToken"]
    s = chain.signer
    start = s.sync_nonce()
    s.transact(token.functions.transfer(chain.actor(0).address, 1))
    assert s._nonce == start + 1
    # someone else uses the account's next nonce: our local one is stale, the send fails, then re-syncs
    from eth_account import Account

    me = Account.from_key(client.ANVIL_DEV_KEY)
    raw = me.sign_transaction({"to": chain.actor(0).address, "value": 1, "gas": 21000, "nonce": start + 1,
                               "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": s.chain_id})
    chain.w3.eth.send_raw_transaction(raw.raw_transaction)
    with pytest.raises(client.ChainError):
        s.send(s.sign(s.build(token.functions.transfer(chain.actor(0).address, 1))))
    assert s._nonce is None
    receipt = s.transact(token.functions.transfer(chain.actor(0).address, 1))
    assert receipt["status"] == 1


def test_gas_margin_and_eip1559_fees(chain):
    tx = chain.signer.build(chain.c["OpenToken"].functions.transfer(chain.actor(0).address, 5))
    estimate = chain.c["OpenToken"].functions.transfer(chain.actor(0).address, 5).estimate_gas({"from": chain.signer.address})
    assert tx["gas"] == estimate * (100 + client.GAS_MARGIN_PERCENT) // 100
    assert tx["maxFeePerGas"] >= tx["maxPriorityFeePerGas"] > 0
    assert "gasPrice" not in tx


def test_revert_is_decoded_to_the_custom_error(chain):
    reg = chain.c["ModelRegistry"]
    with pytest.raises(client.TxReverted, match="EmptyHash"):
        chain.signer.build(reg.functions.registerModel(b"\0" * 32, 1, "x", b"\1" * 32, b"\1" * 32, chain.signer.address))


def test_deploy_contracts_if_needed(chain):
    ContractDeployment.objects.all().delete()
    call_command("deploy_contracts", if_needed=True)
    first = dict(ContractDeployment.objects.values_list("name", "address"))
    assert set(first) == set(CONTRACTS)
    call_command("deploy_contracts", if_needed=True)  # live: nothing deployed
    assert dict(ContractDeployment.objects.values_list("name", "address")) == first
    # the chain lost the code (wiped state): the command deploys again
    ContractDeployment.objects.filter(name="ModelRegistry").update(address="0x" + "11" * 20)
    call_command("deploy_contracts", if_needed=True)
    again = dict(ContractDeployment.objects.values_list("name", "address"))
    assert again["ModelRegistry"] != "0x" + "11" * 20 and again["OpenToken"] != first["OpenToken"]


def test_deploy_contracts_without_a_chain_is_skipped_by_bootstrap(settings, db, capsys):
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"
    client.reset_signers()
    call_command("deploy_contracts", if_needed=True)
    assert "skipped" in capsys.readouterr().err
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("deploy_contracts")


def test_replacement_fees_rise_at_least_the_minimum_and_stop_at_the_ceiling():
    old = {"maxFeePerGas": 3_000_000_001, "maxPriorityFeePerGas": 1_000_000_001}
    quiet = {"maxFeePerGas": 1, "maxPriorityFeePerGas": 1}
    fees = client.bumped_fees(old, quiet, bump_bps=1250, ceiling=10**12)
    # +12.5 %, rounded up: a node compares with >=, so rounding down could fall short by one wei
    assert fees == {"maxFeePerGas": 3_375_000_002, "maxPriorityFeePerGas": 1_125_000_002}
    assert client.bumped_fees(old, quiet, bump_bps=100, ceiling=10**12) == fees  # never below 12.5 %
    busy = {"maxFeePerGas": 9 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}
    assert client.bumped_fees(old, busy, bump_bps=1250, ceiling=10**12) == busy  # the market, when higher
    assert client.bumped_fees(old, busy, bump_bps=1250, ceiling=4 * 10**9) == {
        "maxFeePerGas": 4 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}  # capped, still a valid raise
    assert client.bumped_fees(old, busy, bump_bps=1250, ceiling=3_375_000_001) is None  # no room for the raise
