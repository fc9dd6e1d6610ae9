"""Deploy the contracts with the process signer and record their addresses in the database.

Order: OpenToken (whole supply to the signer, who acts as treasury/operator), Governance (the timelock,
`LEDGER_GOVERNANCE_DELAY_SECONDS`), OpenGovernor (OPEN holders' votes), DatanetRegistry, ModelRegistry,
RewardDistributor, ProtocolParameters. The timelock is admin (DEFAULT_ADMIN_ROLE) and GOVERNANCE_ROLE holder
of every AccessControl contract from its constructor; the Governor is its only proposer and canceller; anyone
may execute. The signer keeps only OPERATOR_ROLE: it holds the timelock's admin role just long enough to wire
the Governor in and renounces it in the same deployment (checked before returning), so no key can grant
itself a governance role or change a governed parameter without a passed vote and the timelock's delay.
Finally the signer approves the registry and the distributor to pull OPEN for sponsored stakes and epoch funding.
"""
from __future__ import annotations

import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from ledger import client
from ledger.models import ContractDeployment, LedgerTransaction
from ledger.services import DEFAULT_FEE_SPLIT_BPS

logger = logging.getLogger(__name__)

CONTRACTS = ("OpenToken", "Governance", "OpenGovernor", "DatanetRegistry", "ModelRegistry", "RewardDistributor",
             "ProtocolParameters")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
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


def governor_config() -> dict:
    """The Governor's constructor settings from Django settings (blocks, whole OPEN, percent of supply)."""
    return {"voting_delay": settings.LEDGER_GOVERNOR_VOTING_DELAY_BLOCKS,
            "voting_period": settings.LEDGER_GOVERNOR_VOTING_PERIOD_BLOCKS,
            "proposal_threshold": settings.LEDGER_GOVERNOR_PROPOSAL_THRESHOLD,
            "quorum_percent": settings.LEDGER_GOVERNOR_QUORUM_PERCENT}


def deploy_all(signer, *, treasury: str, governance_delay: int, governor: dict | None = None,
               epoch_seconds: int | None = None, bond_seconds: int | None = None) -> dict[str, tuple[str, dict]]:
    """Deploy every contract from the signer (no database); name -> (address, receipt).

    Raises ChainError when the roles do not end as the module docstring says (nothing is recorded then)."""
    governor = {**governor_config(), **(governor or {})}
    operator = signer.address
    signer.sync_nonce()
    found: dict[str, tuple[str, dict]] = {}
    found["OpenToken"] = signer.deploy("OpenToken", operator)
    token = found["OpenToken"][0]
    # The signer is the timelock's admin only until the Governor is wired in (renounced below).
    found["Governance"] = signer.deploy("Governance", governance_delay, [], [ZERO_ADDRESS], operator)
    timelock_address = found["Governance"][0]
    found["OpenGovernor"] = signer.deploy(
        "OpenGovernor", token, timelock_address, int(governor["voting_delay"]), int(governor["voting_period"]),
        int(Decimal(str(governor["proposal_threshold"])) * 10**18), int(governor["quorum_percent"]),
    )
    bond = settings.LEDGER_STAKE_BOND_SECONDS if bond_seconds is None else bond_seconds
    found["DatanetRegistry"] = signer.deploy("DatanetRegistry", token, treasury, timelock_address, operator, int(bond))
    found["ModelRegistry"] = signer.deploy("ModelRegistry", timelock_address, operator)
    found["RewardDistributor"] = signer.deploy(
        "RewardDistributor", token, treasury, timelock_address, operator, timelock_address, DEFAULT_FEE_SPLIT_BPS,
    )
    found["ProtocolParameters"] = signer.deploy(
        "ProtocolParameters", timelock_address, int(epoch_seconds or settings.LEDGER_EPOCH_SECONDS))
    timelock = client.contract(signer.w3, "Governance", timelock_address)
    governor_address = found["OpenGovernor"][0]
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
        signer.transact(timelock.functions.grantRole(timelock.functions[role]().call(), governor_address))
    admin_role = timelock.functions.DEFAULT_ADMIN_ROLE().call()
    signer.transact(timelock.functions.renounceRole(admin_role, operator))
    open_token = client.contract(signer.w3, "OpenToken", token)
    for spender in ("DatanetRegistry", "RewardDistributor"):
        signer.transact(open_token.functions.approve(found[spender][0], MAX_UINT256))
    problems = governance_role_problems(signer.w3, {name: address for name, (address, _) in found.items()}, operator)
    if problems:
        raise client.ChainError("governance roles wrong after deploy: " + "; ".join(problems))
    return found


# Contracts with AccessControl and the roles only governance (the timelock) may hold.
GOVERNED_ROLES = {
    "Governance": ("DEFAULT_ADMIN_ROLE", "PROPOSER_ROLE", "CANCELLER_ROLE"),
    "DatanetRegistry": ("DEFAULT_ADMIN_ROLE", "GOVERNANCE_ROLE"),
    "ModelRegistry": ("DEFAULT_ADMIN_ROLE",),
    "RewardDistributor": ("DEFAULT_ADMIN_ROLE", "GOVERNANCE_ROLE"),
    "ProtocolParameters": ("DEFAULT_ADMIN_ROLE", "GOVERNANCE_ROLE"),
}


def governance_role_problems(w3, addresses: dict[str, str], operator: str) -> list[str]:
    """What is wrong with the governance roles of a deployment ([] when right): the operator holds none of
    GOVERNED_ROLES; the timelock holds the others' admin and governance roles; the Governor proposes and cancels."""
    problems = []
    timelock, governor = addresses["Governance"], addresses["OpenGovernor"]
    for name, roles in GOVERNED_ROLES.items():
        c = client.contract(w3, name, addresses[name])
        for role in roles:
            role_id = c.functions[role]().call()
            if c.functions.hasRole(role_id, operator).call():
                problems.append(f"the operator holds {name}.{role}")
            holder = governor if role in ("PROPOSER_ROLE", "CANCELLER_ROLE") else timelock
            if not c.functions.hasRole(role_id, holder).call():
                problems.append(f"{name}.{role} is not held by {'the Governor' if holder == governor else 'the timelock'}")
    return problems


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
