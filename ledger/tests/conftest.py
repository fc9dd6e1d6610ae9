"""Chain fixtures: contracts deployed once per session on the session's anvil; each test runs on an
evm_snapshot that is reverted afterwards, with the addresses recorded in the test database."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from ledger import client
from ledger.client import ANVIL_DEV_KEY

# anvil's well-known dev accounts 1..9 (public test keys): other actors in contract tests.
ANVIL_KEYS = [
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
]
TREASURY = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # anvil account 9
# A vote in a few blocks: delay 1, period 10; 4% of OPEN's supply (40M) is the quorum.
GOVERNOR = {"voting_delay": 1, "voting_period": 10, "proposal_threshold": 0, "quorum_percent": 4}


@dataclass
class Chain:
    url: str
    w3: object
    signer: client.Signer
    addresses: dict
    c: dict

    def rpc(self, method, *params):
        return self.w3.provider.make_request(method, list(params))["result"]

    def mine(self, seconds: int = 0):
        if seconds:
            self.rpc("evm_increaseTime", seconds)
        self.rpc("evm_mine")

    def actor(self, i: int):
        from eth_account import Account

        return Account.from_key(ANVIL_KEYS[i])

    def transact_as(self, account, call):
        """Send a call from another anvil account (its own nonce); returns the receipt (status may be 0)."""
        tx = call.build_transaction({
            "from": account.address, "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
            "gas": 3_000_000, "chainId": self.signer.chain_id,
        })
        signed = account.sign_transaction(tx)
        h = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        return self.w3.eth.wait_for_transaction_receipt(h)


@pytest.fixture(scope="session")
def chain_deployment(anvil):
    from ledger.deploy import deploy_all

    w3 = client.get_web3(anvil.url)
    signer = client.Signer(w3, ANVIL_DEV_KEY)
    found = deploy_all(signer, treasury=TREASURY, governance_delay=60, governor=GOVERNOR)
    return {name: (address, receipt["blockNumber"]) for name, (address, receipt) in found.items()}


@pytest.fixture
def chain_settings(settings, anvil):
    settings.WEB3_PROVIDER_URI = anvil.url
    settings.LEDGER_PRIVATE_KEY = ANVIL_DEV_KEY
    settings.LEDGER_CONFIRMATIONS = 1
    return settings


def _snapshot_chain(anvil, chain_deployment, record: bool):
    from ledger.models import ContractDeployment

    client.reset_signers()
    signer = client.get_signer(anvil.url)
    w3 = signer.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    addresses = {name: addr for name, (addr, _) in chain_deployment.items()}
    if record:
        for name, (addr, block) in chain_deployment.items():
            ContractDeployment.objects.update_or_create(
                chain_id=signer.chain_id, name=name, defaults={"address": addr, "block_number": block})
    contracts = {name: client.contract(w3, name, addr) for name, addr in addresses.items()}
    return Chain(url=anvil.url, w3=w3, signer=signer, addresses=addresses, c=contracts), snap


@pytest.fixture
def chain(db, chain_settings, anvil, chain_deployment):
    """The deployed contracts on a chain snapshot; addresses recorded in the test database."""
    ch, snap = _snapshot_chain(anvil, chain_deployment, record=True)
    yield ch
    ch.w3.provider.make_request("evm_revert", [snap])
    client.reset_signers()


@pytest.fixture
def chain_tx(transactional_db, chain_settings, anvil, chain_deployment):
    """As `chain`, for tests with real worker processes (committed rows)."""
    ch, snap = _snapshot_chain(anvil, chain_deployment, record=True)
    yield ch
    ch.w3.provider.make_request("evm_revert", [snap])
    client.reset_signers()


@pytest.fixture(autouse=True)
def _short_rpc_backoff(monkeypatch):
    """Chain-down tests wait through the client's retries; a shorter pause keeps the same path, faster.
    Each test also starts with no fee split remembered (chain snapshots are reverted between tests)."""
    from ledger.services import fee_split_cache_clear

    monkeypatch.setattr(client, "RPC_RETRY_BACKOFF_SECONDS", 0.05)
    fee_split_cache_clear()
    yield
    fee_split_cache_clear()
