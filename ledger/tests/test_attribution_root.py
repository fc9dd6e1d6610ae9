"""ModelRegistry.setAttributionRoot and the outbox kind `attribution_root_set`, on a real anvil."""
from __future__ import annotations

import pytest

from accounts.tests.factories import UserFactory
from ledger import client, outbox
from ledger.models import LedgerTransaction
from ledger.services import enqueue
from ledger.tests.factories import h

pytestmark = pytest.mark.chain
S = LedgerTransaction.Status
ZERO = b"\0" * 32


def b32(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def register(model_id: int, developer) -> str:
    adapter = h(f"adapter {model_id}")
    enqueue("model_register", {"model_id": model_id, "adapter_hash": adapter, "base_model": "minilm-l6",
                               "version_root": h("v"), "attribution_root": "0x" + "00" * 32,
                               "developer_id": developer.pk}, f"m:{model_id}")
    return adapter


def root_row(model_id: int, adapter: str, root: str, key: str = ""):
    return enqueue("attribution_root_set", {"model_id": model_id, "adapter_hash": adapter, "root": root,
                                            "uri": f"/api/v1/models/{model_id}/attribution-weights"},
                   key or f"attribution_root_set:{model_id}")


def test_the_root_is_set_once_by_the_registrar(chain):
    adapter = register(1, UserFactory())
    outbox.outbox_process()
    reg, stranger = chain.c["ModelRegistry"], chain.actor(0)
    a = b32(adapter)
    assert reg.functions.getModel(a).call()[4] == ZERO  # the placeholder until the weights are published

    def reverts(call, error: str):
        with pytest.raises(client.TxReverted, match=error):
            chain.signer.transact(call)

    reverts(reg.functions.setAttributionRoot(a, ZERO, "u"), "EmptyHash")
    reverts(reg.functions.setAttributionRoot(b32(h("nope")), b32(h("r")), "u"), "NotRegistered")
    reverts(reg.functions.setAttributionRoot(a, b32(h("r")), "u" * 301), "UriTooLong")
    denied = chain.transact_as(stranger, reg.functions.setAttributionRoot(a, b32(h("r")), "u"))
    assert denied["status"] == 0
    receipt = chain.signer.transact(reg.functions.setAttributionRoot(a, b32(h("r")), "uri"))
    (event,) = reg.events.AttributionRootSet().process_receipt(receipt)
    assert (event.args.modelId, event.args.adapterHash, event.args.root, event.args.uri) == (1, a, b32(h("r")), "uri")
    assert reg.functions.getModel(a).call()[4] == b32(h("r"))
    reverts(reg.functions.setAttributionRoot(a, b32(h("other")), "uri"), "AttributionRootAlreadySet")
    reverts(reg.functions.setAttributionRoot(a, b32(h("r")), "uri"), "AttributionRootAlreadySet")


def test_the_outbox_sends_it_once_and_refuses_a_second_root(chain):
    dev = UserFactory()
    adapter = register(2, dev)
    first = root_row(2, adapter, h("weights"))
    unregistered = root_row(3, h("adapter 3"), h("weights 3"))
    outbox.outbox_process()
    first.refresh_from_db()
    unregistered.refresh_from_db()
    assert first.status == S.CONFIRMED and first.tx_hash, first.last_error
    assert chain.c["ModelRegistry"].functions.getModel(b32(adapter)).call()[4] == b32(h("weights"))
    assert unregistered.status == S.FAILED and "not registered on-chain" in unregistered.last_error

    # the same root again (a replay, a retried row) is confirmed from the chain's state, with no transaction
    nonce = chain.w3.eth.get_transaction_count(chain.signer.address)
    again = root_row(2, adapter, h("weights"), key="again")
    different = root_row(2, adapter, h("rebuilt weights"), key="different")
    outbox.outbox_process()
    again.refresh_from_db()
    different.refresh_from_db()
    assert again.status == S.CONFIRMED and not again.tx_hash
    assert different.status == S.FAILED and "already has attribution root" in different.last_error
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce
