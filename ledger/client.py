"""The one gateway to the chain (web3.py). Other apps go through ledger services, never here."""
from __future__ import annotations

from django.conf import settings

RPC_TIMEOUT_SECONDS = 5


def get_web3():
    from web3 import Web3

    return Web3(Web3.HTTPProvider(settings.WEB3_PROVIDER_URI, request_kwargs={"timeout": RPC_TIMEOUT_SECONDS}))


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
