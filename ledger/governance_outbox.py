"""Outbox senders of the governance kinds (delegate, propose, vote, queue, execute), registered into the
sender's tables by `register()` from the app's `ready()`: the sender stays unaware of governance.

Each planner reads the chain first (None: already done) and, for a custodial holder, signs the EIP-712
message at that moment with the chain's current nonce, so a re-planned or replaced transaction stays valid.
Effects are re-read from the Governor (`proposal_sync`), so a reorg's undo is the same re-read.
"""
from __future__ import annotations

from ledger import governance
from ledger.models import GovernanceProposal, GovernanceVote
from ledger.outbox import Ctx, PermanentError, _get, _p
from ledger.services import custodial_address_for_user_id, custodial_key_for_user_id

ACTIVE, SUCCEEDED, QUEUED, EXECUTED = 1, 4, 5, 7  # IGovernor.ProposalState


def _custodial_key(ctx: Ctx, user_id, account: str) -> str:
    """The key of a custodial account; refuses when the account is not the user's custodial one (an own
    wallet was set after the request: the server cannot sign for it)."""
    if user_id is None or custodial_address_for_user_id(int(user_id)).lower() != account.lower():
        raise PermanentError(f"{account} is not a custodial wallet of this server: it must sign for itself")
    return custodial_key_for_user_id(int(user_id))


def _actions(proposal: GovernanceProposal):
    return (list(proposal.targets), [int(v) for v in proposal.values],
            [governance._bytes(c) for c in proposal.calldatas])


def _proposal(row) -> GovernanceProposal:
    return _get(GovernanceProposal, _p(row, "proposal_id"), "governance proposal")


def _plan_delegate(ctx: Ctx, row):
    token = ctx.c["OpenToken"]
    account = ctx.w3.to_checksum_address(_p(row, "account"))
    delegatee = ctx.w3.to_checksum_address(_p(row, "delegatee"))
    if token.functions.delegates(account).call() == delegatee:
        return None
    if row.payload.get("signature"):
        sig, nonce, expiry = governance._bytes(row.payload["signature"]), int(_p(row, "nonce")), int(_p(row, "expiry"))
    else:
        key = _custodial_key(ctx, row.payload.get("user_id"), account)
        nonce = token.functions.nonces(account).call()
        expiry = ctx.w3.eth.get_block("latest")["timestamp"] + governance.SIGNATURE_TTL_SECONDS
        sig = governance.sign_typed(key, governance.delegation_typed_data(
            chain_id=ctx.signer.chain_id, token=token.address, delegatee=delegatee, nonce=nonce, expiry=expiry))
    return token.functions.delegateBySig(delegatee, nonce, expiry, sig[64], sig[:32], sig[32:64])


def _plan_propose(ctx: Ctx, row):
    gov = ctx.c["OpenGovernor"]
    proposal = _proposal(row)
    pid = int(proposal.proposal_id)
    if gov.functions.proposalSnapshot(pid).call() != 0:
        return None
    targets, values, calldatas = _actions(proposal)
    proposer = ctx.w3.to_checksum_address(proposal.proposer_address)
    if governance.proposal_hash(targets, values, calldatas, proposal.description) != pid:
        raise PermanentError("the stored proposal does not hash to its proposal id")
    if row.payload.get("signature"):
        sig = governance._bytes(row.payload["signature"])
    else:
        key = _custodial_key(ctx, proposal.proposed_by_id, proposer)
        sig = governance.sign_typed(key, governance.propose_typed_data(
            chain_id=ctx.signer.chain_id, governor=gov.address, proposer=proposer,
            actions=governance.actions_hash(targets, values, calldatas), description=proposal.description,
            nonce=gov.functions.nonces(proposer).call()))
    return gov.functions.proposeBySig(targets, values, calldatas, proposal.description, proposer, sig)


def _plan_vote(ctx: Ctx, row):
    gov = ctx.c["OpenGovernor"]
    vote = _get(GovernanceVote, _p(row, "vote_id"), "governance vote")
    pid = int(vote.proposal.proposal_id)
    voter = ctx.w3.to_checksum_address(vote.voter)
    if gov.functions.hasVoted(pid, voter).call():
        return None
    state = gov.functions.state(pid).call()
    if state != ACTIVE:
        raise PermanentError(f"voting is not open on proposal {vote.proposal_id} ({governance.STATES[state].label})")
    if vote.signature:
        sig = governance._bytes(vote.signature)
    else:
        key = _custodial_key(ctx, vote.user_id, voter)
        sig = governance.sign_typed(key, governance.ballot_typed_data(
            chain_id=ctx.signer.chain_id, governor=gov.address, proposal_id=pid, support=vote.support, voter=voter,
            nonce=gov.functions.nonces(voter).call()))
    return gov.functions.castVoteBySig(pid, vote.support, voter, sig)


def _plan_queue(ctx: Ctx, row):
    gov = ctx.c["OpenGovernor"]
    proposal = _proposal(row)
    state = gov.functions.state(int(proposal.proposal_id)).call()
    if state in (QUEUED, EXECUTED):
        return None
    if state != SUCCEEDED:
        raise PermanentError(f"proposal {proposal.pk} is {governance.STATES[state].label}, not passed")
    targets, values, calldatas = _actions(proposal)
    return gov.functions.queue(targets, values, calldatas, _desc_hash(proposal))


def _plan_execute(ctx: Ctx, row):
    gov = ctx.c["OpenGovernor"]
    proposal = _proposal(row)
    pid = int(proposal.proposal_id)
    state = gov.functions.state(pid).call()
    if state == EXECUTED:
        return None
    if state != QUEUED:
        raise PermanentError(f"proposal {proposal.pk} is {governance.STATES[state].label}, not queued")
    if gov.functions.proposalEta(pid).call() > ctx.w3.eth.get_block("latest")["timestamp"]:
        raise PermanentError("the timelock has not released this proposal yet")
    targets, values, calldatas = _actions(proposal)
    return gov.functions.execute(targets, values, calldatas, _desc_hash(proposal))


def _desc_hash(proposal: GovernanceProposal) -> bytes:
    from eth_utils import keccak

    return keccak(text=proposal.description)


# --- effects: re-read from the Governor (the same after a confirmation and after a reorg) -------------------

def _synced(ctx: Ctx, row) -> None:
    proposal = GovernanceProposal.objects.filter(pk=row.payload.get("proposal_id")).first()
    if proposal is not None:
        governance.proposal_sync(proposal=proposal)


def _executed(ctx: Ctx, row) -> None:
    _synced(ctx, row)
    governance.governed_cache_clear()  # this process at once; other processes within PARAM_CACHE_SECONDS


def _voted(ctx: Ctx, row) -> None:
    vote = GovernanceVote.objects.select_related("proposal").filter(pk=row.payload.get("vote_id")).first()
    if vote is None:
        return
    cast = bool(ctx.c["OpenGovernor"].functions.hasVoted(int(vote.proposal.proposal_id),
                                                         ctx.w3.to_checksum_address(vote.voter)).call())
    GovernanceVote.objects.filter(pk=vote.pk).update(cast=cast)
    governance.proposal_sync(proposal=vote.proposal)


def _plan_token_grant(ctx: Ctx, row):
    """A transfer of OPEN from the operator (development chains): done once the account holds the amount."""
    token = ctx.c["OpenToken"]
    account = ctx.w3.to_checksum_address(_p(row, "account"))
    amount = int(_p(row, "amount_wei"))
    if token.functions.balanceOf(account).call() >= amount:
        return None
    return token.functions.transfer(account, amount)


PLANNERS = {
    "token_grant": _plan_token_grant,
    "governance_delegate": _plan_delegate, "governance_propose": _plan_propose, "governance_vote": _plan_vote,
    "governance_queue": _plan_queue, "governance_execute": _plan_execute,
}
ON_CONFIRMED = {
    "governance_propose": _synced, "governance_vote": _voted, "governance_queue": _synced,
    "governance_execute": _executed,
}
ON_REORGED = ON_CONFIRMED  # state is re-read from the chain, whichever branch it is now on


def register() -> None:
    from ledger import outbox

    outbox.PLANNERS.update(PLANNERS)
    outbox.ON_CONFIRMED.update(ON_CONFIRMED)
    if hasattr(outbox, "ON_REORGED"):
        outbox.ON_REORGED.update(ON_REORGED)
