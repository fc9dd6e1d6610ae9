"""Outbox senders of an accepted stake's bond (`contribution_slash`, `contribution_release`), registered into
the sender's tables by `register()` from the app's `ready()`, as the governance kinds are.

DatanetRegistry keeps an accepted stake bonded for `bondSeconds`: within it a curator may slash it (harm found
after acceptance, docs/datanets.md), after it anyone may release it. The planners read the stake's bond first
(None: already done), so a retried, replaced or reconciled row never slashes or releases twice.
"""
from __future__ import annotations

from ledger.outbox import STAKE_ACCEPTED, Ctx, PermanentError, _b32, _p
from ledger.services import custodial_address_for_user_id, custodial_key_for_user_id

BOND_NONE, BOND_BONDED, BOND_RELEASED, BOND_SLASHED = range(4)  # DatanetRegistry.Bond
BOND_NAMES = ("none", "bonded", "released", "slashed")
STATUS, BONDED_UNTIL, BOND = 3, 4, 5  # fields of DatanetRegistry.stakes(...)


class BondRunning(Exception):  # noqa: N818 - retried by the sender (not permanent): the chain's clock is behind ours
    """The stake is still bonded on-chain; the release is sent again later."""


def _stake(ctx: Ctx, row):
    reg = ctx.c["DatanetRegistry"]
    datanet_id = int(_p(row, "datanet_id"))
    content = _b32(_p(row, "content_hash"), "content_hash")
    return reg, datanet_id, content, reg.functions.stakes(datanet_id, content).call()


def _plan_slash(ctx: Ctx, row):
    """The curator's EIP-712 `Slash`, signed now with their custodial key and relayed by the operator."""
    from eth_account import Account

    reg, datanet_id, content, stake = _stake(ctx, row)
    if stake[BOND] == BOND_SLASHED:
        return None
    if stake[STATUS] != STAKE_ACCEPTED or stake[BOND] != BOND_BONDED:
        raise PermanentError(f"the stake on {content.hex()[:12]} is not bonded on-chain ({BOND_NAMES[stake[BOND]]})")
    if ctx.w3.eth.get_block("latest")["timestamp"] >= stake[BONDED_UNTIL]:
        raise PermanentError(f"the bond on {content.hex()[:12]} ended before the slash was sent")
    curator = int(_p(row, "curator_id"))
    address = custodial_address_for_user_id(curator)
    if not reg.functions.isCurator(datanet_id, address).call():
        return reg.functions.setCurator(datanet_id, address, True)
    digest = reg.functions.slashDigest(datanet_id, content).call()
    signature = Account.unsafe_sign_hash(digest, custodial_key_for_user_id(curator)).signature
    return reg.functions.slashAcceptedBySig(datanet_id, content, bytes(signature))


def _plan_release(ctx: Ctx, row):
    reg, datanet_id, content, stake = _stake(ctx, row)
    if stake[BOND] in (BOND_RELEASED, BOND_SLASHED):  # slashed: nothing is left to release
        return None
    if stake[BOND] != BOND_BONDED:
        raise PermanentError(f"the stake on {content.hex()[:12]} is not bonded on-chain")
    if ctx.w3.eth.get_block("latest")["timestamp"] < stake[BONDED_UNTIL]:
        raise BondRunning(f"the stake on {content.hex()[:12]} is bonded until {stake[BONDED_UNTIL]}")
    return reg.functions.release(datanet_id, content)


PLANNERS = {"contribution_slash": _plan_slash, "contribution_release": _plan_release}


# --- ledger_audit: each row against the registry's events -------------------------------------------------

def _bond_events(ch, name: str) -> dict:
    from ledger.audit import _events, _hx

    cache = ch.__dict__.setdefault("_bond_events", {})
    if name not in cache:
        cache[name] = {(e["datanetId"], _hx(e["contentHash"])): e
                       for e in _events(ch.c.get("DatanetRegistry"), name, ch.start, ch.head)}
    return cache[name]


def _key(row) -> tuple[int, str]:
    return int((row.payload or {}).get("datanet_id", 0)), str((row.payload or {}).get("content_hash", "")).lower()


def _audit_slash(ch, row):
    e, stake = _bond_events(ch, "SlashedAccepted").get(_key(row)), ch.staked.get(_key(row))
    if e is None:
        return "slashed", "no SlashedAccepted", False
    whole = stake is not None and e["slashed"] + e["returned"] == stake["amount"]
    return "slashed", f"slashed, {e['slashed']} slashed + {e['returned']} returned", whole


def _audit_release(ch, row):
    e = _bond_events(ch, "Released").get(_key(row))
    if e is None and _bond_events(ch, "SlashedAccepted").get(_key(row)):
        return "released", "slashed before the release (nothing left to release)", True
    return "released", (f"released {e['amount']} wei" if e else "no Released"), e is not None


CHECKS = {"contribution_slash": _audit_slash, "contribution_release": _audit_release}


def register() -> None:
    from ledger import audit, outbox

    outbox.PLANNERS.update(PLANNERS)
    audit.CHECKS.update(CHECKS)
