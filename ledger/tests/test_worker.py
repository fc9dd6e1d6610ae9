"""The real ledger worker (a Celery process on the `ledger` queue) against anvil: the chain down, then
the worker SIGKILLed at each crash point in turn (LEDGER_CRASH_AT), restarted each time; in the end every
write is on-chain exactly once and the signer sent exactly one transaction per write."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from accounts.tests.factories import UserFactory
from config.celery import app as celery_app
from ledger.client import ANVIL_DEV_KEY
from ledger.models import LedgerTransaction, RewardClaim, RewardEpoch
from ledger.services import address_for_user, enqueue, reward_claim_request, rewards_accrue
from ledger.tasks import outbox_send_task, rewards_epoch_close_task
from ledger.tests.conftest import TREASURY
from ledger.tests.factories import datanet_payload, decision_payload, h, make_contribution, make_datanet, stake_payload

pytestmark = [pytest.mark.chain, pytest.mark.worker, pytest.mark.slow]
S = LedgerTransaction.Status
E18 = 10**18
SECRET = "ledger-worker-test-custodial-secret"  # the worker and this process must derive the same wallets


def wait_for(predicate, worker, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.log()}")


def wait_killed(worker, timeout: float = 60):
    try:
        worker.proc.wait(timeout=timeout)
    except Exception:
        raise AssertionError(f"the worker was not killed at its crash point; log:\n{worker.log()}") from None


def test_worker_killed_at_every_point_neither_loses_nor_repeats_a_write(chain_tx, start_worker, settings):
    chain = chain_tx
    settings.LEDGER_CUSTODIAL_SECRET = SECRET
    env = {"WEB3_PROVIDER_URI": chain.url, "LEDGER_PRIVATE_KEY": ANVIL_DEV_KEY, "LEDGER_CONFIRMATIONS": "1",
           "LEDGER_CUSTODIAL_SECRET": SECRET, "DJANGO_DEBUG": "1"}
    curator, dev, contributor = UserFactory(), UserFactory(), UserFactory()
    d = make_datanet(curators=[curator], min_stake="4", slash_fraction="0.25")
    c1 = make_contribution(datanet=d, contributor=contributor, curator=curator, stake="4")
    c2 = make_contribution(datanet=d, contributor=contributor, curator=curator, stake="10")
    model = {"model_id": 77, "adapter_hash": h("adapter 77"), "base_model": "minilm-l6", "version_root": h("v1"),
             "attribution_root": h("attr 77"), "developer_id": dev.pk}
    nonce0 = chain.w3.eth.get_transaction_count(chain.signer.address)
    token, reg = chain.c["OpenToken"], chain.c["DatanetRegistry"]
    treasury0 = token.functions.balanceOf(TREASURY).call()

    def statuses():
        return [r.status for r in LedgerTransaction.objects.order_by("id")]

    def all_waiting():
        return all(r.last_error.startswith("waiting for the chain") for r in LedgerTransaction.objects.all())

    # 1. the chain is down: rows stay queued, each saying why; nothing is lost. The epoch (closed by the beat
    #    task's code) is the second row, so the third restart below is killed in the middle of its publication.
    enqueue("datanet_create", datanet_payload(d), f"datanet_create:{d.pk}")
    rewards_accrue(allocations={contributor.pk: Decimal("2.5"), dev.pk: Decimal("1")}, source="inference",
                   reference="worker-test")
    rewards_epoch_close_task.apply()
    epoch = RewardEpoch.objects.get()
    enqueue("contribution_stake", stake_payload(c1), f"contribution_stake:{c1.pk}")
    enqueue("contribution_stake", stake_payload(c2), f"contribution_stake:{c2.pk}")
    enqueue("contribution_accept", decision_payload(c1), f"contribution_accept:{c1.pk}")
    enqueue("contribution_reject", {**decision_payload(c2), "slash_fraction": "0.25", "reason": "duplicate"},
            f"contribution_reject:{c2.pk}")
    enqueue("version_register", {"version_id": 1, "datanet_id": d.pk, "number": 1, "merkle_root": h("root 1"),
                                 "record_count": 12}, "version_register:1")
    enqueue("model_register", model, "model_register:77")
    celery_app.control.purge()  # the enqueues' kicks: one below is enough
    w = start_worker(queues="ledger", **{**env, "WEB3_PROVIDER_URI": "http://127.0.0.1:9"})
    outbox_send_task.apply_async(queue="ledger")
    wait_for(all_waiting, w, "the chain-down error on every row")
    assert set(statuses()) == {S.QUEUED} and len(statuses()) == 8
    w.kill()  # no warm shutdown: its retries against the dead node would only slow the test

    # 2. killed at each point in turn; each restart first settles what the previous one left
    expected_after = {
        "after_sign": lambda: statuses()[0] == S.QUEUED,  # signed, nothing saved, nothing sent
        "after_record": lambda: statuses()[0] == S.SENT,  # saved as sent, never broadcast
        # the saved bytes rebroadcast; then killed in the middle of the epoch's publication (sent, no receipt)
        "after_send": lambda: statuses()[:2] == [S.CONFIRMED, S.SENT] and
        RewardEpoch.objects.get().status == RewardEpoch.Status.PUBLISHING,
        "after_receipt": lambda: statuses()[:3] == [S.CONFIRMED, S.CONFIRMED, S.SENT],  # mined, not recorded
    }
    for point, check in expected_after.items():
        w = start_worker(queues="ledger", **{**env, "LEDGER_CRASH_AT": point})
        outbox_send_task.apply_async(queue="ledger")
        wait_killed(w)
        assert check(), (point, statuses())
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce0 + 3
    assert RewardEpoch.objects.get().status == RewardEpoch.Status.PUBLISHED

    # 3. a normal restart drains the rest; then a contributor claims
    w = start_worker(queues="ledger", **env)
    outbox_send_task.apply_async(queue="ledger")
    wait_for(lambda: set(statuses()) == {S.CONFIRMED}, w, "every row confirmed", timeout=90)
    claim = RewardClaim.objects.get(user=contributor)
    reward_claim_request(claim=claim, user=contributor)  # kicks the worker on commit
    wait_for(lambda: RewardClaim.objects.get(pk=claim.pk).status == RewardClaim.Status.CLAIMED, w, "the claim")
    w.stop()

    # the chain says what the database says, once
    assert set(statuses()) == {S.CONFIRMED}
    rows = list(LedgerTransaction.objects.order_by("id"))
    assert len(rows) == 9
    nonces = sorted(r.nonce for r in rows)
    assert nonces == list(range(nonce0, nonce0 + 9)), nonces  # one transaction per write, none repeated
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce0 + 9
    assert reg.functions.datanets(d.pk).call()[2]
    assert reg.functions.stakes(d.pk, bytes.fromhex(c1.file_sha256)).call()[3] == 2
    assert reg.functions.stakes(d.pk, bytes.fromhex(c2.file_sha256)).call()[3] == 3
    assert token.functions.balanceOf(TREASURY).call() - treasury0 == 10 * E18 // 4  # one slash, not two
    assert token.functions.balanceOf(reg.address).call() == int(c1.stake) * E18  # c1's bond (accepted)
    assert reg.functions.versions(d.pk, 1).call()[0] == bytes.fromhex(h("root 1")[2:])
    assert chain.c["ModelRegistry"].functions.modelCount().call() == 1
    dist = chain.c["RewardDistributor"]
    assert dist.functions.epochs(epoch.pk).call()[1] == int(Decimal("3.5") * E18)
    assert dist.functions.claimed(epoch.generation, address_for_user(contributor)).call()
    assert token.functions.balanceOf(address_for_user(contributor)).call() == int(Decimal("2.5") * E18)
    assert token.functions.balanceOf(dist.address).call() == 1 * E18
