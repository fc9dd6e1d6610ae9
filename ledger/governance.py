"""Governance by OPEN holders: proposals, delegation, votes, queue and execution through OpenGovernor and the
timelock, and the governed parameters the application reads (cached, like `fee_split_get`).

How holders act: every write is relayed by the operator through the outbox, so no holder needs gas. Custodial
wallets are signed for by the server (their keys are derived, see `custodial_key_for_user_id`): EIP-712
`Delegation` (ERC20Votes `delegateBySig`), `Ballot` (Governor `castVoteBySig`) and `Propose`
(`OpenGovernor.proposeBySig`, so the proposer on-chain is the holder, whose votes meet the threshold). A holder
with an own wallet signs the same typed data (`*_typed_data`) and posts the signature, or sends the shown
calldata from the wallet. Queue and execute are open to anyone on-chain; the operator relays them on request.
Signing at relay time with the chain's current nonce keeps a retried or replaced transaction valid.
"""
from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ApplicationError
from ledger import client
from ledger.models import ChainParameter, GovernanceProposal, GovernanceVote, LedgerTransaction, RewardEpoch
from ledger.services import (
    MAX_UINT128,
    address_for_user,
    contract_addresses,
    enqueue,
    fee_split_cache_clear,
    to_wei,
    user_wallet,
)

logger = logging.getLogger(__name__)

Action, Status, Support = GovernanceProposal.Action, GovernanceProposal.Status, GovernanceVote.Support
# Governor.state() -> our status (IGovernor.ProposalState order)
STATES = (Status.PENDING, Status.ACTIVE, Status.CANCELED, Status.DEFEATED, Status.SUCCEEDED, Status.QUEUED,
          Status.EXPIRED, Status.EXECUTED)
FINAL = {Status.CANCELED, Status.DEFEATED, Status.EXPIRED, Status.EXECUTED}
MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS = 60, 30 * 86400  # ProtocolParameters' bounds
PARAM_CACHE_SECONDS = 300
PARAM_DOWN_RETRY_SECONDS = 30  # while the chain is down, the last value read is reused this long
SIGNATURE_TTL_SECONDS = 3600  # a server-signed delegation expires an hour after it is signed

ERR_BAD_SPLIT = "A fee split is three whole basis points (contributors, developer, protocol) that sum to 10000."
ERR_BAD_TERMS = "Datanet terms are a minimum stake in OPEN (at most 18 decimals) and a slash rate of 0 to 10000 bps."
ERR_NO_DATANET = "This Datanet is not on-chain yet."
ERR_BAD_EPOCH = f"The epoch length is whole seconds from {MIN_EPOCH_SECONDS} to {MAX_EPOCH_SECONDS}."
ERR_BAD_ACTION = "Unknown proposal action."
ERR_NO_VOTES = "Your account has {votes} OPEN of votes; proposing needs {threshold}. Delegate to yourself first."
ERR_NOT_ACTIVE = "Voting on this proposal is not open (it is {state})."
ERR_NO_WEIGHT = "Your account had no delegated OPEN when voting opened (its snapshot block), so it has no vote here."
ERR_ALREADY_VOTED = "This account has already voted on this proposal."
ERR_BAD_SUPPORT = "Vote for, against or abstain."
ERR_NOT_SUCCEEDED = "Only a passed proposal can be queued (it is {state})."
ERR_NOT_QUEUED = "Only a queued proposal can be executed (it is {state})."
ERR_NOT_RELEASED = "The timelock releases this proposal at {eta}."
ERR_OWN_WALLET = "Your account is your own wallet, so the server cannot sign for it: sign the typed data and post the signature."
SIGN_YOURSELF = 428  # Precondition Required: the answer carries the typed data (and calldata) to sign or send
ERR_BAD_SIGNATURE = "The signature must be 65 bytes of 0x-hex."
ERR_CHAIN = "The chain is not reachable; try again in a minute."


# --- chain access ----------------------------------------------------------------------------------

def _contracts() -> tuple[client.Signer, dict]:
    from ledger.deploy import deployed_contracts

    try:
        signer = client.get_signer()
        return signer, deployed_contracts(signer)
    except client.ChainError as exc:
        raise ApplicationError(ERR_CHAIN, status_code=503, extra={"reason": str(exc)[:200]}) from None


def _call(fn, *args):
    try:
        return client.rpc(fn(*args).call)
    except client.ChainError as exc:
        raise ApplicationError(ERR_CHAIN, status_code=503, extra={"reason": str(exc)[:200]}) from None


def proposal_hash(targets, values, calldatas, description: str) -> int:
    """Governor.hashProposal: keccak256(abi.encode(targets, values, calldatas, keccak256(description)))."""
    from eth_abi import encode
    from eth_utils import keccak

    desc = keccak(text=description)
    raw = encode(["address[]", "uint256[]", "bytes[]", "bytes32"],
                 [targets, [int(v) for v in values], [_bytes(c) for c in calldatas], desc])
    return int.from_bytes(keccak(raw), "big")


def actions_hash(targets, values, calldatas) -> bytes:
    """OpenGovernor.actionsHash: what a `Propose` signature covers besides the description."""
    from eth_abi import encode
    from eth_utils import keccak

    return keccak(encode(["address[]", "uint256[]", "bytes[]"],
                         [targets, [int(v) for v in values], [_bytes(c) for c in calldatas]]))


def _bytes(hexstr) -> bytes:
    return bytes(hexstr) if isinstance(hexstr, bytes | bytearray) else bytes.fromhex(str(hexstr).removeprefix("0x"))


# --- typed data (EIP-712) that holders sign: the server for custodial wallets, a wallet otherwise ----------

def _typed(domain: dict, primary: str, fields: list[tuple[str, str]], message: dict) -> dict:
    domain_fields = [("name", "string"), ("version", "string"), ("chainId", "uint256"), ("verifyingContract", "address")]
    return {
        "types": {"EIP712Domain": [{"name": n, "type": t} for n, t in domain_fields],
                  primary: [{"name": n, "type": t} for n, t in fields]},
        "primaryType": primary, "domain": domain, "message": message,
    }


def delegation_typed_data(*, chain_id: int, token: str, delegatee: str, nonce: int, expiry: int) -> dict:
    """ERC20Votes `Delegation`, for OpenToken.delegateBySig (domain: ERC20Permit's name "Open", version "1")."""
    return _typed({"name": "Open", "version": "1", "chainId": chain_id, "verifyingContract": token}, "Delegation",
                  [("delegatee", "address"), ("nonce", "uint256"), ("expiry", "uint256")],
                  {"delegatee": delegatee, "nonce": nonce, "expiry": expiry})


def ballot_typed_data(*, chain_id: int, governor: str, proposal_id: int, support: int, voter: str, nonce: int) -> dict:
    """Governor `Ballot`, for castVoteBySig."""
    return _typed({"name": "OpenGovernor", "version": "1", "chainId": chain_id, "verifyingContract": governor},
                  "Ballot", [("proposalId", "uint256"), ("support", "uint8"), ("voter", "address"), ("nonce", "uint256")],
                  {"proposalId": proposal_id, "support": support, "voter": voter, "nonce": nonce})


def propose_typed_data(*, chain_id: int, governor: str, proposer: str, actions: bytes, description: str,
                       nonce: int) -> dict:
    """OpenGovernor `Propose`, for proposeBySig (the nonce is the Governor's, shared with ballots)."""
    from eth_utils import keccak

    return _typed({"name": "OpenGovernor", "version": "1", "chainId": chain_id, "verifyingContract": governor},
                  "Propose", [("proposer", "address"), ("actionsHash", "bytes32"), ("descriptionHash", "bytes32"),
                              ("nonce", "uint256")],
                  {"proposer": proposer, "actionsHash": "0x" + actions.hex(),
                   "descriptionHash": "0x" + keccak(text=description).hex(), "nonce": nonce})


def sign_typed(key: str, typed: dict) -> bytes:
    """65-byte signature (r, s, v) of EIP-712 typed data; the key never leaves this call."""
    from eth_account import Account

    return bytes(Account.sign_typed_data(key, full_message=typed).signature)


def _signature(value) -> str:
    text = str(value or "").strip()
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ApplicationError(ERR_BAD_SIGNATURE) from None
    if len(raw) != 65:
        raise ApplicationError(ERR_BAD_SIGNATURE)
    return "0x" + raw.hex()


# --- accounts ------------------------------------------------------------------------------------------

def governance_account(*, user) -> dict:
    """The user's voting account (own wallet, else custodial), its OPEN, votes and delegate; chain values are
    None while the chain is down."""
    account = address_for_user(user)
    info = {"account": account, "custodial": not user_wallet(user), "balance": None, "votes": None,
            "delegate": None, "token_nonce": None, "governor_nonce": None}
    try:
        _, c = _contracts()
        token, gov = c["OpenToken"], c["OpenGovernor"]
        info.update(
            balance=Decimal(_call(token.functions.balanceOf, account)) / Decimal(10**18),
            votes=Decimal(_call(token.functions.getVotes, account)) / Decimal(10**18),
            delegate=_call(token.functions.delegates, account),
            token_nonce=_call(token.functions.nonces, account),
            governor_nonce=_call(gov.functions.nonces, account),
        )
    except ApplicationError:
        pass
    return info


def governance_delegate(*, user, delegatee: str | None = None, signature: str = "", nonce: int | None = None,
                        expiry: int | None = None):
    """Delegate the user's OPEN votes (to themselves by default: ERC20Votes counts nothing undelegated).

    Custodial: the server signs at relay time. Own wallet: a `Delegation` signature (with its nonce and expiry)
    is relayed; without one, ApplicationError with the typed data and the calldata to send from the wallet.
    """
    from web3 import Web3

    account = address_for_user(user)
    try:
        target = Web3.to_checksum_address(delegatee or account)
    except ValueError:
        raise ApplicationError("Not an address.", extra={"delegatee": str(delegatee)[:60]}) from None
    payload = {"user_id": user.pk, "account": account, "delegatee": target}
    if user_wallet(user):
        signer, c = _contracts()
        token = c["OpenToken"]
        if not signature:
            n = _call(token.functions.nonces, account)
            exp = int(time.time()) + SIGNATURE_TTL_SECONDS
            raise ApplicationError(ERR_OWN_WALLET, status_code=SIGN_YOURSELF, extra={
                "typed_data": delegation_typed_data(chain_id=signer.chain_id, token=token.address, delegatee=target,
                                                    nonce=n, expiry=exp),
                "to": token.address, "calldata": token.encode_abi("delegate", args=[target])})
        payload.update(signature=_signature(signature), nonce=int(nonce or 0), expiry=int(expiry or 0))
    key = f"governance:delegate:{account}:{target}:{payload.get('nonce', int(time.time()) // 60)}"
    with transaction.atomic():
        return enqueue("governance_delegate", payload, key)


# --- demo voting power ------------------------------------------------------------------------------------

DEMO_GRANT_WHOLE_OPEN = 20_000_000  # 2% of the supply: with a 4% quorum, two demo holders pass a proposal


def governance_tokens_grant(*, user, whole_open: int = DEMO_GRANT_WHOLE_OPEN, reference: str = "demo"):
    """Send OPEN from the operator's treasury to a user and delegate its votes to itself (both through the
    outbox; idempotent per user and reference). For the demo and development chains, where nobody else
    holds OPEN: without it no proposal can reach quorum. Refused on other chains: a real distribution of
    voting power is a governance decision, not a seed step."""
    if not settings.DEBUG:
        raise ApplicationError("Token grants are for development chains only.")
    account = address_for_user(user)
    with transaction.atomic():
        row = enqueue("token_grant", {"user_id": user.pk, "account": account, "amount_wei": str(whole_open * 10**18)},
                      f"token_grant:{reference}:{user.pk}")
        if not user_wallet(user):  # a custodial holder's votes count once delegated; an own wallet delegates itself
            enqueue("governance_delegate", {"user_id": user.pk, "account": account, "delegatee": account},
                    f"governance:delegate:{account}:{account}:{reference}")
    return row


# --- proposals -----------------------------------------------------------------------------------------

def _encode_actions(c: dict, action: str, params: dict) -> tuple[dict, list[str], list[int], list[str]]:
    """Validate `params` for `action`; (clean params, targets, values, calldatas)."""
    if action == Action.FEE_SPLIT:
        try:
            bps = [int(params[k]) for k in ("contributors_bps", "developer_bps", "protocol_bps")]
        except (KeyError, TypeError, ValueError):
            raise ApplicationError(ERR_BAD_SPLIT) from None
        if any(b < 0 or b > 10_000 for b in bps) or sum(bps) != 10_000:
            raise ApplicationError(ERR_BAD_SPLIT, extra={"bps": bps})
        dist = c["RewardDistributor"]
        return {"bps": bps}, [dist.address], [0], [dist.encode_abi("setFeeSplit", args=[tuple(bps)])]
    if action == Action.DATANET_TERMS:
        try:
            datanet_id, slash_bps = int(params["datanet_id"]), int(params["slash_bps"])
            min_stake = Decimal(str(params["min_stake"]))
            wei = to_wei(min_stake)
        except (KeyError, TypeError, ValueError, InvalidOperation, ApplicationError):
            raise ApplicationError(ERR_BAD_TERMS) from None
        if not 0 <= slash_bps <= 10_000 or not 0 <= wei <= MAX_UINT128:
            raise ApplicationError(ERR_BAD_TERMS)
        reg = c["DatanetRegistry"]
        if not _call(reg.functions.datanets, datanet_id)[2]:
            raise ApplicationError(ERR_NO_DATANET, extra={"datanet_id": datanet_id})
        clean = {"datanet_id": datanet_id, "min_stake": str(min_stake.normalize()), "slash_bps": slash_bps}
        return clean, [reg.address], [0], [reg.encode_abi("setDatanetTerms", args=[datanet_id, wei, slash_bps])]
    if action == Action.EPOCH_SECONDS:
        try:
            seconds = int(params["seconds"])
        except (KeyError, TypeError, ValueError):
            raise ApplicationError(ERR_BAD_EPOCH) from None
        if not MIN_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS:
            raise ApplicationError(ERR_BAD_EPOCH)
        pp = c["ProtocolParameters"]
        return {"seconds": seconds}, [pp.address], [0], [pp.encode_abi("setEpochSeconds", args=[seconds])]
    raise ApplicationError(ERR_BAD_ACTION, extra={"action": str(action)[:40]})


def _title(action: str, params: dict) -> str:
    if action == Action.FEE_SPLIT:
        c, d, p = params["bps"]
        return f"Set the reward fee split to {c / 100:g}% contributors, {d / 100:g}% developer, {p / 100:g}% protocol"
    if action == Action.DATANET_TERMS:
        return (f"Set Datanet {params['datanet_id']}'s minimum stake to {params['min_stake']} OPEN and its slash rate "
                f"to {params['slash_bps'] / 100:g}%")
    return f"Set the reward epoch length to {params['seconds']} seconds"


def governance_propose(*, user, action: str, params: dict, reason: str = "", signature: str = "") -> GovernanceProposal:
    """Propose one parameter change to OPEN holders; the proposer is the user's account (custodial or own).

    The description ends with `#proposer=<account>` so nobody can front-run it with another proposer.
    Raises ApplicationError for bad parameters, too few votes, or (own wallet, no signature) with the
    `Propose` typed data to sign; the signature is then posted with the same arguments.
    """
    signer, c = _contracts()
    clean, targets, values, calldatas = _encode_actions(c, action, params or {})
    account = address_for_user(user)
    gov = c["OpenGovernor"]
    threshold = _call(gov.functions.proposalThreshold)
    if threshold > 0:
        clock = _call(gov.functions.clock)
        votes = _call(gov.functions.getVotes, account, clock - 1)
        if votes < threshold:
            raise ApplicationError(ERR_NO_VOTES.format(votes=Decimal(votes) / 10**18, threshold=Decimal(threshold) / 10**18),
                                   status_code=403)
    # The user's words, then ours; identical proposals by one proposer differ by the note's number.
    note = (reason or "").strip()[:2000]
    seq = GovernanceProposal.objects.filter(proposer_address=account).count() + 1
    description = f"{_title(action, clean)}\n\n{note}\n\nModel Factory proposal {seq}\n#proposer={account}".replace(
        "\n\n\n\n", "\n\n")
    proposal_id = proposal_hash(targets, values, calldatas, description)
    payload = {}
    if user_wallet(user):
        if not signature:
            nonce = _call(gov.functions.nonces, account)
            raise ApplicationError(ERR_OWN_WALLET, status_code=SIGN_YOURSELF, extra={
                "description": description, "targets": targets, "values": [str(v) for v in values],
                "calldatas": calldatas, "typed_data": propose_typed_data(
                    chain_id=signer.chain_id, governor=gov.address, proposer=account,
                    actions=actions_hash(targets, values, calldatas), description=description, nonce=nonce),
                "to": gov.address, "calldata": gov.encode_abi("propose", args=[targets, values, [_bytes(x) for x in calldatas], description]),
            })
        payload["signature"] = _signature(signature)
    with transaction.atomic():
        proposal = GovernanceProposal.objects.create(
            action=action, params=clean, description=description, proposer_address=account, targets=targets,
            values=[str(v) for v in values], calldatas=calldatas, proposal_id=str(proposal_id), proposed_by=user)
        enqueue("governance_propose", {"proposal_id": proposal.pk, **payload}, f"governance:{proposal.pk}:propose")
    return proposal


def proposal_sync(*, proposal: GovernanceProposal) -> GovernanceProposal:
    """Refresh the proposal's mirror of the Governor (state, vote blocks, tally, quorum, eta). Leaves the row as it
    was when the chain does not answer or the proposal is not on-chain yet. Never raises for the chain."""
    if not proposal.proposal_id:
        return proposal
    try:
        _, c = _contracts()
        gov = c["OpenGovernor"]
        pid = int(proposal.proposal_id)
        snapshot = _call(gov.functions.proposalSnapshot, pid)
        if snapshot == 0:  # not on-chain: still in the outbox, or refused there (a retried row proposes again)
            row = LedgerTransaction.objects.filter(idempotency_key=f"governance:{proposal.pk}:propose").first()
            status = Status.FAILED if row is not None and row.status == LedgerTransaction.Status.FAILED else Status.PROPOSING
            if status != proposal.status:
                GovernanceProposal.objects.filter(pk=proposal.pk).update(status=status)
                proposal.status = status
            return proposal
        state = STATES[_call(gov.functions.state, pid)]
        against, for_, abstain = _call(gov.functions.proposalVotes, pid)
        eta = _call(gov.functions.proposalEta, pid)
        deadline = _call(gov.functions.proposalDeadline, pid)
        quorum = _call(gov.functions.quorum, snapshot) if state != Status.PENDING else None
    except ApplicationError:
        return proposal
    fields = {"status": state, "vote_start": snapshot, "vote_end": deadline,
              "tally": {"against": str(against), "for": str(for_), "abstain": str(abstain)},
              "eta": datetime.fromtimestamp(eta, tz=UTC) if eta else None, "synced_at": timezone.now()}
    if quorum is not None:
        fields["quorum_wei"] = str(quorum)
    if state == Status.EXECUTED and proposal.executed_at is None:
        fields["executed_at"] = timezone.now()
    GovernanceProposal.objects.filter(pk=proposal.pk).update(**fields)
    for k, v in fields.items():
        setattr(proposal, k, v)
    return proposal


def proposals_sync_open() -> int:
    """Refresh every proposal that is not final (pages call it; cheap: a few view calls each)."""
    n = 0
    for p in GovernanceProposal.objects.exclude(status__in=FINAL).exclude(proposal_id=""):
        proposal_sync(proposal=p)
        n += 1
    return n


def governance_vote(*, user, proposal: GovernanceProposal, support, signature: str = "") -> GovernanceVote:
    """Vote for (1), against (0) or abstain (2) with the user's account's votes at the proposal's snapshot.

    One ballot per account (the Governor refuses a second). Own wallet: the `Ballot` signature is relayed;
    without one, ApplicationError with the typed data and the calldata to send from the wallet."""
    labels = {"against": 0, "for": 1, "abstain": 2}
    try:
        support = labels[support] if isinstance(support, str) and support in labels else int(support)
    except (TypeError, ValueError):
        raise ApplicationError(ERR_BAD_SUPPORT) from None
    if support not in (0, 1, 2):
        raise ApplicationError(ERR_BAD_SUPPORT)
    proposal = proposal_sync(proposal=proposal)
    if proposal.status != Status.ACTIVE:
        raise ApplicationError(ERR_NOT_ACTIVE.format(state=proposal.get_status_display().lower()))
    account = address_for_user(user)
    signer, c = _contracts()
    gov = c["OpenGovernor"]
    pid = int(proposal.proposal_id)
    if _call(gov.functions.hasVoted, pid, account):
        raise ApplicationError(ERR_ALREADY_VOTED)
    if _call(gov.functions.getVotes, account, proposal.vote_start) == 0:
        raise ApplicationError(ERR_NO_WEIGHT, status_code=403)
    fields = {}
    if user_wallet(user):
        if not signature:
            nonce = _call(gov.functions.nonces, account)
            raise ApplicationError(ERR_OWN_WALLET, status_code=SIGN_YOURSELF, extra={
                "typed_data": ballot_typed_data(chain_id=signer.chain_id, governor=gov.address, proposal_id=pid,
                                                support=support, voter=account, nonce=nonce),
                "to": gov.address, "calldata": gov.encode_abi("castVote", args=[pid, support])})
        fields["signature"] = _signature(signature)
    with transaction.atomic():
        vote, created = GovernanceVote.objects.get_or_create(
            proposal=proposal, voter=account, defaults={"user": user, "support": support, **fields})
        if not created:
            raise ApplicationError(ERR_ALREADY_VOTED)
        enqueue("governance_vote", {"vote_id": vote.pk}, f"governance:{proposal.pk}:vote:{account}")
    return vote


def governance_queue(*, user, proposal: GovernanceProposal) -> GovernanceProposal:
    """Queue a passed proposal in the timelock (anyone may; the operator relays it)."""
    proposal = proposal_sync(proposal=proposal)
    if proposal.status != Status.SUCCEEDED:
        raise ApplicationError(ERR_NOT_SUCCEEDED.format(state=proposal.get_status_display().lower()))
    with transaction.atomic():
        enqueue("governance_queue", {"proposal_id": proposal.pk}, f"governance:{proposal.pk}:queue")
    return proposal


def governance_execute(*, user, proposal: GovernanceProposal) -> GovernanceProposal:
    """Execute a queued proposal once the timelock released it (checked against the chain's clock)."""
    proposal = proposal_sync(proposal=proposal)
    if proposal.status != Status.QUEUED:
        raise ApplicationError(ERR_NOT_QUEUED.format(state=proposal.get_status_display().lower()))
    signer, _ = _contracts()
    try:
        now = client.rpc(signer.w3.eth.get_block, "latest")["timestamp"]
    except client.ChainError:
        raise ApplicationError(ERR_CHAIN, status_code=503) from None
    if proposal.eta and proposal.eta.timestamp() > now:
        raise ApplicationError(ERR_NOT_RELEASED.format(eta=proposal.eta.isoformat()), extra={"eta": proposal.eta.isoformat()})
    with transaction.atomic():
        enqueue("governance_execute", {"proposal_id": proposal.pk}, f"governance:{proposal.pk}:execute")
    return proposal


# --- governed parameters, read from the chain (cached; the last value read while the chain is down) ----------

_memo: dict[tuple, tuple[float, object]] = {}


def governed_cache_clear() -> None:
    """Forget every cached governed value (after an executed proposal); the fee split's cache too."""
    _memo.clear()
    ChainParameter.objects.filter(name__in=["fee_split", "epoch_seconds"]).delete()
    ChainParameter.objects.filter(name__startswith="datanet_terms:").delete()
    fee_split_cache_clear()


def _governed(name: str, read, default, *, refresh: bool = False):
    """A JSON value read by `read(w3, addresses)` and cached like fee_split_get: in the process and in the
    database for PARAM_CACHE_SECONDS; on a chain error, the last value read (any chain), else `default`."""
    uri = settings.WEB3_PROVIDER_URI or ""
    memo = _memo.get((uri, name))
    if memo and not refresh and time.monotonic() < memo[0]:
        return memo[1]
    try:
        w3 = client.get_web3()
        chain_id = client.rpc(lambda: w3.eth.chain_id)
        cached = ChainParameter.objects.filter(chain_id=chain_id, name=name).first()
        if cached and not refresh and (timezone.now() - cached.fetched_at).total_seconds() < PARAM_CACHE_SECONDS:
            value = cached.value["v"]
        else:
            value = read(w3, contract_addresses(chain_id=chain_id))
            ChainParameter.objects.update_or_create(chain_id=chain_id, name=name, defaults={"value": {"v": value}})
        ttl = PARAM_CACHE_SECONDS
    except client.ChainError:
        last = ChainParameter.objects.filter(name=name).order_by("-fetched_at").first()
        logger.warning("%s: chain unavailable, using %s", name, "the last value read" if last else "the default")
        value, ttl = (last.value["v"] if last else default), PARAM_DOWN_RETRY_SECONDS
    _memo[(uri, name)] = (time.monotonic() + ttl, value)
    return value


def epoch_seconds_get(*, refresh: bool = False) -> int:
    """The reward epoch length governance set (ProtocolParameters.epochSeconds); LEDGER_EPOCH_SECONDS until read."""
    def read(w3, addresses):
        if "ProtocolParameters" not in addresses:
            raise client.ChainConfigError("ProtocolParameters is not deployed")
        return int(client.rpc(client.contract(w3, "ProtocolParameters", addresses["ProtocolParameters"])
                              .functions.epochSeconds().call))

    return int(_governed("epoch_seconds", read, settings.LEDGER_EPOCH_SECONDS, refresh=refresh))


def datanet_terms_get(*, datanet_id: int, refresh: bool = False) -> dict | None:
    """A Datanet's on-chain terms, which governance may have changed since it was created:
    {"min_stake": Decimal OPEN, "slash_fraction": Decimal}; None while the Datanet is not on-chain (or never
    read and the chain is down): the caller then uses its own row's values."""
    def read(w3, addresses):
        if "DatanetRegistry" not in addresses:
            raise client.ChainConfigError("DatanetRegistry is not deployed")
        reg = client.contract(w3, "DatanetRegistry", addresses["DatanetRegistry"])
        _, bps, exists, min_stake = client.rpc(reg.functions.datanets(int(datanet_id)).call)[:4]
        return {"min_stake_wei": str(min_stake), "slash_bps": int(bps)} if exists else None

    value = _governed(f"datanet_terms:{int(datanet_id)}", read, None, refresh=refresh)
    if value is None:
        _memo.pop((settings.WEB3_PROVIDER_URI or "", f"datanet_terms:{int(datanet_id)}"), None)  # created soon: ask again
        return None
    return {"min_stake": Decimal(int(value["min_stake_wei"])) / Decimal(10**18),
            "slash_fraction": Decimal(int(value["slash_bps"])) / Decimal(10_000)}


def epoch_close_due(*, now=None) -> bool:
    """True when the governed epoch length has passed since the newest epoch (or there is none yet)."""
    now = now or timezone.now()
    latest = RewardEpoch.objects.order_by("-id").first()
    return latest is None or now - latest.created_at >= timedelta(seconds=epoch_seconds_get())
