"""The one gateway to the chain (web3.py). Other apps go through ledger services, never here.

One `Signer` per process holds the key, manages the nonce locally (re-synced from the node after any
error), estimates gas with a margin, prices transactions with EIP-1559 fees and waits for receipts with
`LEDGER_CONFIRMATIONS` confirmations. A node that does not answer raises `ChainUnavailable` with the URI
in the message. Keys come from the environment (`LEDGER_PRIVATE_KEY`); they are never logged or stored.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings

from core.services import Check

logger = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 5
RPC_RETRIES = 3
RPC_RETRY_BACKOFF_SECONDS = 0.5
GAS_MARGIN_PERCENT = 25
RECEIPT_TIMEOUT_SECONDS = 60
RECEIPT_POLL_SECONDS = 0.1
PRIORITY_FEE_WEI = 1_000_000_000  # 1 gwei tip when the node does not suggest one
# Nodes refuse a same-nonce replacement unless both fees rise by a minimum (geth 10 %); 12.5 % is the
# EIP-1559 base fee's largest step per block, so a bumped transaction keeps up with a rising base fee.
MIN_FEE_BUMP_BPS = 1250
ANVIL_CHAIN_ID = 31337
# Anvil's well-known development account 0. Public knowledge; only used on chain 31337 with DEBUG on.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # noqa: S105

BUILD_DIR = Path(__file__).resolve().parent / "contracts" / "build"


class ChainError(Exception):
    """Something went wrong talking to the chain."""


class ChainUnavailable(ChainError):  # noqa: N818 - reads as a state
    """The node does not answer (down, wrong URI, timeout). Transient: retry later."""


class ChainConfigError(ChainError):
    """No provider or no key configured, or contracts not deployed."""


class TxReverted(ChainError):  # noqa: N818 - reads as what happened
    """The contract rejected the call; `error` names the custom error when it is one of ours."""

    def __init__(self, message: str, *, error: str = ""):
        super().__init__(message)
        self.error = error


def get_web3(uri: str | None = None):
    from web3 import Web3

    uri = uri or settings.WEB3_PROVIDER_URI
    if not uri:
        raise ChainConfigError("WEB3_PROVIDER_URI is not set")
    return Web3(Web3.HTTPProvider(uri, request_kwargs={"timeout": RPC_TIMEOUT_SECONDS}))


def chain_status() -> dict:
    """Whether the configured node answers; never raises."""
    uri = settings.WEB3_PROVIDER_URI
    try:
        w3 = get_web3()
        chain_id = w3.eth.chain_id
        block = w3.eth.block_number
        return {"ok": True, "detail": f"chain {chain_id} at block {block}", "chain_id": chain_id, "block": block}
    except Exception as exc:
        return {"ok": False, "detail": f"{uri}: {exc.__class__.__name__}: {str(exc)[:200]}"}


def chain_health():
    """The chain's line in /healthz (registered with core in LedgerConfig.ready): not configured without
    WEB3_PROVIDER_URI, else whether the node answers."""
    if not settings.WEB3_PROVIDER_URI:
        return Check(ok=True, configured=False, detail="WEB3_PROVIDER_URI not set")
    status = chain_status()
    return Check(ok=status["ok"], detail=status["detail"],
                 extra={k: v for k, v in status.items() if k not in ("ok", "detail")})


def rpc(fn, *args, **kwargs):
    """Call a read on the node with retries; connection failures become ChainUnavailable."""
    import requests

    last = None
    for attempt in range(RPC_RETRIES):
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(RPC_RETRY_BACKOFF_SECONDS * (attempt + 1))
    raise ChainUnavailable(f"chain node {settings.WEB3_PROVIDER_URI or '?'} does not answer: {last.__class__.__name__}")


# --- artifacts ----------------------------------------------------------------------------------

@cache
def artifact(name: str) -> dict:
    path = BUILD_DIR / f"{name}.json"
    if not path.exists():
        raise ChainConfigError(f"no compiled artifact {path}; run `node ledger/contracts/compile.js`")
    return json.loads(path.read_text())


@cache
def error_selectors() -> dict[bytes, tuple[str, list[str]]]:
    """4-byte selector -> (custom error name, argument types), over every compiled contract."""
    from eth_utils import keccak

    out = {}
    for path in BUILD_DIR.glob("*.json"):
        for item in json.loads(path.read_text())["abi"]:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                out[keccak(text=sig)[:4]] = (item["name"], types)
    return out


def decode_revert(data) -> str:
    """A readable name for revert data: `NotCurator(0xabc...)`, or the raw data when unknown."""
    from eth_abi import decode

    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x")) if data.startswith("0x") else b""
    if not data or len(data) < 4:
        return "reverted"
    found = error_selectors().get(bytes(data[:4]))
    if not found:
        if data[:4] == bytes.fromhex("08c379a0"):
            return decode(["string"], data[4:])[0]
        return "0x" + bytes(data).hex()
    name, types = found
    try:
        args = decode(types, bytes(data[4:]))
    except Exception:
        return name
    shown = ", ".join(("0x" + a.hex()) if isinstance(a, bytes) else str(a) for a in args)
    return f"{name}({shown})"


def revert_from_exception(exc) -> TxReverted | None:
    """Turn web3's revert exceptions into TxReverted with the decoded custom error; None if not a revert."""
    from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError

    if isinstance(exc, ContractCustomError | ContractPanicError | ContractLogicError):
        data = getattr(exc, "data", None) or ""
        name = decode_revert(data) if isinstance(data, str | bytes) else str(exc)
        if name in ("reverted", "") or name.startswith("0x"):
            name = str(exc.message if hasattr(exc, "message") else exc) or name
        return TxReverted(f"the contract rejected the call: {name}", error=name.split("(")[0])
    return None


def contract(w3, name: str, address: str):
    return w3.eth.contract(address=w3.to_checksum_address(address), abi=artifact(name)["abi"])


# --- signing ------------------------------------------------------------------------------------

def ledger_private_key(chain_id: int) -> str:
    """The signer's key from the environment; anvil's dev key only on chain 31337 in DEBUG."""
    key = settings.LEDGER_PRIVATE_KEY
    if key:
        return key
    if settings.DEBUG and chain_id == ANVIL_CHAIN_ID:
        return ANVIL_DEV_KEY
    raise ChainConfigError(
        f"LEDGER_PRIVATE_KEY is not set (anvil's dev key is only used with DEBUG on chain {ANVIL_CHAIN_ID})"
    )


@dataclass
class SignedTx:
    raw: bytes
    tx_hash: str
    nonce: int


class Signer:
    """Signs and sends transactions from one account; the nonce is kept here and re-synced on errors."""

    def __init__(self, w3, private_key: str):
        from eth_account import Account

        self.w3 = w3
        self._account = Account.from_key(private_key)
        self.address = self._account.address
        self.chain_id = rpc(lambda: w3.eth.chain_id)
        self._nonce: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"Signer({self.address} on chain {self.chain_id})"

    def sync_nonce(self) -> int:
        self._nonce = rpc(self.w3.eth.get_transaction_count, self.address, "pending")
        return self._nonce

    def fees(self) -> dict:
        """The market's EIP-1559 fees (2 x base fee + tip), never above `LEDGER_MAX_FEE_PER_GAS`."""
        block = rpc(self.w3.eth.get_block, "latest")
        base = int(block.get("baseFeePerGas") or 0)
        try:
            tip = int(rpc(lambda: self.w3.eth.max_priority_fee))
        except ChainUnavailable:
            raise
        except Exception:
            tip = PRIORITY_FEE_WEI
        ceiling = settings.LEDGER_MAX_FEE_PER_GAS
        max_fee = min(2 * base + tip, ceiling)
        return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(tip, max_fee)}

    def head(self) -> int:
        """The latest block number."""
        return rpc(lambda: self.w3.eth.block_number)

    def build(self, call, *, gas: int | None = None, nonce: int | None = None, fees: dict | None = None) -> dict:
        """A transaction dict for a contract function call, gas estimated with a margin.

        `nonce` and `fees` are given for a replacement (same nonce, raised fees); otherwise the local nonce
        and the market's fees. Raises TxReverted when the node says the call would revert (a permanent error).
        """
        try:
            estimate = gas or rpc(call.estimate_gas, {"from": self.address})
        except ChainUnavailable:
            raise
        except Exception as exc:
            reverted = revert_from_exception(exc)
            if reverted:
                raise reverted from None
            raise
        if nonce is None:
            with self._lock:
                if self._nonce is None:
                    self.sync_nonce()
                nonce = self._nonce
        tx = call.build_transaction({
            "from": self.address, "nonce": nonce, "chainId": self.chain_id,
            "gas": estimate * (100 + GAS_MARGIN_PERCENT) // 100, **(fees or self.fees()),
        })
        return tx

    def build_deploy(self, name: str, *args) -> dict:
        factory = self.w3.eth.contract(abi=artifact(name)["abi"], bytecode=artifact(name)["bytecode"])
        return self.build(factory.constructor(*args))

    def sign(self, tx: dict) -> SignedTx:
        signed = self._account.sign_transaction(tx)
        return SignedTx(raw=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex(), nonce=tx["nonce"])

    def send(self, signed: SignedTx) -> str:
        """Broadcast; a node that already knows the transaction is fine (a rebroadcast)."""
        try:
            rpc(self.w3.eth.send_raw_transaction, signed.raw)
        except ChainUnavailable:
            self._nonce = None
            raise
        except Exception as exc:
            text = str(exc).lower()
            if "already known" in text or "already imported" in text:
                pass
            else:
                self._nonce = None  # re-sync before the next transaction
                raise ChainError(f"send failed: {str(exc)[:300]}") from exc
        with self._lock:
            if self._nonce is not None and signed.nonce >= self._nonce:
                self._nonce = signed.nonce + 1
        return signed.tx_hash

    def reset(self) -> None:
        self._nonce = None

    def receipt(self, tx_hash: str):
        """The receipt, or None when the node does not know it (yet)."""
        from web3.exceptions import TransactionNotFound

        try:
            return rpc(self.w3.eth.get_transaction_receipt, tx_hash)
        except TransactionNotFound:
            return None

    def confirmations(self, receipt, *, need: int | None = None) -> int:
        if need is not None and need <= 1:
            return 1  # a mined receipt is its own first confirmation: no block-number call
        return rpc(lambda: self.w3.eth.block_number) - receipt["blockNumber"] + 1

    def wait(self, tx_hash: str, *, confirmations: int | None = None, timeout: float = RECEIPT_TIMEOUT_SECONDS):
        """The receipt once it has `confirmations` blocks on it, or None after `timeout` seconds."""
        need = settings.LEDGER_CONFIRMATIONS if confirmations is None else confirmations
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.receipt(tx_hash)
            if receipt is not None and self.confirmations(receipt, need=need) >= need:
                return receipt
            if time.monotonic() > deadline:
                return None
            time.sleep(RECEIPT_POLL_SECONDS)

    def transact(self, call):
        """Build, sign, send and wait; raises TxReverted on a failed receipt. For scripts and deploys."""
        signed = self.sign(self.build(call))
        self.send(signed)
        receipt = self.wait(signed.tx_hash)
        if receipt is None:
            raise ChainError(f"no receipt for {signed.tx_hash} after {RECEIPT_TIMEOUT_SECONDS}s")
        if receipt["status"] != 1:
            raise TxReverted(f"transaction {signed.tx_hash} reverted")
        return receipt

    def deploy(self, name: str, *args) -> tuple[str, object]:
        signed = self.sign(self.build_deploy(name, *args))
        self.send(signed)
        receipt = self.wait(signed.tx_hash)
        if receipt is None or receipt["status"] != 1:
            raise ChainError(f"deploying {name} failed ({signed.tx_hash})")
        return receipt["contractAddress"], receipt


def bumped_fees(old: dict, market: dict, *, bump_bps: int, ceiling: int) -> dict | None:
    """Fees for a same-nonce replacement: each of maxFeePerGas and maxPriorityFeePerGas at least the old one
    raised by `bump_bps` (never under MIN_FEE_BUMP_BPS, rounded up) and at least the market's.

    None when `ceiling` (wei per gas) leaves no room for the raise: the node would refuse the replacement.
    """
    factor = 10_000 + max(int(bump_bps), MIN_FEE_BUMP_BPS)
    min_max = -(-int(old["maxFeePerGas"]) * factor // 10_000)
    min_tip = -(-int(old["maxPriorityFeePerGas"]) * factor // 10_000)
    tip = max(min_tip, int(market["maxPriorityFeePerGas"]))
    max_fee = min(max(min_max, int(market["maxFeePerGas"]), tip), int(ceiling))
    if max_fee < min_max or max_fee < min_tip:
        return None
    return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(tip, max_fee)}


_signers: dict[str, Signer] = {}
_signers_lock = threading.Lock()


def get_signer(uri: str | None = None) -> Signer:
    """The process's signer for the configured node (one per process and URI)."""
    uri = uri or settings.WEB3_PROVIDER_URI
    with _signers_lock:
        found = _signers.get(uri)
        if found is None:
            w3 = get_web3(uri)
            chain_id = rpc(lambda: w3.eth.chain_id)
            found = Signer(w3, ledger_private_key(chain_id))
            _signers[uri] = found
        return found


def reset_signers() -> None:
    """Forget the process's signers (as a restarted process would)."""
    with _signers_lock:
        _signers.clear()
