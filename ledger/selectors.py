"""Ledger reads for pages and the API. Chain reads never raise: a node that is down shows as such."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum

from core.fields import exact_sum, exact_sums_by
from ledger import client
from ledger.models import ContractDeployment, LedgerTransaction, RewardAccrual, RewardClaim, RewardEpoch
from ledger.services import (
    WEI,
    address_for_user,
    custodial_address_for_user_id,
    user_wallet,
    wallet_ignored_reason,
)

logger = logging.getLogger(__name__)
COMPARE_LIMIT = 10  # on-chain records checked per page view: each is an RPC call


def chain_overview() -> dict:
    """Node status, this chain's contract addresses and the outbox counts per status."""
    status = client.chain_status()
    contracts = []
    if status["ok"]:
        contracts = list(ContractDeployment.objects.filter(chain_id=status["chain_id"]))
    return {"status": status, "contracts": contracts, "counts": transaction_counts()}


def transaction_counts() -> dict[str, int]:
    counts = dict(LedgerTransaction.objects.values_list("status").annotate(n=Count("id")))
    return {s: counts.get(s, 0) for s in LedgerTransaction.Status.values}


def transaction_list(*, status: str = "", kind: str = ""):
    qs = LedgerTransaction.objects.order_by("-id")
    if status:
        qs = qs.filter(status=status)
    if kind:
        qs = qs.filter(kind=kind)
    return qs


def transaction_get(*, idempotency_key: str) -> LedgerTransaction | None:
    """The outbox row of one chain write, by the key its app enqueued it with (None: never enqueued)."""
    return LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()


def transactions_get(*, idempotency_keys) -> dict[str, LedgerTransaction]:
    """{key: outbox row} of the chain writes an app enqueued under these keys (keys never enqueued are absent)."""
    return {r.idempotency_key: r for r in LedgerTransaction.objects.filter(idempotency_key__in=list(idempotency_keys))}


def epoch_list():
    return RewardEpoch.objects.defer("tree").annotate(  # the tree is for the download, not the list
        accounts=Count("claims", distinct=True),
        claimed_wei=Sum("claims__amount_wei", filter=Q(claims__status=RewardClaim.Status.CLAIMED)),
    ).order_by("-id")


def accrual_list(*, user):
    return RewardAccrual.objects.filter(user=user).select_related("epoch").order_by("-id")


def claim_list(*, user):
    return RewardClaim.objects.filter(user=user).select_related("epoch").order_by("-epoch_id")


def earnings_by_model(*, user) -> list[dict]:
    """OPEN earned per (model, epoch); epoch None means not settled yet."""
    accruals = RewardAccrual.objects.filter(user=user)
    totals = exact_sums_by(accruals, "amount", by=("model_id", "epoch_id"))
    rows = list(accruals.values("model_id", "epoch_id").annotate(events=Count("id")).order_by("-epoch_id", "model_id"))
    for row in rows:
        row["total"] = totals[(row["model_id"], row["epoch_id"])]
    return rows


@dataclass
class Balances:
    address: str
    custodial: bool
    custodial_address: str
    on_chain: Decimal | None  # None: the chain did not answer
    pending: Decimal  # accrued, not in an epoch yet
    claimable: Decimal  # in a published epoch, not claimed
    claimed: Decimal
    chain_error: str = ""
    extra: dict = field(default_factory=dict)


def balances_for(*, user) -> Balances:
    pending = exact_sum(RewardAccrual.objects.filter(user=user, epoch__isnull=True), "amount")
    claims = RewardClaim.objects.filter(user=user)
    claimable = exact_sum(claims.filter(status__in=[RewardClaim.Status.UNCLAIMED, RewardClaim.Status.QUEUED],
                                        epoch__status=RewardEpoch.Status.PUBLISHED), "amount_wei")
    claimed = exact_sum(claims.filter(status=RewardClaim.Status.CLAIMED), "amount_wei")
    address = address_for_user(user)
    on_chain, error = None, ""
    try:
        signer_w3 = client.get_web3()
        chain_id = client.rpc(lambda: signer_w3.eth.chain_id)
        token = ContractDeployment.objects.filter(chain_id=chain_id, name="OpenToken").first()
        if token is None:
            error = "contracts are not deployed on this chain"
        else:
            raw = client.rpc(client.contract(signer_w3, "OpenToken", token.address).functions.balanceOf(address).call)
            on_chain = Decimal(raw) / WEI
    except client.ChainError as exc:
        error = str(exc)
    return Balances(address=address, custodial=not user_wallet(user), custodial_address=custodial_address_for_user_id(user.pk),
                    on_chain=on_chain, pending=pending, claimable=Decimal(claimable) / WEI,
                    claimed=Decimal(claimed) / WEI, chain_error=error,
                    extra={"wallet_ignored": wallet_ignored_reason(user)})


def _read_contracts() -> dict:
    """Read-only contracts of the configured chain: no signer, so the explorer needs no key."""
    w3 = client.get_web3()
    chain_id = client.rpc(lambda: w3.eth.chain_id)
    addresses = dict(ContractDeployment.objects.filter(chain_id=chain_id).values_list("name", "address"))
    if not {"DatanetRegistry", "ModelRegistry"} <= set(addresses):
        raise client.ChainConfigError(f"contracts not deployed on chain {chain_id}")
    return {name: client.contract(w3, name, address) for name, address in addresses.items()}


def _latest_payloads(kind: str) -> list[dict]:
    rows = LedgerTransaction.objects.filter(kind=kind).order_by("-id")[:COMPARE_LIMIT]
    return [row.payload or {} for row in rows]


def onchain_compare() -> dict:
    """The latest Datanets and models, as the apps asked the chain to hold them (their outbox rows' payloads:
    the ledger reads no other app's tables) beside what the chain holds, with whether they agree."""
    out = {"ok": True, "error": "", "datanets": [], "models": []}
    try:
        c = _read_contracts()
    except client.ChainError as exc:
        return {**out, "ok": False, "error": str(exc)}
    reg, models = c["DatanetRegistry"], c["ModelRegistry"]
    users = get_user_model().objects.select_related("profile")
    try:
        for p in _latest_payloads("datanet_create"):
            owner = users.filter(pk=p.get("owner_id")).first()
            owner_address, bps, exists, min_stake = reg.functions.datanets(int(p["datanet_id"])).call()[:4]
            db = {"owner": address_for_user(owner) if owner else "", "slash_bps": int(p.get("slash_bps", -1)),
                  "min_stake": int(Decimal(str(p.get("min_stake", "0"))) * WEI)}
            chain = {"owner": owner_address, "slash_bps": bps, "min_stake": min_stake} if exists else None
            obj = {"name": p.get("name", f"Datanet {p['datanet_id']}"), "slug": p.get("slug", "")}
            out["datanets"].append({"obj": obj, "db": db, "chain": chain, "agree": chain == db})
        for p in _latest_payloads("model_register"):
            adapter = str(p.get("adapter_hash", "")).removeprefix("0x")
            rec = models.functions.getModel(bytes.fromhex(adapter) if len(adapter) == 64 else b"\0" * 32).call()
            developer = users.filter(pk=p.get("developer_id")).first()
            db = {"model_id": p.get("model_id"), "developer": address_for_user(developer) if developer else "",
                  "version_root": str(p.get("version_root", "")).lower()}
            chain = None
            if rec[2]:  # registeredAt
                chain = {"model_id": rec[0], "developer": rec[1], "version_root": "0x" + bytes(rec[3]).hex()}
            obj = {"name": p.get("name", f"model {p.get('model_id')}")}
            out["models"].append({"obj": obj, "db": db, "chain": chain, "agree": chain == db})
    except Exception as exc:  # the explorer shows what it could read
        logger.warning("onchain compare failed: %s", exc)
        out.update(ok=False, error=f"{exc.__class__.__name__}: {str(exc)[:200]}")
    return out


def model_attribution_root(*, adapter_hash: str) -> dict:
    """The chain's record of a model's attribution root: {ok, error, registered, model_id, attribution_root}.

    Never raises: a node that is down or contracts not deployed give ok False with the reason.
    """
    try:
        adapter = bytes.fromhex(adapter_hash.removeprefix("0x"))
        rec = client.rpc(_read_contracts()["ModelRegistry"].functions.getModel(adapter).call)
    except client.ChainError as exc:
        return {"ok": False, "error": str(exc), "registered": False, "model_id": None, "attribution_root": None}
    except Exception as exc:  # a bad hash, an old deployment without the field
        return {"ok": False, "error": f"{exc.__class__.__name__}: {str(exc)[:200]}", "registered": False,
                "model_id": None, "attribution_root": None}
    return {"ok": True, "error": "", "registered": bool(rec[2]), "model_id": int(rec[0]),
            "attribution_root": "0x" + bytes(rec[4]).hex()}
