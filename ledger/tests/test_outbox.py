"""The outbox against a real anvil, in-process: every kind, bad input, node down, and randomised crashes."""
from __future__ import annotations

import os
import random
import time
from decimal import Decimal

import pytest

from accounts.tests.factories import UserFactory
from ledger import client, outbox
from ledger.models import LedgerTransaction, RewardEpoch
from ledger.services import (
    address_for_user,
    custodial_address_for_user_id,
    enqueue,
    rewards_accrue,
    rewards_epoch_close,
)
from ledger.tests.conftest import TREASURY
from ledger.tests.factories import datanet_payload, decision_payload, h, make_contribution, make_datanet, stake_payload

pytestmark = pytest.mark.chain
S = LedgerTransaction.Status
E18 = 10**18


def b32(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def run(**kw):
    return outbox.outbox_process(**kw)


def model_payload(i: int, developer) -> dict:
    return {"model_id": i, "adapter_hash": h(f"adapter {i}"), "base_model": "minilm-l6", "version_root": h("v"),
            "attribution_root": h(f"attr {i}"), "developer_id": developer.pk}


def test_every_kind_reaches_the_chain(chain):
    curator, dev = UserFactory(), UserFactory()
    d = make_datanet(curators=[curator], min_stake="10", slash_fraction="0.3333")
    c1 = make_contribution(datanet=d, curator=curator, stake="10")
    c2 = make_contribution(datanet=d, curator=curator, stake="12.000000000000000001")
    enqueue("datanet_create", datanet_payload(d), f"dc:{d.pk}")
    enqueue("contribution_stake", stake_payload(c1), f"s:{c1.pk}")
    enqueue("contribution_stake", stake_payload(c2), f"s:{c2.pk}")
    enqueue("contribution_accept", decision_payload(c1), f"a:{c1.pk}")
    enqueue("contribution_reject", {**decision_payload(c2), "slash_fraction": "0.3333", "reason": "spam"}, f"r:{c2.pk}")
    enqueue("version_register", {"version_id": 1, "datanet_id": d.pk, "number": 1, "merkle_root": h("root"),
                                 "record_count": 42}, "v:1")
    enqueue("model_register", model_payload(7, dev), "m:7")
    token, reg, models = chain.c["OpenToken"], chain.c["DatanetRegistry"], chain.c["ModelRegistry"]
    treasury_before = token.functions.balanceOf(TREASURY).call()

    stats = run()

    rows = list(LedgerTransaction.objects.all())
    assert [r.status for r in rows] == [S.CONFIRMED] * 7, [(r.kind, r.last_error) for r in rows]
    assert stats["sent"] == 7
    on_chain = reg.functions.datanets(d.pk).call()
    assert on_chain[0] == address_for_user(d.owner) and on_chain[1] == 3333 and on_chain[3] == 10 * E18
    assert reg.functions.isCurator(d.pk, custodial_address_for_user_id(curator.pk)).call()
    assert reg.functions.stakes(d.pk, b32(h("x"))).call()[3] == 0
    s1 = reg.functions.stakes(d.pk, bytes.fromhex(c1.file_sha256)).call()
    s2 = reg.functions.stakes(d.pk, bytes.fromhex(c2.file_sha256)).call()
    assert s1[0] == address_for_user(c1.contributor) and s1[3] == 2 and s2[3] == 3
    # slash arithmetic: floor(amount * 3333 / 10000) to the treasury, the rest (with the dust) back
    amount2 = 12 * E18 + 1
    assert token.functions.balanceOf(TREASURY).call() - treasury_before == amount2 * 3333 // 10_000
    assert s1[5] == 1  # accepted: bonded (slashable for harm) until LEDGER_STAKE_BOND_SECONDS pass
    assert token.functions.balanceOf(reg.address).call() == 10 * E18  # c1's bond; c2 was settled at reject
    assert reg.functions.versions(d.pk, 1).call()[:2] == [b32(h("root")), 42]
    m = models.functions.getModel(b32(h("adapter 7"))).call()
    assert m[0] == 7 and m[1] == address_for_user(dev) and m[5] == "minilm-l6"
    # a second run has nothing to do, and nothing is sent twice
    nonce = chain.w3.eth.get_transaction_count(chain.signer.address)
    assert run()["sent"] == 0
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce


def test_enqueue_is_idempotent(db):
    a = enqueue("model_register", {"model_id": 1}, "same-key")
    b = enqueue("model_register", {"model_id": 2}, "same-key")
    assert a.pk == b.pk and b.payload == {"model_id": 1}
    assert LedgerTransaction.objects.count() == 1


@pytest.mark.parametrize(("kind", "payload", "message"), [
    ("model_register", {"model_id": 1, "adapter_hash": "0x1234", "base_model": "b", "version_root": h("v"),
                        "attribution_root": h("a"), "developer_id": 1}, "adapter_hash must be 0x"),
    ("model_register", {"model_id": 1, "adapter_hash": "0x" + "zz" * 32, "base_model": "b", "version_root": h("v"),
                        "attribution_root": h("a"), "developer_id": 1}, "not hexadecimal"),
    ("model_register", {"model_id": 1}, "payload has no 'adapter_hash'"),
    ("datanet_create", {"datanet_id": 999999}, "payload has no 'curator_ids'"),
    ("contribution_stake", {"contribution_id": 1, "datanet_id": 999999, "contributor_id": 1, "content_hash": h("c"),
                            "stake": "10"}, "datanet 999999 is not on-chain"),
    ("contribution_stake", {"contribution_id": 1, "datanet_id": 1, "contributor_id": 1, "content_hash": h("c"),
                            "stake": "ten"}, "not an amount of OPEN"),
    ("contribution_accept", {"contribution_id": 1, "datanet_id": 999999, "content_hash": h("c")}, "absent on-chain"),
    ("teleport", {}, "no sender for kind 'teleport'"),
])
def test_bad_rows_fail_with_a_clear_error_and_do_not_block_the_rest(chain, kind, payload, message):
    dev = UserFactory()
    bad = enqueue(kind, payload, "bad")
    good = enqueue("model_register", model_payload(1, dev), "good")
    run()
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.status == S.FAILED and message in bad.last_error
    assert good.status == S.CONFIRMED


def test_contract_rejection_is_recorded_as_failed(chain):
    d = make_datanet(min_stake="10")
    c = make_contribution(datanet=d, stake="5")
    enqueue("datanet_create", datanet_payload(d), "dc")
    row = enqueue("contribution_stake", stake_payload(c), "s")
    run()
    row.refresh_from_db()
    assert row.status == S.FAILED and "StakeTooSmall" in row.last_error


def test_node_down_keeps_rows_queued(chain, settings):
    row = enqueue("model_register", model_payload(1, UserFactory()), "m")
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"
    client.reset_signers()
    with pytest.raises(client.ChainUnavailable):
        run()
    row.refresh_from_db()
    assert row.status == S.QUEUED and row.tx_hash == ""
    assert row.last_error.startswith("waiting for the chain: chain node http://127.0.0.1:9 does not answer")
    settings.WEB3_PROVIDER_URI = chain.url
    client.reset_signers()
    run()
    row.refresh_from_db()
    assert row.status == S.CONFIRMED and row.last_error == ""


def test_nonce_taken_during_a_run_is_resynced(chain):
    """Another sender uses our next nonce between signing and broadcasting: the send fails, the row records
    the error, and the next run re-syncs the nonce, rebuilds the row and sends it once."""
    from eth_account import Account

    dev = UserFactory()
    first = enqueue("model_register", model_payload(21, dev), "m21")
    second = enqueue("model_register", model_payload(22, dev), "m22")
    me = Account.from_key(client.ANVIL_DEV_KEY)

    def steal_nonce(point, row):
        if point == "after_record" and row.pk == first.pk:
            raw = me.sign_transaction({"to": TREASURY, "value": 1, "gas": 21000, "nonce": row.nonce,
                                       "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9,
                                       "chainId": chain.signer.chain_id})
            chain.w3.eth.send_raw_transaction(raw.raw_transaction)

    outbox.crash_hook = steal_nonce
    try:
        run()
    finally:
        outbox.crash_hook = None
    first.refresh_from_db()
    assert first.status == S.SENT and "send failed" in first.last_error
    run()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == S.CONFIRMED
    models = chain.c["ModelRegistry"]
    assert models.functions.modelCount().call() == 2
    assert models.functions.getModel(b32(h("adapter 21"))).call()[0] == 21


def test_sent_but_never_broadcast_is_rebroadcast(chain):
    """The row was saved as sent, then the process died before the broadcast: the same bytes go out."""
    row = enqueue("model_register", model_payload(3, UserFactory()), "m")
    ctx = outbox.context()
    ctx.signer.sync_nonce()
    signed = ctx.signer.sign(ctx.signer.build(outbox.plan(ctx, row)))
    LedgerTransaction.objects.filter(pk=row.pk).update(status=S.SENT, tx_hash=signed.tx_hash, nonce=signed.nonce,
                                                       raw_tx=signed.raw.hex())
    client.reset_signers()
    assert run()["reconciled"] == 1
    row.refresh_from_db()
    assert row.status == S.CONFIRMED and row.tx_hash == signed.tx_hash
    assert chain.w3.eth.get_transaction_receipt(signed.tx_hash)["status"] == 1


def test_sent_whose_nonce_was_taken_is_rebuilt(chain):
    """The saved transaction can never be mined (its nonce went to another): the row is planned again."""
    row = enqueue("model_register", model_payload(4, UserFactory()), "m")
    ctx = outbox.context()
    nonce = ctx.signer.sync_nonce()
    signed = ctx.signer.sign(ctx.signer.build(outbox.plan(ctx, row)))
    LedgerTransaction.objects.filter(pk=row.pk).update(status=S.SENT, tx_hash=signed.tx_hash, nonce=nonce,
                                                       raw_tx=signed.raw.hex())
    ctx.signer.transact(chain.c["OpenToken"].functions.transfer(TREASURY, 1))  # takes that nonce
    client.reset_signers()
    run()
    row.refresh_from_db()
    assert row.status == S.CONFIRMED and row.tx_hash != signed.tx_hash
    assert chain.c["ModelRegistry"].functions.isRegistered(b32(h("adapter 4"))).call()


def test_already_on_chain_is_confirmed_without_sending(chain):
    dev = UserFactory()
    enqueue("model_register", model_payload(5, dev), "first")
    run()
    dup = enqueue("model_register", model_payload(5, dev), "second key, same adapter")
    nonce = chain.w3.eth.get_transaction_count(chain.signer.address)
    run()
    dup.refresh_from_db()
    assert dup.status == S.CONFIRMED and dup.tx_hash == ""
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce


# --- stuck transactions: replaced with the same nonce and raised fees ------------------------------

GWEI = 10**9


def _strand_pending_tx(chain, blocks: int) -> None:
    """Raise the base fee far above what the pending transaction pays, then mine `blocks` blocks without it
    (anvil drops such a transaction from its pool; geth would keep it unmined: the sender sees the same)."""
    chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(100 * GWEI))
    for _ in range(blocks):
        chain.rpc("evm_mine")


def _assert_replaced(chain, row):
    first, last = row.broadcasts[0], row.broadcasts[-1]
    assert len(row.broadcasts) == 2 and first["nonce"] == last["nonce"] == row.nonce
    assert row.tx_hash == last["tx_hash"] != first["tx_hash"]
    for key in ("max_fee_per_gas", "max_priority_fee_per_gas"):  # both raised by at least 12.5 %
        assert last[key] * 1000 >= first[key] * 1125, (key, first, last)
    assert chain.w3.eth.get_transaction_receipt(last["tx_hash"])["status"] == 1
    with pytest.raises(Exception, match="not found"):
        chain.w3.eth.get_transaction_receipt(first["tx_hash"])
    assert row.block_hash == chain.w3.eth.get_block(row.block_number)["hash"].to_0x_hex()


@pytest.fixture
def manual_mining(chain):
    base_fee = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    chain.rpc("evm_setAutomine", False)
    yield chain
    # a snapshot revert restores neither the mining mode nor the next block's base fee
    chain.rpc("evm_setAutomine", True)
    chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(base_fee))


def test_stuck_transaction_is_replaced_while_the_sender_waits(manual_mining, settings):
    """The sender is waiting for its receipt when blocks go by without it: it replaces the transaction in the
    same run (same nonce, fees raised past the new base fee) and the replacement confirms."""
    import threading

    chain = manual_mining
    settings.LEDGER_REPLACE_AFTER_BLOCKS = 3
    row = enqueue("model_register", model_payload(31, UserFactory()), "m31")
    nonce = chain.w3.eth.get_transaction_count(chain.signer.address)

    def the_base_fee_jumps():
        w3 = client.get_web3(chain.url)  # its own connection: the sender polls on the other
        deadline = time.monotonic() + 30
        while w3.provider.make_request("txpool_status", [])["result"]["pending"] == "0x0":  # not broadcast yet
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        for method, params in [("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)]), ("evm_mine", []),
                               ("evm_mine", []), ("evm_mine", []), ("evm_setAutomine", [True])]:
            w3.provider.make_request(method, params)

    t = threading.Thread(target=the_base_fee_jumps, daemon=True)
    t.start()
    try:
        stats = run()
    finally:
        t.join(timeout=30)
    row.refresh_from_db()
    assert stats["sent"] == 1 and row.status == S.CONFIRMED, (row.status, row.last_error)
    _assert_replaced(chain, row)
    assert row.broadcasts[-1]["block"] - row.broadcasts[0]["block"] >= 3
    assert chain.c["ModelRegistry"].functions.isRegistered(b32(h("adapter 31"))).call()
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce + 1  # one write, one nonce


def test_stuck_transaction_waits_at_the_fee_ceiling_then_is_replaced_after_a_restart(manual_mining, settings, monkeypatch):
    chain = manual_mining
    settings.LEDGER_REPLACE_AFTER_BLOCKS = 2
    monkeypatch.setattr(client, "RECEIPT_TIMEOUT_SECONDS", 0.5)
    row = enqueue("model_register", model_payload(32, UserFactory()), "m32")
    assert run()["sent"] == 0  # sent, not mined: nothing is mined by hand yet
    row.refresh_from_db()
    assert row.status == S.SENT and len(row.broadcasts) == 1
    _strand_pending_tx(chain, 2)
    # the ceiling is what the stuck transaction already pays: no room for a raise, so it waits and says why
    settings.LEDGER_MAX_FEE_PER_GAS = row.broadcasts[0]["max_fee_per_gas"]
    client.reset_signers()
    run()
    row.refresh_from_db()
    assert row.status == S.SENT and len(row.broadcasts) == 1 and "at the fee ceiling" in row.last_error
    # a higher ceiling: the restarted sender replaces it
    settings.LEDGER_MAX_FEE_PER_GAS = 1000 * GWEI
    chain.rpc("evm_setAutomine", True)
    client.reset_signers()
    assert run()["reconciled"] == 1
    row.refresh_from_db()
    assert row.status == S.CONFIRMED, row.last_error
    _assert_replaced(chain, row)
    assert row.broadcasts[-1]["max_fee_per_gas"] <= 1000 * GWEI


# --- reorgs: confirmed rows re-checked until finality ---------------------------------------------

def test_reorg_undoes_effects_and_resends_the_dropped_rows(chain, settings):
    from ledger.models import RewardClaim
    from ledger.services import reward_claim_request

    settings.LEDGER_FINALITY_DEPTH = 3
    dev, earner = UserFactory(), UserFactory()
    token, dist, models = chain.c["OpenToken"], chain.c["RewardDistributor"], chain.c["ModelRegistry"]
    old = enqueue("model_register", model_payload(40, dev), "m40")
    run()
    chain.mine()
    chain.mine()
    run()  # three blocks on it: final, never checked again
    old.refresh_from_db()
    assert old.finalized_at is not None
    fork = chain.w3.eth.block_number

    rewards_accrue(allocations={earner.pk: Decimal("2.5")}, source="test", reference="reorg")
    epoch = rewards_epoch_close()
    enqueue("model_register", model_payload(41, dev), "m41")
    enqueue("model_register", model_payload(41, dev), "m41 again")  # confirmed from the chain's state
    run()
    claim = RewardClaim.objects.get(epoch=epoch)
    reward_claim_request(claim=claim, user=earner)
    run()
    rows = list(LedgerTransaction.objects.exclude(pk=old.pk).order_by("id"))
    assert [r.status for r in rows] == [S.CONFIRMED] * 4 and all(r.finalized_at is None for r in rows)
    assert all(r.block_hash for r in rows if r.tx_hash) and rows[2].tx_hash == "" and rows[2].block_number
    before = {r.pk: (r.tx_hash, r.block_hash) for r in rows}
    claim.refresh_from_db()
    assert claim.status == RewardClaim.Status.CLAIMED and RewardEpoch.objects.get().status == RewardEpoch.Status.PUBLISHED
    account = address_for_user(earner)
    assert token.functions.balanceOf(account).call() == 25 * E18 // 10

    # every block after the fork is replaced by an empty one: our transactions are gone
    chain.rpc("anvil_reorg", chain.w3.eth.block_number - fork, [])
    assert not dist.functions.claimed(epoch.generation, account).call() and token.functions.balanceOf(account).call() == 0
    ctx = outbox.context()
    head = ctx.signer.head()
    for r in rows:
        outbox.recheck(ctx, r, head)
    for r in rows:
        r.refresh_from_db()
        assert r.status == S.QUEUED and r.tx_hash == "" and r.block_hash == "", (r.kind, r.status)
        assert "reorg" in r.last_error or "no longer holds" in r.last_error
    assert rows[0].broadcasts[-1]["reorg"] == before[rows[0].pk][0]
    claim.refresh_from_db()
    assert claim.status == RewardClaim.Status.QUEUED and claim.claimed_at is None  # effects undone
    assert RewardEpoch.objects.get().status == RewardEpoch.Status.PUBLISHING

    # the next run sends them again, once each, and applies the effects again
    nonce = chain.w3.eth.get_transaction_count(chain.signer.address)
    run()
    for r in rows:
        r.refresh_from_db()
        assert r.status == S.CONFIRMED, (r.kind, r.last_error)
        if r.tx_hash:
            assert r.block_hash and r.block_hash != before[r.pk][1]
    sent = sum(r.steps + 1 for r in rows if r.tx_hash)  # one transaction per step of each re-sent row
    assert sent >= 3 and chain.w3.eth.get_transaction_count(chain.signer.address) == nonce + sent
    claim.refresh_from_db()
    assert claim.status == RewardClaim.Status.CLAIMED and RewardEpoch.objects.get().status == RewardEpoch.Status.PUBLISHED
    assert token.functions.balanceOf(account).call() == 25 * E18 // 10 and dist.functions.claimed(epoch.generation, account).call()
    assert models.functions.getModel(b32(h("adapter 41"))).call()[0] == 41
    old.refresh_from_db()
    assert old.status == S.CONFIRMED  # below the fork and final: untouched

    # blocks on top make them final; a final row is not checked again
    for _ in range(3):
        chain.mine()
    assert run()["rechecked"] == 4
    assert LedgerTransaction.objects.filter(status=S.CONFIRMED, finalized_at__isnull=True).count() == 0
    assert run()["rechecked"] == 0


def test_transaction_remined_in_another_block_keeps_its_effects(chain, settings):
    """A reorg that puts the same transaction in the new branch: only its block is updated, nothing is re-sent."""
    settings.LEDGER_FINALITY_DEPTH = 10
    chain.mine()  # an empty block under ours: the new branch forks there, keeping our earlier nonces
    row = enqueue("model_register", model_payload(42, UserFactory()), "m42")
    run()
    row.refresh_from_db()
    old_hash, nonce = row.block_hash, chain.w3.eth.get_transaction_count(chain.signer.address)
    raw = chain.w3.eth.get_raw_transaction(row.tx_hash).to_0x_hex()
    depth = chain.w3.eth.block_number - row.block_number + 2
    chain.rpc("anvil_reorg", depth, [[raw, 1]])  # the same bytes, in the new branch's second block
    stats = run()
    row.refresh_from_db()
    assert stats["reorged"] == 0 and row.status == S.CONFIRMED
    assert row.block_hash != old_hash
    assert row.block_hash == chain.w3.eth.get_block(row.block_number)["hash"].to_0x_hex()
    assert chain.w3.eth.get_transaction_count(chain.signer.address) == nonce


# --- randomised crash injection (in-process) -----------------------------------------------------

# 60 keeps the suite near its time budget; the acceptance run is LEDGER_CRASH_RUNS=200 (docs/ledger.md).
RUNS = int(os.environ.get("LEDGER_CRASH_RUNS", "60"))


class Crash:
    def __init__(self, point: str, at_call: int):
        self.point, self.at_call, self.calls = point, at_call, 0

    def __call__(self, point, row):
        if point == self.point:
            self.calls += 1
            if self.calls == self.at_call:
                raise outbox.SimulatedCrash(point)


def _restart_and_drain():
    outbox.crash_hook = None
    client.reset_signers()  # a new process: no local nonce, no cached signer
    run()


@pytest.mark.slow
def test_randomised_crashes_never_lose_or_double_a_write(chain):
    rng = random.Random(20261125)
    curator, dev = UserFactory(), UserFactory()
    contributors = [UserFactory() for _ in range(3)]
    d = make_datanet(curators=[curator], min_stake="1", slash_fraction="0.25")
    enqueue("datanet_create", datanet_payload(d), "dc")
    run()
    reg, models, dist, token = (chain.c[n] for n in ("DatanetRegistry", "ModelRegistry", "RewardDistributor", "OpenToken"))
    base = chain.rpc("evm_snapshot")
    for i in range(RUNS):
        rows, expect = [], []
        for j in range(rng.randint(2, 3)):
            what = rng.choice(["stake", "accept", "reject", "model", "version", "epoch"])
            tag = f"{i}.{j}"
            if what in ("stake", "accept", "reject"):
                c = make_contribution(datanet=d, curator=curator, contributor=rng.choice(contributors),
                                      stake=str(rng.randint(1, 50)))
                rows.append(enqueue("contribution_stake", stake_payload(c), f"s:{tag}"))
                if what != "stake":
                    rows.append(enqueue(f"contribution_{what}", {**decision_payload(c), "slash_fraction": "0.25",
                                                                  "reason": "x"}, f"d:{tag}"))
                expect.append(("stake", c, {"stake": 1, "accept": 2, "reject": 3}[what]))
            elif what == "model":
                p = {**model_payload(1000 + i * 10 + j, dev)}
                rows.append(enqueue("model_register", p, f"m:{tag}"))
                expect.append(("model", p, None))
            elif what == "version":
                p = {"version_id": i, "datanet_id": d.pk, "number": i * 10 + j, "merkle_root": h(tag), "record_count": j}
                rows.append(enqueue("version_register", p, f"v:{tag}"))
                expect.append(("version", p, None))
            else:
                rewards_accrue(allocations={u.pk: Decimal(rng.randint(1, 9)) for u in contributors[:rng.randint(1, 3)]},
                               source="test", reference=tag)
                epoch = rewards_epoch_close()
                rows.append(LedgerTransaction.objects.get(idempotency_key=f"epoch:{epoch.pk}:publish"))
                expect.append(("epoch", epoch, None))
        points = [p for p in outbox.CRASH_POINTS if p != "mid_epoch" or any(e[0] == "epoch" for e in expect)]
        point = rng.choice(points)
        outbox.crash_hook = Crash(point, rng.randint(1, 2))
        try:
            run()
        except outbox.SimulatedCrash:
            pass
        finally:
            outbox.crash_hook = None
        sent_before_restart = chain.w3.eth.get_transaction_count(chain.signer.address)
        _restart_and_drain()
        for r in rows:
            r.refresh_from_db()
            assert r.status == S.CONFIRMED, (i, point, r.kind, r.status, r.last_error)
        pending_total = 0
        for what, obj, status in expect:
            if what == "stake":
                s = reg.functions.stakes(d.pk, bytes.fromhex(obj.file_sha256)).call()
                assert s[3] == status and s[2] == int(obj.stake) * E18, (i, point)
                pending_total += s[2] if status in (1, 2) else 0  # pending, or accepted and still bonded
            elif what == "model":
                assert models.functions.getModel(b32(obj["adapter_hash"])).call()[0] == obj["model_id"]
            elif what == "version":
                assert reg.functions.versions(d.pk, obj["number"]).call()[0] == b32(obj["merkle_root"])
            else:
                assert dist.functions.epochs(obj.pk).call()[1] == obj.funded_wei  # cumulative funding
                assert RewardEpoch.objects.get(pk=obj.pk).status == RewardEpoch.Status.PUBLISHED
        # no double transfer: the registry holds exactly the pending and bonded stakes, the distributor the epoch funds
        assert token.functions.balanceOf(reg.address).call() == pending_total, (i, point)
        # (the distributor is funded up to the latest epoch's cumulative total: each publication adds the difference)
        epochs = [o for w, o, _ in expect if w == "epoch"]
        assert token.functions.balanceOf(dist.address).call() == max((o.funded_wei for o in epochs), default=0), (i, point)
        # no duplicate transaction: a restart after the crash sends only what was still missing
        assert chain.w3.eth.get_transaction_count(chain.signer.address) >= sent_before_restart
        LedgerTransaction.objects.filter(pk__in=[r.pk for r in rows]).delete()
        chain.rpc("evm_revert", base)
        base = chain.rpc("evm_snapshot")
