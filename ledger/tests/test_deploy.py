"""`deploy_contracts --if-needed` as `make run` calls it (via bootstrap): an anvil whose state lives in a file,
stopped and started again, keeps the contracts and what was written; nothing is deployed twice. A chain that
lost its state gets fresh contracts and the outbox history replayed onto them."""
from __future__ import annotations

import json
import socket
import time

import pytest
from django.core.management import call_command

from accounts.tests.factories import UserFactory
from core.testing import AnvilProcess
from ledger import client, outbox
from ledger.client import ANVIL_DEV_KEY
from ledger.deploy import CONTRACTS
from ledger.models import ContractDeployment, LedgerTransaction
from ledger.services import enqueue
from ledger.tests.factories import h

pytestmark = pytest.mark.chain


@pytest.fixture
def stateful_anvil(tmp_path, settings):
    state = tmp_path / "chain" / "state.json"
    state.parent.mkdir()
    node = AnvilProcess()

    def start():
        node.start("--state", str(state))
        settings.WEB3_PROVIDER_URI = node.url
        client.reset_signers()
        return node

    def stop():
        node.stop()
        _wait_for_exit(node.port, state)

    yield start, stop, state
    node.stop()
    client.reset_signers()


def _wait_for_exit(port: int, state, timeout: float = 30) -> None:
    """npm's anvil wrapper exits as soon as it forwarded SIGTERM; the real binary dumps its state after.
    Wait until it is gone (port closed) and the dump is complete (the file parses)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            listening = sock.connect_ex(("127.0.0.1", port)) == 0
        if not listening and state.exists():
            try:
                json.loads(state.read_text())
                return
            except ValueError:
                pass
        time.sleep(0.1)
    raise AssertionError("anvil did not exit and dump its state")


def _model_payload(dev):
    return {"model_id": 1, "adapter_hash": h("adapter restart"), "base_model": "minilm-l6", "version_root": h("v"),
            "attribution_root": h("a"), "developer_id": dev.pk}


def test_if_needed_survives_a_restart_and_redeploys_a_wiped_chain(db, settings, stateful_anvil, capsys):
    start, stop, state = stateful_anvil
    settings.LEDGER_PRIVATE_KEY = ANVIL_DEV_KEY
    settings.LEDGER_CONFIRMATIONS = 1
    start()
    call_command("deploy_contracts", if_needed=True)  # what `make run` (bootstrap) calls: deploys once
    first = dict(ContractDeployment.objects.values_list("name", "address"))
    assert set(first) == set(CONTRACTS)
    row = enqueue("model_register", _model_payload(UserFactory()), "model_register:restart")
    outbox.outbox_process()
    row.refresh_from_db()
    assert row.status == LedgerTransaction.Status.CONFIRMED
    signer = client.get_signer()
    nonce = signer.w3.eth.get_transaction_count(signer.address)

    stop()  # SIGTERM: anvil writes its state file
    start()
    call_command("deploy_contracts", if_needed=True)
    assert dict(ContractDeployment.objects.values_list("name", "address")) == first  # nothing redeployed
    signer = client.get_signer()
    assert signer.w3.eth.get_transaction_count(signer.address) == nonce
    registry = client.contract(signer.w3, "ModelRegistry", first["ModelRegistry"])
    assert registry.functions.isRegistered(bytes.fromhex(h("adapter restart")[2:])).call()

    # the state file is lost: the recorded contracts have no code, so they are deployed again and the
    # outbox history is queued again so the new chain holds what the database says happened
    stop()
    state.unlink()
    start()
    call_command("deploy_contracts", if_needed=True)
    again = dict(ContractDeployment.objects.values_list("name", "address"))
    row.refresh_from_db()
    assert row.status == LedgerTransaction.Status.QUEUED and "replayed" in row.last_error
    outbox.outbox_process()
    row.refresh_from_db()
    assert row.status == LedgerTransaction.Status.CONFIRMED
    signer = client.get_signer()
    registry = client.contract(signer.w3, "ModelRegistry", again["ModelRegistry"])
    assert registry.functions.isRegistered(bytes.fromhex(h("adapter restart")[2:])).call()
