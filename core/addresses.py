"""Which EVM addresses can hold rewards. No Django, no web3: the rule is shared by forms, the API and the ledger."""
from __future__ import annotations

import re

from eth_utils import is_checksum_address

ERR_FORMAT = "Enter an EVM address: 0x followed by 40 hexadecimal characters."
ERR_ZERO = "The zero address cannot hold tokens: anything sent there is burnt. Enter your own wallet."
ERR_PRECOMPILE = ("{address} is a precompiled contract of the chain (0x…01 to 0x…ff), not a wallet: "
                  "tokens sent there cannot be moved. Enter your own wallet.")
ERR_CHECKSUM = ("The mixed-case letters of this address do not match its checksum (EIP-55), so it probably has a "
                "typo. Paste it again, or enter it all in lower case.")
_HEX = re.compile(r"^0x[0-9a-fA-F]{40}$")
LAST_PRECOMPILE = 0xFF  # the reserved range; Ethereum and OP Stack precompiles live below it


def address_problem(address: str) -> str:
    """Why `address` cannot receive rewards, or "" when it can."""
    if not _HEX.match(address or ""):
        return ERR_FORMAT
    value = int(address, 16)
    if value == 0:
        return ERR_ZERO
    if value <= LAST_PRECOMPILE:
        return ERR_PRECOMPILE.format(address=address)
    body = address[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(address):
        return ERR_CHECKSUM
    return ""


def address_usable(address: str) -> bool:
    return bool(address) and not address_problem(address)
