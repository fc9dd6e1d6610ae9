"""Ledger services. Other apps write to the chain only through `enqueue`, and pay rewards through
`rewards_accrue`; they read the governance fee split with `fee_split_get`.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.addresses import address_problem, address_usable
from core.errors import ApplicationError
from core.merkle import standard_leaf, standard_proof, standard_tree
from ledger.models import ChainParameter, ContractDeployment, LedgerTransaction, RewardAccrual, RewardClaim, RewardEpoch
from ledger.tasks import outbox_send_task

logger = logging.getLogger(__name__)

WEI = Decimal(10**18)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
FEE_SPLIT_CACHE_SECONDS = 300
DEFAULT_FEE_SPLIT_BPS = (7000, 2000, 1000)  # contributors, developer, protocol: the value deployed
MAX_UINT128 = 2**128 - 1
MAX_FUNDED = 2**96 - 1  # RewardDistributor keeps a generation's funded total in a uint96 (79x OPEN's supply)
SWEEP_MARGIN = timedelta(minutes=5)

ERR_NO_ALLOCATIONS = "Nothing to accrue: allocations are empty."
ERR_BAD_AMOUNT = "Reward amounts must be positive and have at most 18 decimals."
ERR_EXTERNAL_WALLET = "This reward goes to your own wallet: claim it with the proof (GET /api/v1/ledger/claims/)."
ERR_NOT_PUBLISHED = "The epoch is not on-chain yet; try again in a minute."
ERR_ALREADY = "This reward is already claimed or its claim is queued."
ERR_EXPIRED = "The claim window of this epoch has closed; unclaimed rewards went back to the treasury."


def enqueue(kind: str, payload: dict, idempotency_key: str) -> LedgerTransaction:
    """Record a chain write in the outbox, inside the caller's database transaction.

    Calling again with the same key returns the first row unchanged: a retried request never
    doubles a write. The ledger worker picks the row up after the transaction commits.
    """
    row, _ = LedgerTransaction.objects.get_or_create(
        idempotency_key=idempotency_key, defaults={"kind": kind, "payload": payload}
    )
    transaction.on_commit(_kick_sender)
    return row


def _kick_sender() -> None:
    # Sending is best effort; the beat sweep retries.
    try:
        outbox_send_task.apply_async(queue="ledger")
    except Exception:  # broker down: the periodic sweep sends it later; the row is safe
        logger.warning("could not queue the outbox sender; the beat sweep will", exc_info=True)


# --- wallets ------------------------------------------------------------------------------------

def _custodial_secret() -> bytes:
    return (settings.LEDGER_CUSTODIAL_SECRET or settings.SECRET_KEY).encode()


def custodial_key_for_user_id(user_id: int) -> str:
    """The demo wallet key of a user: HMAC-SHA256(secret, "custodial:<id>") reduced into secp256k1's range.

    Deterministic, so nothing is stored; whoever holds the secret holds every demo wallet. Never logged.
    """
    digest = hmac.new(_custodial_secret(), f"custodial:{user_id}".encode(), hashlib.sha256).digest()
    scalar = int.from_bytes(digest, "big") % (SECP256K1_N - 1) + 1
    return "0x" + scalar.to_bytes(32, "big").hex()


def custodial_address_for_user_id(user_id: int) -> str:
    from eth_account import Account

    return Account.from_key(custodial_key_for_user_id(user_id)).address


def _stored_wallet(user) -> str:
    profile = getattr(user, "profile", None)
    return (getattr(profile, "wallet_address", "") or "") if profile is not None else ""


def user_wallet(user) -> str:
    """The user's own wallet address, or "" when they have none or it cannot hold tokens (the zero address,
    a precompile: saved before the form refused them): rewards then go to the custodial address instead."""
    own = _stored_wallet(user)
    return own if address_usable(own) else ""


def wallet_ignored_reason(user) -> str:
    """Why the user's saved wallet is not used ("" when it is, or when none is saved), for their pages."""
    own = _stored_wallet(user)
    return address_problem(own) if own else ""


def address_for_user(user) -> str:
    """Where a user's tokens go: their own wallet if set, else their custodial demo wallet."""
    from web3 import Web3

    own = user_wallet(user)
    return Web3.to_checksum_address(own) if own else custodial_address_for_user_id(user.pk)


# --- contracts ----------------------------------------------------------------------------------

def contract_addresses(*, chain_id: int) -> dict[str, str]:
    return dict(ContractDeployment.objects.filter(chain_id=chain_id).values_list("name", "address"))


# --- rewards ------------------------------------------------------------------------------------

def to_wei(amount: Decimal | str | int) -> int:
    value = Decimal(str(amount))
    wei = value * WEI
    if wei != wei.to_integral_value():
        raise ApplicationError(ERR_BAD_AMOUNT, extra={"amount": str(amount)})
    return int(wei)


def rewards_accrue(
    *, allocations: dict[int, Decimal], source: str, reference: str, model_id: int | None = None
) -> list[RewardAccrual]:
    """Owe each user (id -> OPEN) for one event; idempotent on (source, reference, user).

    A repeated call returns the existing rows unchanged. Raises ApplicationError for empty or
    non-positive allocations; nothing is written then.
    """
    if not allocations:
        raise ApplicationError(ERR_NO_ALLOCATIONS)
    clean = {}
    for user_id, amount in allocations.items():
        try:
            value = Decimal(str(amount))
        except Exception:
            raise ApplicationError(ERR_BAD_AMOUNT, extra={"user_id": user_id}) from None
        if not value.is_finite() or value <= 0 or to_wei(value) <= 0:
            raise ApplicationError(ERR_BAD_AMOUNT, extra={"user_id": user_id, "amount": str(amount)})
        clean[int(user_id)] = value
    rows = []
    with transaction.atomic():
        for user_id, value in clean.items():
            row, _ = RewardAccrual.objects.get_or_create(
                source=source, reference=reference, user_id=user_id,
                defaults={"amount": value, "model_id": model_id},
            )
            rows.append(row)
    return rows


REWARD_LEAF_TYPES = ("address", "uint256")  # (account, cumulative wei): RewardDistributor.leaf


def reward_leaf(account: str, cumulative_wei: int) -> bytes:
    """The RewardDistributor leaf: keccak256(bytes.concat(keccak256(abi.encode(account, uint256 cumulative))))."""
    return standard_leaf(REWARD_LEAF_TYPES, (account, cumulative_wei))


def reward_tree(totals: dict[str, int]):
    """The epoch tree of {account: cumulative wei}: OpenZeppelin's StandardMerkleTree (core.merkle.standard_tree),
    values ordered by account so the same totals always give the same dump."""
    return standard_tree(sorted(totals.items()), REWARD_LEAF_TYPES)


def epoch_totals(epoch: RewardEpoch | None) -> dict[str, int]:
    """{account: cumulative wei} of an epoch's stored tree (exact: the dump keeps integers as strings)."""
    if epoch is None or not epoch.tree:
        return {}
    return {v["value"][0]: int(v["value"][1]) for v in epoch.tree["values"]}


def epoch_tree_download(*, epoch: RewardEpoch) -> dict:
    """The epoch's full tree as `StandardMerkleTree.dump()` JSON (`StandardMerkleTree.load` reads it as is), plus
    the root, the epoch's identity and every value's proof (`proofs[i]` proves `values[i]`)."""
    dump = dict(epoch.tree)
    return {**dump, "root": epoch.root, "epoch": epoch.pk, "generation": epoch.generation, "status": epoch.status,
            "proofs": [standard_proof(dump, i) for i in range(len(dump.get("values", [])))]}


def rewards_epoch_close(*, now=None) -> RewardEpoch | None:
    """Settle every unsettled accrual: each account's cumulative total in a new tree, its rows, a publish row.

    The tree holds every account of the generation (earlier totals carried over, this epoch's earnings added), so
    one claim against the newest root collects everything. All in one database transaction; None when there is
    nothing to settle, or while a sweep is on its way (it starts a new generation: totals restart from zero).
    """
    now = now or timezone.now()
    with transaction.atomic():
        latest = RewardEpoch.objects.select_for_update().order_by("-id").first()
        if latest is not None and latest.status == RewardEpoch.Status.SWEEPING:
            return None
        accruals = list(RewardAccrual.objects.select_for_update(of=("self",)).filter(epoch__isnull=True).select_related("user__profile"))
        if not accruals:
            return None
        generation = 0 if latest is None else latest.generation + (latest.status == RewardEpoch.Status.SWEPT)
        totals = epoch_totals(latest) if latest is not None and latest.generation == generation else {}
        earned: dict[str, int] = defaultdict(int)
        owner: dict[str, object] = {}
        for a in accruals:
            account = address_for_user(a.user)
            earned[account] += to_wei(a.amount)
            owner.setdefault(account, a.user)
        for account, wei in earned.items():
            totals[account] = totals.get(account, 0) + wei
        if sum(totals.values()) > MAX_FUNDED:
            raise ApplicationError("The generation's rewards exceed the contract's uint96 funding range.")
        tree = reward_tree(totals)
        dump = tree.dump()
        index = {v["value"][0]: i for i, v in enumerate(dump["values"])}
        epoch = RewardEpoch.objects.create(
            root="0x" + tree.root.hex(), total_wei=Decimal(sum(earned.values())), generation=generation, tree=dump,
            deadline=now + timedelta(days=settings.LEDGER_CLAIM_WINDOW_DAYS),
        )
        RewardClaim.objects.bulk_create([
            RewardClaim(
                epoch=epoch, user=owner[acct], account=acct, amount_wei=Decimal(wei),
                cumulative_wei=Decimal(totals[acct]), custodial=not user_wallet(owner[acct]),
                proof=["0x" + p.hex() for p in tree.proof(index[acct])],
            )
            for acct, wei in earned.items()
        ])
        RewardAccrual.objects.filter(pk__in=[a.pk for a in accruals]).update(epoch=epoch)
        enqueue("epoch_publish", {"epoch_id": epoch.pk, "generation": generation}, f"epoch:{epoch.pk}:publish")
    return epoch


def reward_claim_request(*, claim: RewardClaim, user) -> RewardClaim:
    """The server claims for a custodial wallet through the outbox; external wallets claim themselves.

    Cumulative: the one on-chain claim collects this row and every other unclaimed row of the account in the
    generation's published epochs, so they are all queued together (one row in the outbox per account and epoch).
    """
    if claim.user_id != user.pk:
        raise ApplicationError("This is not your reward.", status_code=403)
    if not claim.custodial:
        raise ApplicationError(ERR_EXTERNAL_WALLET, extra={"proof": claim.proof})
    with transaction.atomic():
        locked = RewardClaim.objects.select_for_update(of=("self",)).select_related("epoch").get(pk=claim.pk)
        if locked.epoch.status in (RewardEpoch.Status.SWEEPING, RewardEpoch.Status.SWEPT):
            raise ApplicationError(ERR_EXPIRED)
        if locked.epoch.status != RewardEpoch.Status.PUBLISHED:
            raise ApplicationError(ERR_NOT_PUBLISHED)
        if locked.status != RewardClaim.Status.UNCLAIMED:
            raise ApplicationError(ERR_ALREADY)
        generation = locked.epoch.generation
        rows = RewardClaim.objects.select_for_update(of=("self",)).filter(
            account=locked.account, status=RewardClaim.Status.UNCLAIMED, epoch__generation=generation,
            epoch__status=RewardEpoch.Status.PUBLISHED)
        newest = rows.order_by("-epoch_id").first() or locked
        rows.update(status=RewardClaim.Status.QUEUED)
        locked.status = RewardClaim.Status.QUEUED
        enqueue("reward_claim", {"claim_id": newest.pk, "account": locked.account, "generation": generation,
                                 "cumulative_wei": str(int(newest.cumulative_wei))},
                f"claim:{generation}:{locked.account}:{newest.epoch_id}")
    return locked


# --- fee split ----------------------------------------------------------------------------------

_fee_split_memo: dict[str, tuple[float, dict[str, Decimal]]] = {}  # provider URI -> (monotonic time, fractions)
FEE_SPLIT_DOWN_RETRY_SECONDS = 30  # while the chain is down, the fallback is reused this long


def fee_split_cache_clear() -> None:
    _fee_split_memo.clear()


def fee_split_get(*, refresh: bool = False) -> dict[str, Decimal]:
    """The fee split governance set on-chain (fractions summing to 1).

    Cached in the process and in the database for FEE_SPLIT_CACHE_SECONDS, so a paid inference costs no RPC.
    When the chain does not answer: the database's last value, else the deployed default (reused for
    FEE_SPLIT_DOWN_RETRY_SECONDS, so callers do not each wait through the client's retries). Never raises.
    """
    import time

    from ledger import client

    def as_fractions(bps) -> dict[str, Decimal]:
        c, d, p = (Decimal(int(x)) / Decimal(10_000) for x in bps)
        return {"contributors": c, "developer": d, "protocol": p}

    uri = settings.WEB3_PROVIDER_URI or ""
    memo = _fee_split_memo.get(uri)
    if memo and not refresh and time.monotonic() < memo[0]:
        return memo[1]
    try:
        w3 = client.get_web3()
        chain_id = client.rpc(lambda: w3.eth.chain_id)
        cached = ChainParameter.objects.filter(chain_id=chain_id, name="fee_split").first()
        fresh = cached and (timezone.now() - cached.fetched_at).total_seconds() < FEE_SPLIT_CACHE_SECONDS
        if cached and fresh and not refresh:
            bps = cached.value["bps"]
        else:
            address = contract_addresses(chain_id=chain_id).get("RewardDistributor")
            if not address:
                raise client.ChainConfigError("RewardDistributor is not deployed")
            bps = list(client.rpc(client.contract(w3, "RewardDistributor", address).functions.feeSplit().call))
            ChainParameter.objects.update_or_create(chain_id=chain_id, name="fee_split", defaults={"value": {"bps": bps}})
        ttl = FEE_SPLIT_CACHE_SECONDS
    except client.ChainError:
        last = ChainParameter.objects.filter(name="fee_split").order_by("-fetched_at").first()
        logger.warning("fee split: chain unavailable, using %s", "the last value read" if last else "the default")
        bps, ttl = (last.value["bps"] if last else DEFAULT_FEE_SPLIT_BPS), FEE_SPLIT_DOWN_RETRY_SECONDS
    fractions = as_fractions(bps)
    _fee_split_memo[uri] = (time.monotonic() + ttl, fractions)
    return fractions


def rewards_epochs_sweep(*, now=None) -> list[RewardEpoch]:
    """Queue the sweep of the generation once its newest epoch's deadline passed (no epoch published since):
    what is unclaimed returns to the treasury and totals restart from zero. While epochs keep coming, earlier
    rewards stay claimable (cumulative); the contract refuses an earlier sweep (ClaimWindowOpen)."""
    now = now or timezone.now()
    with transaction.atomic():
        latest = RewardEpoch.objects.select_for_update().order_by("-id").first()
        # the margin: the chain's clock may trail ours, and sweeping early reverts (ClaimWindowOpen)
        if latest is None or latest.status != RewardEpoch.Status.PUBLISHED or latest.deadline >= now - SWEEP_MARGIN:
            return []
        swept = list(RewardEpoch.objects.select_for_update().filter(
            generation=latest.generation, status=RewardEpoch.Status.PUBLISHED))
        RewardEpoch.objects.filter(pk__in=[e.pk for e in swept]).update(status=RewardEpoch.Status.SWEEPING)
        enqueue("epoch_sweep", {"epoch_id": latest.pk, "generation": latest.generation},
                f"generation:{latest.generation}:sweep")
    return swept


# --- governance ---------------------------------------------------------------------------------
# Proposals, delegation, votes, queue and execute by OPEN holders, and the governed parameters: ledger.governance.


# --- operations ---------------------------------------------------------------------------------

ERR_NOT_FAILED = "Only a failed transaction can be retried."


def ledger_transaction_retry(*, row: LedgerTransaction) -> LedgerTransaction:
    """Queue a failed outbox row again (after fixing its cause); the sender re-plans it from the chain,
    so a write that did land meanwhile is confirmed, not repeated."""
    with transaction.atomic():
        locked = LedgerTransaction.objects.select_for_update().get(pk=row.pk)
        if locked.status != LedgerTransaction.Status.FAILED:
            raise ApplicationError(ERR_NOT_FAILED, status_code=409)  # the row's state, not the request, is wrong
        locked.status = LedgerTransaction.Status.QUEUED
        locked.attempts = 0
        locked.steps = 0
        locked.tx_hash = locked.raw_tx = ""
        locked.nonce = None
        locked.last_error = ""
        locked.save()
        transaction.on_commit(_kick_sender)
    return locked
