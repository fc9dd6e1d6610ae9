"""The database against the chain: every outbox row checked against the contracts' events.

One selector, `ledger_audit`, used by `manage.py ledger_audit` (all rows, exit 1 on any mismatch) and the explorer
(the latest rows of each kind). Events are read once per run (one `eth_getLogs` per event and block chunk), from
the block the contracts were deployed at. A row that is `failed` is a mismatch (the database recorded a change the
chain does not hold); `queued` and `sent` rows are counted as pending, not judged. Read-only: no key needed.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from ledger import client
from ledger.models import ContractDeployment, LedgerTransaction, RewardClaim, RewardEpoch

logger = logging.getLogger(__name__)

LOG_CHUNK_BLOCKS = 10_000  # providers cap eth_getLogs ranges (often 10k blocks)
S = LedgerTransaction.Status


@dataclass
class Check:
    kind: str
    row_id: int
    subject: str
    database: str
    chain: str
    ok: bool


@dataclass
class Audit:
    checks: list[Check] = field(default_factory=list)
    pending: int = 0
    error: str = ""

    @property
    def mismatches(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.error and not self.mismatches

    def by_kind(self) -> list[dict]:
        kinds: dict[str, list[Check]] = defaultdict(list)
        for c in self.checks:
            kinds[c.kind].append(c)
        return [{"kind": k, "checked": len(v), "mismatches": sum(not c.ok for c in v), "checks": v}
                for k, v in sorted(kinds.items())]


def _hx(value) -> str:
    return "0x" + bytes(value).hex()


def _low(value) -> str:
    return str(value or "").lower()


def _wei(amount) -> int:
    return int(Decimal(str(amount)) * 10**18)


def _read_contracts():
    w3 = client.get_web3()
    chain_id = client.rpc(lambda: w3.eth.chain_id)
    rows = list(ContractDeployment.objects.filter(chain_id=chain_id))
    if not {"DatanetRegistry", "ModelRegistry"} <= {r.name for r in rows}:
        raise client.ChainConfigError(f"contracts not deployed on chain {chain_id}")
    start = min((r.block_number for r in rows if r.block_number is not None), default=0)
    return w3, {r.name: client.contract(w3, r.name, r.address) for r in rows}, start


def _events(contract, name: str, start: int, head: int, **filters) -> list[dict]:
    """Every `name` event of the contract in [start, head], oldest first; [] when its ABI has no such event."""
    if contract is None or not any(i.get("type") == "event" and i.get("name") == name for i in contract.abi):
        return []
    event = getattr(contract.events, name)
    out = []
    for lo in range(start, head + 1, LOG_CHUNK_BLOCKS):
        hi = min(lo + LOG_CHUNK_BLOCKS - 1, head)
        logs = client.rpc(event.get_logs, argument_filters=filters or None, from_block=lo, to_block=hi)
        out.extend(dict(log["args"]) for log in logs)
    return out


class _Chain:
    """The contracts' events, indexed the way the checks look them up."""

    def __init__(self, c: dict, start: int, head: int):
        self.c, self.start, self.head = c, start, head
        reg, models, dist = c.get("DatanetRegistry"), c.get("ModelRegistry"), c.get("RewardDistributor")
        ev = lambda contract, name: _events(contract, name, start, head)  # noqa: E731
        self.datanets = {e["datanetId"]: dict(e) for e in ev(reg, "DatanetCreated")}
        for e in ev(reg, "DatanetTermsSet"):  # governance may change the terms later: the latest wins
            self.datanets.setdefault(e["datanetId"], {}).update(minStake=e["minStake"], slashBps=e["slashBps"])
        key = lambda e: (e["datanetId"], _hx(e["contentHash"]))  # noqa: E731
        self.staked = {key(e): e for e in ev(reg, "Staked")}
        self.accepted = {key(e): e for e in ev(reg, "Accepted")}
        self.rejected = {key(e): e for e in ev(reg, "Rejected")}
        self.versions = {(e["datanetId"], e["number"]): e for e in ev(reg, "VersionRegistered")}
        self.models = {_hx(e["adapterHash"]): e for e in ev(models, "ModelRegistered")}
        self.attribution = {_hx(e["adapterHash"]): e for e in ev(models, "AttributionRootSet")}
        self.epochs = {e["epochId"]: e for e in ev(dist, "EpochPublished")}
        self.claimed: dict[tuple, int] = defaultdict(int)  # (account, generation) -> highest cumulative claimed
        for e in ev(dist, "Claimed"):
            k = (_low(e["account"]), e.get("generation", 0))
            self.claimed[k] = max(self.claimed[k], e.get("cumulative", e["amount"]))
        self.swept = {e.get("generation", e.get("epochId")): e for e in ev(dist, "Swept")}
        gov, timelock = c.get("OpenGovernor"), c.get("Governance")
        self.proposals = {e["proposalId"] for e in ev(gov, "ProposalCreated")}
        self.queued = {e["proposalId"] for e in ev(gov, "ProposalQueued")}
        self.executed = {e["proposalId"] for e in ev(gov, "ProposalExecuted")}
        self.votes = {(e["proposalId"], _low(e["voter"])): e["support"] for e in ev(gov, "VoteCast")}
        self.scheduled = {_hx(e["id"]) for e in ev(timelock, "CallScheduled")}
        self.calls_executed = {_hx(e["id"]) for e in ev(timelock, "CallExecuted")}


def _p(row, key, default=None):
    return (row.payload or {}).get(key, default)


def _datanet(ch: _Chain, row):
    """The terms the datanets app asked for (the row's payload, as the planner sent them) against the chain's."""
    datanet_id = int(_p(row, "datanet_id", 0))
    if _p(row, "min_stake") is None or _p(row, "slash_bps") is None:
        return f"datanet {datanet_id}: the row carries no terms", "", False
    db = f"min stake {_wei(_p(row, 'min_stake'))} · slash {int(_p(row, 'slash_bps'))} bps"
    e = ch.datanets.get(datanet_id)
    if e is None or "owner" not in e:
        return db, "no DatanetCreated", False
    chain = f"min stake {e['minStake']} · slash {e['slashBps']} bps"
    return db, chain, db == chain


def _stake(ch: _Chain, row):
    k = (int(_p(row, "datanet_id", 0)), _low(_p(row, "content_hash")))
    db = f"{_wei(_p(row, 'stake', 0))} wei staked"
    e = ch.staked.get(k)
    return db, (f"{e['amount']} wei staked by {e['contributor']}" if e else "no Staked"), bool(e) and \
        f"{e['amount']} wei staked" == db


def _decision(ch: _Chain, row, accept: bool):
    k = (int(_p(row, "datanet_id", 0)), _low(_p(row, "content_hash")))
    if accept:
        e = ch.accepted.get(k)
        return "accepted", ("accepted" if e else "no Accepted"), bool(e)
    e, stake = ch.rejected.get(k), ch.staked.get(k)
    if e is None:
        return "rejected", "no Rejected", False
    whole = stake is not None and e["slashed"] + e["returned"] == stake["amount"]
    return "rejected", f"rejected, {e['slashed']} slashed + {e['returned']} returned", whole


def _version(ch: _Chain, row):
    db = f"root {_low(_p(row, 'merkle_root'))} · {_p(row, 'record_count')} records"
    e = ch.versions.get((int(_p(row, "datanet_id", 0)), int(_p(row, "number", 0))))
    chain = f"root {_hx(e['merkleRoot'])} · {e['recordCount']} records" if e else "no VersionRegistered"
    return db, chain, db == chain


def _model(ch: _Chain, row):
    db = f"model {_p(row, 'model_id')} · version {_low(_p(row, 'version_root'))}"
    e = ch.models.get(_low(_p(row, "adapter_hash")))
    chain = f"model {e['modelId']} · version {_hx(e['versionRoot'])}" if e else "no ModelRegistered"
    return db, chain, db == chain


def _attribution(ch: _Chain, row):
    db = f"root {_low(_p(row, 'root'))}"
    e = ch.attribution.get(_low(_p(row, "adapter_hash")))
    chain = f"root {_hx(e['root'])}" if e else "no AttributionRootSet"
    return db, chain, db == chain


def _epoch(ch: _Chain, row):
    epoch = RewardEpoch.objects.filter(pk=_p(row, "epoch_id")).first()
    if epoch is None:
        return f"epoch {_p(row, 'epoch_id')} deleted", "", False
    funded = getattr(epoch, "funded_wei", None)
    db = f"root {_low(epoch.root)}" + (f" · funded {int(funded)}" if funded is not None else "")
    e = ch.epochs.get(epoch.pk)
    if e is None:  # a later epoch's root holds this one's totals: publishing it was skipped on purpose
        later = [n for n in ch.epochs if n > epoch.pk]
        return db, (f"superseded by epoch {min(later)}" if later else "no EpochPublished"), bool(later)
    chain = f"root {_hx(e['root'])}" + (f" · funded {e['funded']}" if "funded" in e and funded is not None else "")
    return db, chain, db == chain


def _claim(ch: _Chain, row):
    claim = RewardClaim.objects.select_related("epoch").filter(pk=_p(row, "claim_id")).first()
    if claim is None:
        return f"claim {_p(row, 'claim_id')} deleted", "", False
    total = int(getattr(claim, "cumulative_wei", 0) or claim.amount_wei)
    generation = int(_p(row, "generation", getattr(claim.epoch, "generation", 0)))
    got = ch.claimed.get((_low(claim.account), generation), 0)
    return f"{claim.account} claimed {total}", f"{claim.account} claimed {got}", got >= total


def _sweep(ch: _Chain, row):
    key = _p(row, "generation", _p(row, "epoch_id"))
    e = ch.swept.get(int(key)) if key is not None else None
    return f"generation {key} swept", (f"swept {e['amount']} wei" if e else "no Swept"), e is not None


def _proposal_id(row) -> int | None:
    from ledger.models import GovernanceProposal

    p = GovernanceProposal.objects.filter(pk=_p(row, "proposal_id")).first()
    pid = getattr(p, "proposal_id", None)
    return int(pid) if pid not in (None, "") else None


def _governance(ch: _Chain, row, seen: set, event: str):
    pid = _proposal_id(row)
    return f"proposal {pid} {event}", (f"{event}" if pid in seen else f"not {event}"), pid in seen


def _vote(ch: _Chain, row):
    from ledger.models import GovernanceVote

    vote = GovernanceVote.objects.select_related("proposal").filter(pk=_p(row, "vote_id")).first()
    if vote is None:
        return f"vote {_p(row, 'vote_id')} deleted", "", False
    pid = int(vote.proposal.proposal_id)
    cast = [s for (p, _), s in ch.votes.items() if p == pid]
    db = f"support {vote.support} on {pid}"
    return db, (f"votes cast {sorted(cast)}" if cast else "no VoteCast"), vote.support in cast


def _delegate(ch: _Chain, row):
    token = ch.c.get("OpenToken")
    account, delegatee = _p(row, "account"), _p(row, "delegatee")
    found = _events(token, "DelegateChanged", ch.start, ch.head, delegator=client.get_web3().to_checksum_address(account))
    latest = _low(found[-1]["toDelegate"]) if found else ""
    return f"{account} delegates to {delegatee}", f"delegates to {latest or 'nobody'}", latest == _low(delegatee)


def _grant(ch: _Chain, row):
    token = ch.c.get("OpenToken")
    w3 = client.get_web3()
    account, amount = w3.to_checksum_address(_p(row, "account")), int(_p(row, "amount_wei", 0))
    sender = w3.to_checksum_address(row.from_address) if row.from_address else None
    found = _events(token, "Transfer", ch.start, ch.head, to=account, **({"from": sender} if sender else {}))
    return f"{amount} wei to {account}", f"transfers {[e['value'] for e in found]}", any(e["value"] == amount for e in found)


def _timelock(ch: _Chain, row, seen: set, event: str):
    from ledger.models import GovernanceProposal

    p = GovernanceProposal.objects.filter(pk=_p(row, "proposal_id")).first()
    op = _low(getattr(p, "operation_id", ""))
    return f"operation {op or '?'} {event}", (event if op in seen else f"not {event}"), bool(op) and op in seen


CHECKS = {
    "datanet_create": _datanet,
    "contribution_stake": _stake,
    "contribution_accept": lambda ch, row: _decision(ch, row, True),
    "contribution_reject": lambda ch, row: _decision(ch, row, False),
    "version_register": _version,
    "model_register": _model,
    "attribution_root_set": _attribution,
    "epoch_publish": _epoch,
    "reward_claim": _claim,
    "epoch_sweep": _sweep,
    "governance_propose": lambda ch, row: _governance(ch, row, ch.proposals, "created"),
    "governance_queue": lambda ch, row: _governance(ch, row, ch.queued, "queued"),
    "governance_execute": lambda ch, row: _governance(ch, row, ch.executed, "executed"),
    "governance_vote": _vote,
    "governance_delegate": _delegate,
    "token_grant": _grant,
    "fee_split_schedule": lambda ch, row: _timelock(ch, row, ch.scheduled, "scheduled"),
    "fee_split_execute": lambda ch, row: _timelock(ch, row, ch.calls_executed, "executed"),
}


def _subject(row) -> str:
    p = row.payload or {}
    for key in ("content_hash", "adapter_hash", "epoch_id", "claim_id", "proposal_id", "vote_id", "datanet_id", "account"):
        if key in p:
            return f"{key} {str(p[key])[:18]}"
    return row.idempotency_key[:40]


def ledger_audit(*, per_kind: int | None = None) -> Audit:
    """Check confirmed and failed outbox rows (the latest `per_kind` of each kind, or all) against the chain.

    Never raises for the chain: a node that does not answer, or contracts not deployed, is `error`.
    """
    audit = Audit()
    try:
        w3, contracts, start = _read_contracts()
        ch = _Chain(contracts, start, client.rpc(lambda: w3.eth.block_number))
    except Exception as exc:  # the explorer shows what it could not read; the command exits 1
        logger.warning("ledger audit could not read the chain: %s", exc)
        audit.error = f"{exc.__class__.__name__}: {str(exc)[:300]}"
        return audit
    audit.pending = LedgerTransaction.objects.filter(status__in=[S.QUEUED, S.SENT]).count()
    kinds = LedgerTransaction.objects.order_by().values_list("kind", flat=True).distinct()
    for kind in sorted(set(kinds)):
        rows = LedgerTransaction.objects.filter(kind=kind, status__in=[S.CONFIRMED, S.FAILED]).order_by("-id")
        for row in rows[:per_kind] if per_kind else rows.iterator():
            check = CHECKS.get(kind)
            if check is None:
                database, chain, ok = "recorded", f"no audit for kind {kind!r}", False
            else:
                try:
                    database, chain, ok = check(ch, row)
                except Exception as exc:
                    database, chain, ok = "unreadable", f"{exc.__class__.__name__}: {str(exc)[:200]}", False
            if row.status == S.FAILED:  # the database recorded a change the chain was never given
                database, ok = f"failed: {row.last_error[:200]}", False
            audit.checks.append(Check(kind=kind, row_id=row.pk, subject=_subject(row), database=database,
                                      chain=chain, ok=bool(ok)))
    return audit
