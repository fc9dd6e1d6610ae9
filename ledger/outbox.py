"""The outbox sender: turns queued `LedgerTransaction` rows into chain transactions, in id order.

Per row: plan the next call from the contract's state (None: the write is already on-chain) -> sign ->
save tx hash, nonce and the signed bytes (status `sent`) -> broadcast -> wait for the receipt -> plan
again (crash points, in order: after_sign, after_record, after_send, after_receipt; mid_epoch for an
epoch publication): None means `confirmed`; another call (e.g. appoint the curator, then relay the decision) means
`queued` for the next step. A crash before the save leaves the row `queued` and nothing broadcast; a
crash after it leaves the row `sent`, and `reconcile` settles it on restart: by the receipt of the saved
hash, by the contract's state, by rebroadcasting the saved bytes while their nonce is still free, or by
queueing the row again when that nonce was used by something else. Because the plan is re-derived
from the chain every time, a write is never repeated and never lost.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.merkle import standard_proof
from ledger import client
from ledger.deploy import deployed_contracts
from ledger.models import LedgerTransaction, RewardClaim, RewardEpoch
from ledger.services import (
    MAX_UINT128,
    address_for_user,
    custodial_address_for_user_id,
    custodial_key_for_user_id,
    to_wei,
)

logger = logging.getLogger(__name__)

CRASH_POINTS = ("after_sign", "after_record", "after_send", "after_receipt", "mid_epoch")
MAX_ATTEMPTS = 8
MAX_STEPS = 4
MAX_ROWS_PER_RUN = 500
ADVISORY_LOCK_KEY = 0x4C454447  # "LEDG": one sender at a time on PostgreSQL
MAX_UINT256 = 2**256 - 1
Status = LedgerTransaction.Status


class PermanentError(Exception):
    """The row can never be sent as it is (missing rows, bad hashes, a contract rejection)."""


class SimulatedCrash(BaseException):  # noqa: N818 - it is not an error to handle, it ends the "process"
    """Raised by a test's crash hook; BaseException so no handler in here swallows it."""


# Tests set this to a callable(point, row) that raises SimulatedCrash: an in-process crash.
crash_hook: Callable[[str, LedgerTransaction], None] | None = None


def _crash_point(point: str, row: LedgerTransaction) -> None:
    if crash_hook is not None:
        crash_hook(point, row)
    if settings.LEDGER_CRASH_AT == point and settings.DEBUG:
        logger.error("LEDGER_CRASH_AT=%s: killing the worker at row %s", point, row.pk)
        pgid = os.getpgid(0)
        if os.getppid() == pgid:  # a pool child of a worker that leads its own group: take it all down
            os.killpg(pgid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Ctx:
    signer: client.Signer
    c: dict

    @property
    def w3(self):
        return self.signer.w3


def _b32(value, field: str) -> bytes:
    text = str(value or "")
    raw = text.removeprefix("0x")
    if len(raw) != 64:
        raise PermanentError(f"{field} must be 0x followed by 64 hex digits, got {text[:80]!r}")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise PermanentError(f"{field} is not hexadecimal: {text[:80]!r}") from None


def _get(model, pk, what: str):
    try:
        return model.objects.get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError):
        raise PermanentError(f"{what} {pk!r} does not exist") from None


def _user(pk):
    from django.contrib.auth import get_user_model

    return _get(get_user_model(), pk, "user")


def _p(row, key):
    try:
        return row.payload[key]
    except (KeyError, TypeError):
        raise PermanentError(f"payload has no {key!r}") from None


def _wei(value, field: str) -> int:
    try:
        wei = to_wei(Decimal(str(value)))
    except Exception:
        raise PermanentError(f"{field} is not an amount of OPEN: {value!r}") from None
    if wei < 0 or wei > MAX_UINT128:
        raise PermanentError(f"{field} out of range: {value!r}")
    return wei


def _allowance_call(ctx: Ctx, spender, amount: int):
    token = ctx.c["OpenToken"]
    if token.functions.allowance(ctx.signer.address, spender.address).call() < amount:
        return token.functions.approve(spender.address, MAX_UINT256)
    return None


# --- planners: the next call a row needs, from the chain's state; None when it is all done ---------

def _plan_datanet_create(ctx: Ctx, row):
    """The payload carries the Datanet's terms, owner and curators as the datanets app set them (the ledger
    reads no other app's rows)."""
    reg = ctx.c["DatanetRegistry"]
    datanet_id = int(_p(row, "datanet_id"))
    if reg.functions.datanets(datanet_id).call()[2]:
        return None
    curators = set()
    for user_id in _p(row, "curator_ids"):
        curators.add(custodial_address_for_user_id(int(user_id)))  # the server signs decisions with it
        curators.add(address_for_user(_user(user_id)))  # and a curator's own wallet may decide directly
    if len(curators) > 32:
        raise PermanentError("a Datanet has at most 32 on-chain curator addresses")
    bps = int(_p(row, "slash_bps"))
    if not 0 <= bps <= 10_000:
        raise PermanentError(f"slash_bps out of range: {bps}")
    return reg.functions.createDatanet(
        datanet_id, address_for_user(_user(_p(row, "owner_id"))), sorted(curators), _wei(_p(row, "min_stake"), "min_stake"),
        bps)


STAKE_NONE, STAKE_PENDING, STAKE_ACCEPTED, STAKE_REJECTED = range(4)


def _plan_contribution_stake(ctx: Ctx, row):
    reg = ctx.c["DatanetRegistry"]
    datanet_id = int(_p(row, "datanet_id"))
    content = _b32(_p(row, "content_hash"), "content_hash")
    amount = _wei(_p(row, "stake"), "stake")
    if reg.functions.stakes(datanet_id, content).call()[3] != STAKE_NONE:
        return None
    if not reg.functions.datanets(datanet_id).call()[2]:
        raise PermanentError(f"datanet {datanet_id} is not on-chain")
    approve = _allowance_call(ctx, reg, amount)
    if approve is not None:
        return approve
    contributor = _user(_p(row, "contributor_id"))
    return reg.functions.stake(datanet_id, content, address_for_user(contributor), amount)


def _plan_decision(ctx: Ctx, row, accept: bool):
    from eth_account import Account

    reg = ctx.c["DatanetRegistry"]
    datanet_id = int(_p(row, "datanet_id"))
    content = _b32(_p(row, "content_hash"), "content_hash")
    status = reg.functions.stakes(datanet_id, content).call()[3]
    wanted = STAKE_ACCEPTED if accept else STAKE_REJECTED
    if status == wanted:
        return None
    if status != STAKE_PENDING:
        raise PermanentError(f"the stake on {content.hex()[:12]} is {['absent', 'pending', 'accepted', 'rejected'][status]} on-chain")
    decider = int(_p(row, "decider_id"))  # the deciding curator, or the owner (datanets sets it)
    address = custodial_address_for_user_id(decider)
    if not reg.functions.isCurator(datanet_id, address).call():
        return reg.functions.setCurator(datanet_id, address, True)
    digest = reg.functions.decisionDigest(datanet_id, content, accept).call()
    signature = Account.unsafe_sign_hash(digest, custodial_key_for_user_id(decider)).signature
    return reg.functions.decideBySig(datanet_id, content, accept, bytes(signature))


def _plan_version_register(ctx: Ctx, row):
    reg = ctx.c["DatanetRegistry"]
    datanet_id, number = int(_p(row, "datanet_id")), int(_p(row, "number"))
    root = _b32(_p(row, "merkle_root"), "merkle_root")
    if reg.functions.versions(datanet_id, number).call()[0] != b"\0" * 32:
        return None
    return reg.functions.registerVersion(datanet_id, number, root, int(_p(row, "record_count")))


def _plan_model_register(ctx: Ctx, row):
    reg = ctx.c["ModelRegistry"]
    adapter = _b32(_p(row, "adapter_hash"), "adapter_hash")
    if reg.functions.isRegistered(adapter).call():
        return None
    developer = _user(_p(row, "developer_id"))
    base_model = str(_p(row, "base_model"))[:200]
    return reg.functions.registerModel(
        adapter, int(_p(row, "model_id")), base_model, _b32(_p(row, "version_root"), "version_root"),
        _b32(_p(row, "attribution_root"), "attribution_root"), address_for_user(developer))


def _plan_attribution_root_set(ctx: Ctx, row):
    """Publish a model's attribution (weights) root, once: done when the chain holds this root."""
    reg = ctx.c["ModelRegistry"]
    adapter = _b32(_p(row, "adapter_hash"), "adapter_hash")
    root = _b32(_p(row, "root"), "root")
    if root == b"\0" * 32:
        raise PermanentError("root must not be zero")
    on_chain = reg.functions.getModel(adapter).call()
    if not on_chain[2]:  # registeredAt; model_register rows are sent first, so this one failed
        raise PermanentError(f"model {_p(row, 'model_id')} is not registered on-chain")
    current = bytes(on_chain[4])
    if current == root:
        return None
    if current != b"\0" * 32:
        raise PermanentError(f"model {_p(row, 'model_id')} already has attribution root 0x{current.hex()} on-chain")
    return reg.functions.setAttributionRoot(adapter, root, str(_p(row, "uri"))[:300])


def _plan_epoch_publish(ctx: Ctx, row):
    """Make the epoch's root current, funded up to its cumulative total. Done once the contract's current epoch is
    this one or a later one (a later root already holds this epoch's totals, funded)."""
    dist = ctx.c["RewardDistributor"]
    epoch = _get(RewardEpoch, _p(row, "epoch_id"), "reward epoch")
    if dist.functions.currentEpoch().call() >= epoch.pk:
        return None
    funded_on_chain, _, _, generation = dist.functions.state().call()
    if generation != epoch.generation:
        raise PermanentError(f"epoch {epoch.pk} is of generation {epoch.generation}, the chain is at {generation}")
    funded = epoch.funded_wei
    approve = _allowance_call(ctx, dist, max(0, funded - funded_on_chain))
    if approve is not None:
        return approve
    return dist.functions.publishEpoch(epoch.pk, epoch.generation, _b32(epoch.root, "root"), funded,
                                       int(epoch.deadline.timestamp()))


def _plan_reward_claim(ctx: Ctx, row):
    """Claim the account's cumulative total with its leaf in the contract's current root (a newer epoch may have
    replaced the one the request saw: its leaf holds at least as much). Done once `claimed` reaches the total."""
    dist = ctx.c["RewardDistributor"]
    claim = _get(RewardClaim, _p(row, "claim_id"), "reward claim")
    account = ctx.w3.to_checksum_address(claim.account)
    generation = int(row.payload.get("generation", claim.epoch.generation))
    if dist.functions.state().call()[3] != generation:
        raise PermanentError(f"generation {generation} was swept: its unclaimed rewards went to the treasury")
    if dist.functions.claimed(generation, account).call() >= int(claim.cumulative_wei):
        return None
    current = _get(RewardEpoch, dist.functions.currentEpoch().call(), "current reward epoch")
    values = current.tree.get("values", [])
    index = next((i for i, v in enumerate(values) if v["value"][0].lower() == account.lower()), None)
    if index is None:
        raise PermanentError(f"{account} has no leaf in epoch {current.pk}")
    proof = [_b32(p, "proof") for p in standard_proof(current.tree, index)]
    return dist.functions.claim(account, int(values[index]["value"][1]), proof)


def _plan_epoch_sweep(ctx: Ctx, row):
    dist = ctx.c["RewardDistributor"]
    generation = int(row.payload.get("generation", 0))
    if dist.functions.state().call()[3] > generation:
        return None
    if dist.functions.root().call() == b"\0" * 32:
        raise PermanentError(f"generation {generation} has no root on-chain")
    return dist.functions.sweep()


def _epoch_published(ctx: Ctx, row) -> None:
    RewardEpoch.objects.filter(pk=row.payload.get("epoch_id")).update(status=RewardEpoch.Status.PUBLISHED)


def _epoch_swept(ctx: Ctx, row) -> None:
    """The sweep closes the whole generation (cumulative totals): its epochs are swept, open claims expired."""
    epochs = RewardEpoch.objects.filter(generation=int(row.payload.get("generation", 0)), pk__lte=row.payload.get("epoch_id"))
    RewardEpoch.objects.filter(pk__in=epochs.values("pk")).update(status=RewardEpoch.Status.SWEPT)
    RewardClaim.objects.filter(epoch__in=epochs, status__in=[RewardClaim.Status.UNCLAIMED, RewardClaim.Status.QUEUED]) \
        .update(status=RewardClaim.Status.EXPIRED)


def _claim_done(ctx: Ctx, row) -> None:
    """Every row of the account that the on-chain cumulative `claimed` covers is paid (one claim, many epochs)."""
    claim = RewardClaim.objects.select_related("epoch").filter(pk=row.payload.get("claim_id")).first()
    if claim is None:
        return
    generation = int(row.payload.get("generation", claim.epoch.generation))
    paid = ctx.c["RewardDistributor"].functions.claimed(generation, ctx.w3.to_checksum_address(claim.account)).call()
    covered = [c.pk for c in RewardClaim.objects.filter(account=claim.account, epoch__generation=generation)
               .exclude(status=RewardClaim.Status.CLAIMED) if int(c.cumulative_wei) <= paid]
    RewardClaim.objects.filter(pk__in=covered).update(
        status=RewardClaim.Status.CLAIMED, claimed_at=timezone.now())


PLANNERS: dict[str, Callable] = {
    "datanet_create": _plan_datanet_create,
    "contribution_stake": _plan_contribution_stake,
    "contribution_accept": lambda ctx, row: _plan_decision(ctx, row, True),
    "contribution_reject": lambda ctx, row: _plan_decision(ctx, row, False),
    "version_register": _plan_version_register,
    "model_register": _plan_model_register,
    "attribution_root_set": _plan_attribution_root_set,
    "epoch_publish": _plan_epoch_publish,
    "reward_claim": _plan_reward_claim,
    "epoch_sweep": _plan_epoch_sweep,
}
ON_CONFIRMED: dict[str, Callable] = {
    "epoch_publish": _epoch_published, "reward_claim": _claim_done, "epoch_sweep": _epoch_swept,
}


# --- undo of ON_CONFIRMED, when a reorg drops the row's transaction before finality ---------------
# Effects apply at the first confirmation (a claim opens as soon as its epoch is mined), so a reorg must
# take them back: each undo restores the state the enqueueing service left, and the re-sent row applies
# the effect again when it confirms again. Every hook and undo is a guarded UPDATE, safe to repeat.

def _epoch_unpublished(ctx: Ctx, row) -> None:
    RewardEpoch.objects.filter(pk=row.payload.get("epoch_id"), status=RewardEpoch.Status.PUBLISHED) \
        .update(status=RewardEpoch.Status.PUBLISHING)


def _epoch_unswept(ctx: Ctx, row) -> None:
    """The sweep closed the whole generation (`_epoch_swept`): its epochs go back to sweeping and its expired
    claims back to what they were (queued when a claim row still waits in the outbox)."""
    epochs = RewardEpoch.objects.filter(generation=int(row.payload.get("generation", 0)), pk__lte=row.payload.get("epoch_id"))
    RewardEpoch.objects.filter(pk__in=epochs.values("pk"), status=RewardEpoch.Status.SWEPT) \
        .update(status=RewardEpoch.Status.SWEEPING)
    expired = RewardClaim.objects.filter(epoch__in=epochs, status=RewardClaim.Status.EXPIRED)
    pending = LedgerTransaction.objects.filter(kind="reward_claim", status__in=[Status.QUEUED, Status.SENT]) \
        .values_list("payload__account", flat=True)
    waiting = {a for a in pending if a}
    expired.filter(account__in=waiting).update(status=RewardClaim.Status.QUEUED)
    expired.exclude(account__in=waiting).update(status=RewardClaim.Status.UNCLAIMED)


def _claim_undone(ctx: Ctx, row) -> None:
    """A cumulative claim marked every row it covered (`_claim_done`); the chain on its new branch says how much
    is still paid, and every row above that is queued again (the re-sent row claims it)."""
    claim = RewardClaim.objects.select_related("epoch").filter(pk=row.payload.get("claim_id")).first()
    if claim is None:
        return
    generation = int(row.payload.get("generation", claim.epoch.generation))
    paid = ctx.c["RewardDistributor"].functions.claimed(generation, ctx.w3.to_checksum_address(claim.account)).call()
    undone = [c.pk for c in RewardClaim.objects.filter(account=claim.account, epoch__generation=generation,
                                                       status=RewardClaim.Status.CLAIMED)
              if int(c.cumulative_wei) > paid]
    RewardClaim.objects.filter(pk__in=undone).update(status=RewardClaim.Status.QUEUED, claimed_at=None)


ON_REORGED: dict[str, Callable] = {
    "epoch_publish": _epoch_unpublished, "reward_claim": _claim_undone, "epoch_sweep": _epoch_unswept,
}


def plan(ctx: Ctx, row: LedgerTransaction):
    planner = PLANNERS.get(row.kind)
    if planner is None:
        raise PermanentError(f"no sender for kind {row.kind!r}")
    try:
        return planner(ctx, row)
    except (PermanentError, client.ChainError):
        raise
    except Exception as exc:
        reverted = client.revert_from_exception(exc)
        if reverted:
            raise reverted from None
        raise


# --- state changes of a row --------------------------------------------------------------------

def _save(row: LedgerTransaction, **fields) -> None:
    for k, v in fields.items():
        setattr(row, k, v)
    row.save(update_fields=[*fields, "updated_at"])


def _confirm(ctx: Ctx, row: LedgerTransaction, receipt=None) -> None:
    """Confirmed by a receipt (its block kept for the reorg check) or by the chain's state at the head."""
    with transaction.atomic():
        fields = {"status": Status.CONFIRMED, "confirmed_at": timezone.now(), "last_error": "", "finalized_at": None}
        if receipt is not None:
            fields.update(block_number=receipt["blockNumber"], block_hash=_hex(receipt["blockHash"]))
        else:
            fields.update(block_number=ctx.signer.head(), block_hash="")
        _save(row, **fields)
        hook = ON_CONFIRMED.get(row.kind)
        if hook:
            hook(ctx, row)


def _fail(row: LedgerTransaction, message: str) -> None:
    logger.warning("outbox row %s (%s) failed: %s", row.pk, row.kind, message)
    _save(row, status=Status.FAILED, last_error=message[:2000])


def _requeue(row: LedgerTransaction, note: str = "") -> None:
    _save(row, status=Status.QUEUED, tx_hash="", raw_tx="", nonce=None, last_error=note[:2000])


def _hex(value) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


def _log_entry(signed: client.SignedTx, tx: dict, head: int) -> dict:
    return {"tx_hash": signed.tx_hash, "nonce": signed.nonce, "max_fee_per_gas": int(tx["maxFeePerGas"]),
            "max_priority_fee_per_gas": int(tx["maxPriorityFeePerGas"]), "block": head}


def _current_sends(row: LedgerTransaction) -> list[dict]:
    """The row's signed transactions for its current nonce, newest first (the original and its replacements)."""
    sends = [e for e in row.broadcasts or [] if e.get("tx_hash") and e.get("nonce") == row.nonce]
    if row.tx_hash and not any(e["tx_hash"] == row.tx_hash for e in sends):
        sends.append({"tx_hash": row.tx_hash, "nonce": row.nonce})  # a row sent before the log existed
    return sends[::-1]


def _find_receipt(ctx: Ctx, row: LedgerTransaction):
    """The receipt of whichever of the row's same-nonce transactions was mined (at most one can be)."""
    for entry in _current_sends(row):
        receipt = ctx.signer.receipt(entry["tx_hash"])
        if receipt is not None:
            if entry["tx_hash"] != row.tx_hash:  # an earlier fee level won the race with its replacement
                _save(row, tx_hash=entry["tx_hash"])
            return receipt
    return None


def _stuck(ctx: Ctx, row: LedgerTransaction, head: int) -> bool:
    sends = _current_sends(row)
    sent_at = sends[0].get("block") if sends else None
    return sent_at is not None and head - sent_at >= settings.LEDGER_REPLACE_AFTER_BLOCKS


def _replace(ctx: Ctx, row: LedgerTransaction, head: int) -> bool:
    """Sign the row's call again with its nonce and raised fees, record it, broadcast it.

    False when there is nothing to raise to (the fee ceiling) or the write is already done; the caller keeps
    waiting. A node that refuses the replacement leaves the row `sent` with the reason; the next poll retries.
    """
    last = _current_sends(row)[0]
    if "max_fee_per_gas" not in last:
        return False
    old = {"maxFeePerGas": last["max_fee_per_gas"], "maxPriorityFeePerGas": last["max_priority_fee_per_gas"]}
    fees = client.bumped_fees(old, ctx.signer.fees(), bump_bps=settings.LEDGER_FEE_BUMP_BPS,
                              ceiling=settings.LEDGER_MAX_FEE_PER_GAS)
    if fees is None:
        if "at the fee ceiling" not in row.last_error:
            _save(row, last_error=f"not mined since block {last['block']} and at the fee ceiling "
                                  f"({settings.LEDGER_MAX_FEE_PER_GAS} wei per gas): waiting")
        return False
    call = plan(ctx, row)
    if call is None:
        return False
    tx = ctx.signer.build(call, nonce=row.nonce, fees=fees)
    signed = ctx.signer.sign(tx)
    logger.info("outbox row %s: %s not mined within %s blocks; replacing it with %s (max fee %s -> %s wei)",
                row.pk, last["tx_hash"], settings.LEDGER_REPLACE_AFTER_BLOCKS, signed.tx_hash,
                old["maxFeePerGas"], fees["maxFeePerGas"])
    _save(row, tx_hash=signed.tx_hash, raw_tx=signed.raw.hex(), broadcasts=[*row.broadcasts, _log_entry(signed, tx, head)],
          last_error=f"replaced {last['tx_hash']}: not mined within {settings.LEDGER_REPLACE_AFTER_BLOCKS} blocks")
    try:
        ctx.signer.send(signed)
    except client.ChainUnavailable:
        raise
    except client.ChainError as exc:
        _save(row, last_error=f"replacement refused: {str(exc)[:500]}")
    return True


def _await(ctx: Ctx, row: LedgerTransaction, *, timeout: float | None = None):
    """The receipt of the row's transaction with LEDGER_CONFIRMATIONS confirmations, replacing the transaction
    while it is not mined within LEDGER_REPLACE_AFTER_BLOCKS blocks; None after `timeout` seconds."""
    need = settings.LEDGER_CONFIRMATIONS
    deadline = time.monotonic() + (client.RECEIPT_TIMEOUT_SECONDS if timeout is None else timeout)
    while True:
        receipt = _find_receipt(ctx, row)
        if receipt is not None:
            if ctx.signer.confirmations(receipt, need=need) >= need:
                return receipt
        else:
            head = ctx.signer.head()
            if _stuck(ctx, row, head):
                _replace(ctx, row, head)
        if time.monotonic() > deadline:
            return None
        time.sleep(client.RECEIPT_POLL_SECONDS)


def _settle(ctx: Ctx, row: LedgerTransaction, receipt) -> None:
    """A receipt is in for the row's current transaction: confirmed, next step, or failed."""
    try:
        nxt = plan(ctx, row)
    except (PermanentError, client.TxReverted) as exc:
        nxt, error = "error", str(exc)
    if nxt is None:
        _confirm(ctx, row, receipt)
    elif receipt["status"] != 1:
        _fail(row, f"transaction {row.tx_hash} reverted on-chain" + (f" ({error})" if nxt == "error" else ""))
    elif nxt == "error":
        _fail(row, error)
    elif row.steps + 1 >= MAX_STEPS:
        _fail(row, f"still not done after {MAX_STEPS} transactions")
    else:
        _save(row, status=Status.QUEUED, steps=row.steps + 1, block_number=receipt["blockNumber"])


def reconcile(ctx: Ctx, row: LedgerTransaction) -> bool:
    """Settle a row left `sent`; False when it must wait (no receipt or too few confirmations yet)."""
    receipt = _find_receipt(ctx, row) if row.tx_hash else None
    if receipt is not None:
        if ctx.signer.confirmations(receipt, need=settings.LEDGER_CONFIRMATIONS) < settings.LEDGER_CONFIRMATIONS:
            return False
        _settle(ctx, row, receipt)
        return True
    try:
        if plan(ctx, row) is None:  # done on-chain by another transaction (e.g. before a redeploy)
            _confirm(ctx, row)
            return True
    except (PermanentError, client.TxReverted) as exc:
        _fail(row, str(exc))
        return True
    chain_nonce = client.rpc(ctx.w3.eth.get_transaction_count, ctx.signer.address, "latest")
    if row.raw_tx and row.nonce is not None and chain_nonce <= row.nonce:
        head = ctx.signer.head()
        if _stuck(ctx, row, head):  # not mined within N blocks: the same nonce with raised fees
            _replace(ctx, row, head)
        else:
            signed = client.SignedTx(raw=bytes.fromhex(row.raw_tx), tx_hash=row.tx_hash, nonce=row.nonce)
            try:
                ctx.signer.send(signed)
            except client.ChainUnavailable:
                raise
            except client.ChainError as exc:
                _requeue(row, f"rebroadcast refused, rebuilding: {exc}")
                ctx.signer.reset()
                return True
        receipt = _await(ctx, row)
        if receipt is None:
            return False
        _settle(ctx, row, receipt)
        return True
    _requeue(row, f"nonce {row.nonce} was used by another transaction; rebuilding")
    return True


def send_row(ctx: Ctx, row: LedgerTransaction) -> bool:
    """Advance one queued row by one transaction; False when the loop should stop (wait for a receipt)."""
    call = plan(ctx, row)
    if call is None:
        _confirm(ctx, row)
        return True
    head = ctx.signer.head()
    tx = ctx.signer.build(call)
    signed = ctx.signer.sign(tx)
    _crash_point("after_sign", row)
    _save(row, status=Status.SENT, tx_hash=signed.tx_hash, nonce=signed.nonce, raw_tx=signed.raw.hex(),
          from_address=ctx.signer.address, attempts=row.attempts + 1,
          broadcasts=[*row.broadcasts, _log_entry(signed, tx, head)])
    _crash_point("after_record", row)
    ctx.signer.send(signed)
    _crash_point("after_send", row)
    if row.kind == "epoch_publish":
        _crash_point("mid_epoch", row)
    receipt = _await(ctx, row)
    if receipt is None:
        return False
    _crash_point("after_receipt", row)
    _settle(ctx, row, receipt)
    return True


# --- reorgs: confirmed rows re-checked until finality ----------------------------------------------

def _reorged(ctx: Ctx, row: LedgerTransaction, note: str) -> None:
    """The chain no longer holds the row's write: undo its effects and queue it again (re-planned, so what
    the new branch already holds is confirmed without a transaction, and nothing is sent twice)."""
    logger.warning("outbox row %s (%s): %s; sending it again", row.pk, row.kind, note)
    with transaction.atomic():
        undo = ON_REORGED.get(row.kind)
        if undo:
            undo(ctx, row)
        event = {"reorg": row.tx_hash or None, "block": row.block_number, "block_hash": row.block_hash or None}
        _save(row, status=Status.QUEUED, tx_hash="", raw_tx="", nonce=None, steps=0, block_number=None,
              block_hash="", confirmed_at=None, broadcasts=[*row.broadcasts, event], last_error=note[:2000])


def recheck(ctx: Ctx, row: LedgerTransaction, head: int) -> None:
    """Re-check one confirmed row against the chain: final once LEDGER_FINALITY_DEPTH blocks are on it; moved
    to another block (the same transaction re-mined) is recorded; dropped by a reorg is undone and re-sent."""
    depth = settings.LEDGER_FINALITY_DEPTH
    if row.tx_hash:
        receipt = _find_receipt(ctx, row)
        if receipt is None:
            _reorged(ctx, row, f"transaction {row.tx_hash} (block {row.block_number}) was dropped by a reorg")
            return
        block_hash = _hex(receipt["blockHash"])
        if block_hash != row.block_hash or receipt["blockNumber"] != row.block_number:
            _save(row, block_number=receipt["blockNumber"], block_hash=block_hash)
    else:  # confirmed from the chain's state, no transaction of ours: the state must still say done
        try:
            still_done = plan(ctx, row) is None
        except (PermanentError, client.TxReverted) as exc:
            logger.warning("outbox row %s: cannot re-check it (%s); left as it is", row.pk, exc)
            return
        if not still_done:
            _reorged(ctx, row, f"the chain no longer holds this write (confirmed at block {row.block_number})")
            return
        if row.block_number is None:
            _save(row, block_number=head)
    if row.block_number is not None and head - row.block_number + 1 >= depth:
        _save(row, finalized_at=timezone.now())


# --- the loop ------------------------------------------------------------------------------------

class _SenderLock:
    """A PostgreSQL session advisory lock so two ledger workers never interleave nonces (no-op elsewhere)."""

    def __enter__(self):
        self.pg = connection.vendor == "postgresql"
        self.held = True
        if self.pg:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
                self.held = bool(cur.fetchone()[0])
        return self

    def __exit__(self, *exc):
        if self.pg and self.held:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])


def context() -> Ctx:
    signer = client.get_signer()
    return Ctx(signer=signer, c=deployed_contracts(signer))


def _handle_error(ctx: Ctx, row: LedgerTransaction, exc: Exception) -> bool:
    """Record an error on the row; True when the loop may go on with the next row."""
    ctx.signer.reset()
    if isinstance(exc, PermanentError | client.TxReverted):
        row.refresh_from_db()
        if row.status == Status.SENT:  # the saved transaction reverted or the row became unsendable
            _fail(row, str(exc))
        else:
            _save(row, attempts=row.attempts + 1)
            _fail(row, str(exc))
        return True
    row.refresh_from_db()
    attempts = row.attempts + (0 if row.status == Status.SENT else 1)
    message = f"{exc.__class__.__name__}: {str(exc)[:500]}"
    if row.status == Status.QUEUED and attempts >= MAX_ATTEMPTS:
        _save(row, attempts=attempts)
        _fail(row, f"gave up after {attempts} attempts: {message}")
        return True
    _save(row, attempts=attempts, last_error=message)
    if isinstance(exc, client.ChainUnavailable):
        raise exc
    return False


def outbox_process(*, max_rows: int = MAX_ROWS_PER_RUN) -> dict:
    """Reconcile rows left `sent`, then send queued rows in id order. Returns counts.

    Raises ChainUnavailable when the node is down (rows stay as they are; the beat sweep retries).
    """
    try:
        return _process(max_rows)
    except client.ChainUnavailable as exc:
        # Say why on every waiting row (the explorer and admin show it); nothing else changes.
        LedgerTransaction.objects.filter(status__in=[Status.QUEUED, Status.SENT]).update(
            last_error=f"waiting for the chain: {str(exc)[:500]}", updated_at=timezone.now())
        raise


def _process(max_rows: int) -> dict:
    stats = {"reconciled": 0, "sent": 0, "failed": 0, "rechecked": 0, "reorged": 0, "locked": False}
    with _SenderLock() as lock:
        if not lock.held:
            stats["locked"] = True
            return stats
        ctx = context()
        head = ctx.signer.head()
        unfinal = LedgerTransaction.objects.filter(status=Status.CONFIRMED, finalized_at__isnull=True).order_by("id")
        for row in unfinal[:MAX_ROWS_PER_RUN]:
            recheck(ctx, row, head)
            stats["rechecked"] += 1
            stats["reorged"] += row.status == Status.QUEUED
        for row in LedgerTransaction.objects.filter(status=Status.SENT).order_by("id"):
            try:
                if not reconcile(ctx, row):
                    return stats  # its receipt is not in yet: keep the order, come back later
            except Exception as exc:
                if not _handle_error(ctx, row, exc):
                    return stats
            stats["reconciled"] += 1
        ctx.signer.sync_nonce()
        for _ in range(max_rows):
            row = LedgerTransaction.objects.filter(status=Status.QUEUED).order_by("id").first()
            if row is None:
                break
            try:
                if not send_row(ctx, row):
                    break
            except Exception as exc:
                if not _handle_error(ctx, row, exc):
                    break
            row.refresh_from_db()
            stats["failed" if row.status == Status.FAILED else "sent"] += 1
    return stats
