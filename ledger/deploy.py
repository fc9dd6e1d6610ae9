"""Deploy the contracts with the process signer and record their addresses in the database.

Order: OpenToken (whole supply to the signer, who acts as treasury/operator), Governance (timelock;
the signer proposes and executes after `LEDGER_GOVERNANCE_DELAY_SECONDS`), DatanetRegistry,
ModelRegistry, RewardDistributor (GOVERNANCE_ROLE held by the timelock only). Finally the signer
approves the registry and the distributor to pull OPEN for sponsored stakes and epoch funding.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from ledger import client
from ledger.models import ContractDeployment, LedgerTransaction
from ledger.services import DEFAULT_FEE_SPLIT_BPS

logger = logging.getLogger(__name__)

CONTRACTS = ("OpenToken", "Governance", "DatanetRegistry", "ModelRegistry", "RewardDistributor")
MAX_UINT256 = 2**256 - 1
# Outbox kinds replayed onto a fresh chain after a redeploy (the DB still says they happened).
REPLAYED_KINDS = (
    "datanet_create", "contribution_stake", "contribution_accept", "contribution_reject",
    "version_register", "model_register", "attribution_root_set", "epoch_publish", "reward_claim",
)


def deployed_contracts(signer) -> dict:
    """name -> web3 contract for the signer's chain; raises ChainConfigError when not deployed."""
    addresses = dict(ContractDeployment.objects.filter(chain_id=signer.chain_id).values_list("name", "address"))
    missing = [n for n in CONTRACTS if n not in addresses]
    if missing:
        raise client.ChainConfigError(f"contracts not deployed on chain {signer.chain_id}: run `manage.py deploy_contracts`")
    return {name: client.contract(signer.w3, name, addresses[name]) for name in CONTRACTS}


def deployment_is_live(signer) -> bool:
    """True when every recorded contract of this chain has code (a wiped anvil has none)."""
    rows = list(ContractDeployment.objects.filter(chain_id=signer.chain_id))
    if {r.name for r in rows} != set(CONTRACTS):
        return False
    return all(len(client.rpc(signer.w3.eth.get_code, signer.w3.to_checksum_address(r.address))) > 0 for r in rows)


def deploy_all(signer, *, treasury: str, governance_delay: int) -> dict[str, tuple[str, dict]]:
    """Deploy every contract from the signer (no database); name -> (address, receipt)."""
    operator = signer.address
    signer.sync_nonce()
    found: dict[str, tuple[str, dict]] = {}
    found["OpenToken"] = signer.deploy("OpenToken", operator)
    token = found["OpenToken"][0]
    found["Governance"] = signer.deploy("Governance", governance_delay, [operator], [operator])
    found["DatanetRegistry"] = signer.deploy("DatanetRegistry", token, treasury, operator, operator)
    found["ModelRegistry"] = signer.deploy("ModelRegistry", operator, operator)
    found["RewardDistributor"] = signer.deploy(
        "RewardDistributor", token, treasury, operator, operator, found["Governance"][0], DEFAULT_FEE_SPLIT_BPS,
    )
    open_token = client.contract(signer.w3, "OpenToken", token)
    for spender in ("DatanetRegistry", "RewardDistributor"):
        signer.transact(open_token.functions.approve(found[spender][0], MAX_UINT256))
    return found


def contracts_deploy(*, signer, if_needed: bool = False, replay: bool = True) -> dict[str, str]:
    """Deploy all contracts (or nothing, with `if_needed`, when the recorded ones are live)."""
    if if_needed and deployment_is_live(signer):
        return dict(ContractDeployment.objects.filter(chain_id=signer.chain_id).values_list("name", "address"))
    had_rows = ContractDeployment.objects.filter(chain_id=signer.chain_id).exists()
    found = deploy_all(signer, treasury=settings.LEDGER_TREASURY_ADDRESS or signer.address,
                       governance_delay=settings.LEDGER_GOVERNANCE_DELAY_SECONDS)
    with transaction.atomic():
        for name, (address, receipt) in found.items():
            ContractDeployment.objects.update_or_create(
                chain_id=signer.chain_id, name=name,
                defaults={"address": address, "tx_hash": "0x" + bytes(receipt["transactionHash"]).hex(),
                          "block_number": receipt["blockNumber"]},
            )
        if had_rows and replay:
            # The chain lost what the database says happened: send it all again, in the same order.
            n = LedgerTransaction.objects.filter(
                kind__in=REPLAYED_KINDS, status__in=[LedgerTransaction.Status.CONFIRMED, LedgerTransaction.Status.SENT],
            ).update(
                status=LedgerTransaction.Status.QUEUED, tx_hash="", raw_tx="", nonce=None, block_number=None, steps=0,
                last_error="replayed onto a redeployed chain")
            logger.info("redeployed on chain %s; %s outbox rows queued again", signer.chain_id, n)
    return {name: address for name, (address, _) in found.items()}
