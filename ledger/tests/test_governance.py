"""Governance by OPEN holders on anvil: the operator holds no governance or admin role and cannot take one; a
fee split, a Datanet's terms and the epoch length change only through delegate -> propose -> vote -> queue ->
execute (Governor, then the timelock's delay), relayed through the outbox; a proposal without quorum is defeated."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from eth_account import Account
from eth_utils import keccak

from accounts.tests.factories import UserFactory
from core.errors import ApplicationError
from ledger import client, governance, outbox
from ledger.deploy import GOVERNED_ROLES, governance_role_problems
from ledger.models import ChainParameter, GovernanceProposal, LedgerTransaction
from ledger.services import address_for_user, fee_split_get
from ledger.tests.conftest import ANVIL_KEYS, GOVERNOR
from ledger.tests.factories import revert_name

pytestmark = pytest.mark.chain
E18 = 10**18
Status = GovernanceProposal.Status


def run():
    stats = outbox.outbox_process()
    failed = list(LedgerTransaction.objects.filter(status=LedgerTransaction.Status.FAILED).values_list("kind", "last_error"))
    assert not failed, failed
    return stats


def fund(chain, account: str, whole_open: int) -> None:
    chain.signer.transact(chain.c["OpenToken"].functions.transfer(account, whole_open * E18))


def holder(chain, whole_open: int, *, wallet_key: str | None = None):
    """A user holding OPEN with its votes delegated to itself (custodial, or its own wallet signing)."""
    user = UserFactory()
    if wallet_key:
        user.profile.wallet_address = Account.from_key(wallet_key).address
        user.profile.save()
    fund(chain, address_for_user(user), whole_open)
    if wallet_key:
        with pytest.raises(ApplicationError) as asked:
            governance.governance_delegate(user=user)
        typed = asked.value.extra["typed_data"]
        sig = Account.sign_typed_data(wallet_key, full_message=typed).signature.hex()
        governance.governance_delegate(user=user, signature=sig, nonce=typed["message"]["nonce"],
                                       expiry=typed["message"]["expiry"])
    else:
        governance.governance_delegate(user=user)
    run()
    assert chain.c["OpenToken"].functions.getVotes(address_for_user(user)).call() == whole_open * E18
    return user


def propose(chain, user, action, params) -> GovernanceProposal:
    proposal = governance.governance_propose(user=user, action=action, params=params, reason="tested")
    run()
    proposal.refresh_from_db()
    assert proposal.status == Status.PENDING, proposal.status
    assert proposal.description.endswith(f"#proposer={address_for_user(user)}")
    assert chain.c["OpenGovernor"].functions.proposalProposer(int(proposal.proposal_id)).call() == address_for_user(user)
    chain.rpc("anvil_mine", hex(GOVERNOR["voting_delay"] + 1))
    assert governance.proposal_sync(proposal=proposal).status == Status.ACTIVE
    return proposal


def end_voting(chain, proposal) -> GovernanceProposal:
    chain.rpc("anvil_mine", hex(GOVERNOR["voting_period"] + 1))
    return governance.proposal_sync(proposal=proposal)


def pass_proposal(chain, user, action, params) -> GovernanceProposal:
    """delegate (done by `holder`) -> propose -> vote for -> queue -> wait for the timelock -> execute."""
    proposal = propose(chain, user, action, params)
    governance.governance_vote(user=user, proposal=proposal, support="for")
    run()
    assert end_voting(chain, proposal).status == Status.SUCCEEDED
    governance.governance_queue(user=user, proposal=proposal)
    run()
    proposal.refresh_from_db()
    assert proposal.status == Status.QUEUED and proposal.eta is not None
    chain.mine(61)
    governance.governance_execute(user=user, proposal=proposal)
    run()
    proposal.refresh_from_db()
    assert proposal.status == Status.EXECUTED and proposal.executed_at is not None
    return proposal


def test_the_operator_holds_no_governance_role_and_cannot_take_one(chain):
    operator = chain.signer.address
    assert governance_role_problems(chain.w3, chain.addresses, operator) == []
    for name, roles in GOVERNED_ROLES.items():
        c = chain.c[name]
        for role in {*roles, "DEFAULT_ADMIN_ROLE"} | ({"EXECUTOR_ROLE"} if name == "Governance" else set()):
            role_id = c.functions[role]().call()
            assert revert_name(c.functions.grantRole(role_id, operator), operator) == "AccessControlUnauthorizedAccount", \
                (name, role)
    # ... nor change a governed parameter, nor schedule on the timelock, nor run the Governor's executor path
    dist, reg, params, timelock = (chain.c[n] for n in ("RewardDistributor", "DatanetRegistry", "ProtocolParameters",
                                                         "Governance"))
    assert revert_name(dist.functions.setFeeSplit((0, 0, 10_000)), operator) == "AccessControlUnauthorizedAccount"
    assert revert_name(reg.functions.setDatanetTerms(1, 0, 0), operator) == "AccessControlUnauthorizedAccount"
    assert revert_name(params.functions.setEpochSeconds(60), operator) == "AccessControlUnauthorizedAccount"
    data = dist.encode_abi("setFeeSplit", args=[(0, 0, 10_000)])
    assert revert_name(timelock.functions.schedule(dist.address, 0, data, b"\0" * 32, b"\0" * 32, 60), operator) == \
        "AccessControlUnauthorizedAccount"
    assert revert_name(chain.c["OpenGovernor"].functions.relay(dist.address, 0, data), operator) == "GovernorOnlyExecutor"
    # what it still does: operate the registries and the distributor
    for name in ("DatanetRegistry", "ModelRegistry", "RewardDistributor"):
        c = chain.c[name]
        assert c.functions.hasRole(c.functions.OPERATOR_ROLE().call(), operator).call()
    gov = chain.c["OpenGovernor"]
    assert gov.functions.timelock().call() == chain.addresses["Governance"]
    assert (gov.functions.votingDelay().call(), gov.functions.votingPeriod().call(),
            gov.functions.quorumNumerator().call()) == (1, 10, 4)


def test_a_fee_split_passes_a_token_vote_and_the_timelock(chain):
    whale = holder(chain, 50_000_000)  # 5% of the supply: over the 4% quorum alone
    minnow = holder(chain, 1_000_000, wallet_key=ANVIL_KEYS[1])  # an own wallet: signs its typed data itself
    assert fee_split_get(refresh=True)["contributors"] == Decimal("0.7")
    params = {"contributors_bps": 6000, "developer_bps": 3000, "protocol_bps": 1000}
    proposal = propose(chain, whale, "fee_split", params)
    governance.governance_vote(user=whale, proposal=proposal, support="for")
    run()
    with pytest.raises(ApplicationError, match="already voted"):
        governance.governance_vote(user=whale, proposal=proposal, support="against")
    with pytest.raises(ApplicationError) as asked:
        governance.governance_vote(user=minnow, proposal=proposal, support="against")
    typed = asked.value.extra["typed_data"]
    sig = Account.sign_typed_data(ANVIL_KEYS[1], full_message=typed).signature.hex()
    governance.governance_vote(user=minnow, proposal=proposal, support="against", signature=sig)
    run()
    proposal = governance.proposal_sync(proposal=proposal)
    assert proposal.tally == {"against": str(1_000_000 * E18), "for": str(50_000_000 * E18), "abstain": "0"}
    assert proposal.votes.filter(cast=True).count() == 2
    with pytest.raises(ApplicationError, match="Only a passed proposal"):
        governance.governance_queue(user=whale, proposal=proposal)  # still voting
    assert end_voting(chain, proposal).status == Status.SUCCEEDED
    governance.governance_queue(user=whale, proposal=proposal)
    run()
    proposal.refresh_from_db()
    assert proposal.status == Status.QUEUED
    with pytest.raises(ApplicationError, match="timelock releases"):
        governance.governance_execute(user=whale, proposal=proposal)
    gov, dist = chain.c["OpenGovernor"], chain.c["RewardDistributor"]
    args = ([proposal.targets[0]], [0], [bytes.fromhex(proposal.calldatas[0][2:])], keccak(text=proposal.description))
    assert revert_name(gov.functions.execute(*args), chain.signer.address) == "TimelockUnexpectedOperationState"
    assert fee_split_get()["contributors"] == Decimal("0.7")
    chain.mine(61)
    governance.governance_execute(user=whale, proposal=proposal)
    run()
    proposal.refresh_from_db()
    assert proposal.status == Status.EXECUTED
    assert list(dist.functions.feeSplit().call()) == [6000, 3000, 1000]
    assert fee_split_get() == {"contributors": Decimal("0.6"), "developer": Decimal("0.3"), "protocol": Decimal("0.1")}


def test_a_proposal_without_quorum_is_defeated_and_cannot_be_queued(chain):
    small = holder(chain, 10_000_000)  # 1%: under the 4% quorum however it votes
    proposal = propose(chain, small, "epoch_seconds", {"seconds": 120})
    governance.governance_vote(user=small, proposal=proposal, support="for")
    run()
    assert end_voting(chain, proposal).status == Status.DEFEATED
    assert proposal.quorum_wei == str(40_000_000 * E18)
    with pytest.raises(ApplicationError, match="Only a passed proposal"):
        governance.governance_queue(user=small, proposal=proposal)
    gov = chain.c["OpenGovernor"]
    targets, values, calldatas = [proposal.targets[0]], [0], [bytes.fromhex(proposal.calldatas[0][2:])]
    assert revert_name(gov.functions.queue(targets, values, calldatas, keccak(text=proposal.description)),
                       chain.signer.address) == "GovernorUnexpectedProposalState"
    assert governance.epoch_seconds_get(refresh=True) == 600


def test_datanet_terms_and_epoch_length_are_governed_and_read_by_the_app(chain, settings):
    reg = chain.c["DatanetRegistry"]
    chain.signer.transact(reg.functions.createDatanet(77, chain.signer.address, [], 10 * E18, 5000))
    assert governance.datanet_terms_get(datanet_id=77) == {"min_stake": Decimal(10), "slash_fraction": Decimal("0.5")}
    assert governance.datanet_terms_get(datanet_id=78) is None  # not on-chain: callers use their own row
    voter = holder(chain, 50_000_000)
    with pytest.raises(ApplicationError, match="not on-chain"):
        governance.governance_propose(user=voter, action="datanet_terms",
                                      params={"datanet_id": 78, "min_stake": "1", "slash_bps": 1})
    with pytest.raises(ApplicationError, match="epoch length"):
        governance.governance_propose(user=voter, action="epoch_seconds", params={"seconds": 59})
    pass_proposal(chain, voter, "datanet_terms", {"datanet_id": 77, "min_stake": "25.5", "slash_bps": 2500})
    assert reg.functions.datanets(77).call()[1] == 2500
    assert governance.datanet_terms_get(datanet_id=77) == {"min_stake": Decimal("25.5"), "slash_fraction": Decimal("0.25")}
    pass_proposal(chain, voter, "epoch_seconds", {"seconds": 120})
    assert governance.epoch_seconds_get() == 120
    # the chain goes away: the last value read stands
    governance._memo.clear()
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"
    client.reset_signers()
    assert governance.epoch_seconds_get() == 120
    assert ChainParameter.objects.filter(name="epoch_seconds").exists()


# --- pages and API ---------------------------------------------------------------------------------------

def test_governance_pages_and_api_need_a_signed_in_user(client, db):
    from django.urls import reverse
    from rest_framework.test import APIClient

    api = APIClient()
    for name in ("api-governance", "api-governance-proposals"):
        assert api.get(reverse(name)).status_code in (401, 403), name
    for name in ("api-governance-delegate", "api-governance-proposals"):
        assert api.post(reverse(name), {}).status_code in (401, 403), name
    for name in ("api-governance-vote", "api-governance-queue", "api-governance-execute"):
        assert api.post(reverse(name, args=[1]), {"support": "for"}).status_code in (401, 403), name
    for name, args in (("ledger:governance", []), ("ledger:proposal", [1])):
        assert client.get(reverse(name, args=args)).status_code == 302, name
    for name, args in (("ledger:governance-delegate", []), ("ledger:governance-propose", []),
                       ("ledger:proposal-vote", [1]), ("ledger:proposal-queue", [1]), ("ledger:proposal-execute", [1])):
        assert client.post(reverse(name, args=args)).status_code == 403, name  # a POST without a login: 403


def test_holders_act_from_the_api_and_the_pages(chain, client):
    from django.urls import reverse
    from rest_framework.test import APIClient

    api = APIClient()
    voter = UserFactory()
    fund(chain, address_for_user(voter), 50_000_000)
    api.force_authenticate(voter)
    r = api.get(reverse("api-governance"))
    assert r.status_code == 200 and r.json()["votes"] == "0" and r.json()["epoch_seconds"] == 600
    assert api.post(reverse("api-governance-delegate"), {}).status_code == 202
    run()
    assert Decimal(api.get(reverse("api-governance")).json()["votes"]) == 50_000_000
    r = api.post(reverse("api-governance-proposals"), {"action": "fee_split", "params": {
        "contributors_bps": 5000, "developer_bps": 5000, "protocol_bps": 1}}, format="json")
    assert r.status_code == 400 and "sum to 10000" in r.json()["error"]["message"]
    r = api.post(reverse("api-governance-proposals"), {"action": "epoch_seconds", "params": {"seconds": 300},
                                                       "reason": "shorter waits"}, format="json")
    assert r.status_code == 202 and r.json()["status"] == "proposing"
    pk = r.json()["id"]
    run()
    chain.rpc("anvil_mine", "0x2")
    assert api.get(reverse("api-governance-proposal", args=[pk])).json()["status"] == "active"
    # an own wallet gets its delegation to sign (428, typed data on the page), and its signature is relayed
    own = UserFactory()
    own.profile.wallet_address = Account.from_key(ANVIL_KEYS[2]).address
    own.profile.save()
    fund(chain, own.profile.wallet_address, 5)
    client.force_login(own)
    r = client.post(reverse("ledger:governance-delegate"))
    assert r.status_code == 428 and b"eth_signTypedData_v4" in r.content and b"Delegation" in r.content
    typed = json.loads(r.context["signing"]["typed_json"])
    sig = Account.sign_typed_data(ANVIL_KEYS[2], full_message=typed).signature.hex()
    fields = {**r.context["signing"]["fields"], "signature": sig}
    r = client.post(reverse("ledger:governance-delegate"), fields, follow=True)
    assert "Delegation queued" in r.content.decode()
    run()
    assert chain.c["OpenToken"].functions.getVotes(own.profile.wallet_address).call() == 5 * E18
    # ... but it had no votes at this proposal's snapshot: refused before anything is signed or relayed
    r = client.post(reverse("ledger:proposal-vote", args=[pk]), {"support": "against"}, follow=True)
    assert "no vote here" in r.content.decode()
    client.force_login(voter)
    r = client.post(reverse("ledger:proposal-vote", args=[pk]), {"support": "for"}, follow=True)
    assert r.status_code == 200 and "Vote queued" in r.content.decode()
    run()
    page = client.get(reverse("ledger:proposal", args=[pk])).content.decode()
    assert "voted for" in page and "50000000" in page
    chain.rpc("anvil_mine", hex(GOVERNOR["voting_period"] + 1))
    assert "Queue in the timelock" in client.get(reverse("ledger:proposal", args=[pk])).content.decode()
    assert api.post(reverse("api-governance-queue", args=[pk])).status_code == 202
    run()
    r = api.post(reverse("api-governance-execute", args=[pk]))
    assert r.status_code == 400 and "timelock releases" in r.json()["error"]["message"]
    chain.mine(61)
    client.post(reverse("ledger:proposal-execute", args=[pk]))
    run()
    assert api.get(reverse("api-governance-proposal", args=[pk])).json()["status"] == "executed"
    assert governance.epoch_seconds_get() == 300
    page = client.get(reverse("ledger:governance")).content.decode()
    assert "Epoch length: 300 s" in page and "Executed" in page


def test_the_epoch_closes_on_the_governed_length_read_last_while_the_chain_is_down(db, settings):
    from datetime import timedelta

    from django.utils import timezone

    from ledger.models import RewardEpoch
    from ledger.tasks import rewards_epoch_tick_task

    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"  # down
    governance._memo.clear()
    ChainParameter.objects.create(chain_id=31337, name="epoch_seconds", value={"v": 120})
    assert governance.epoch_close_due()  # no epoch yet
    epoch = RewardEpoch.objects.create(root="0x" + "11" * 32, total_wei=1, deadline=timezone.now())
    now = epoch.created_at
    assert not governance.epoch_close_due(now=now + timedelta(seconds=119))
    assert governance.epoch_close_due(now=now + timedelta(seconds=120))
    assert rewards_epoch_tick_task() is None  # not due (the real clock) and nothing accrued either


def test_demo_grant_gives_voting_power_once_and_only_on_development(chain, settings):
    user = UserFactory()
    settings.DEBUG = False
    with pytest.raises(ApplicationError, match="development chains only"):
        governance.governance_tokens_grant(user=user)
    settings.DEBUG = True
    governance.governance_tokens_grant(user=user)
    governance.governance_tokens_grant(user=user)  # a second seed run queues nothing new
    assert LedgerTransaction.objects.filter(kind="token_grant").count() == 1
    run()
    account = address_for_user(user)
    grant = governance.DEMO_GRANT_WHOLE_OPEN * E18
    assert chain.c["OpenToken"].functions.balanceOf(account).call() == grant
    assert chain.c["OpenToken"].functions.getVotes(account).call() == grant
