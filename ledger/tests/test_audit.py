"""`manage.py ledger_audit` and the explorer's checks: outbox rows against the chain's events, on anvil."""
from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts.tests.factories import UserFactory
from ledger import outbox
from ledger.audit import ledger_audit
from ledger.models import LedgerTransaction, RewardClaim
from ledger.services import enqueue, reward_claim_request, rewards_accrue, rewards_epoch_close
from ledger.tests.factories import datanet_payload, decision_payload, h, make_contribution, make_datanet, stake_payload

pytestmark = pytest.mark.chain


def _writes():
    curator, dev, earner = UserFactory(), UserFactory(), UserFactory()
    d = make_datanet(curators=[curator], min_stake="4", slash_fraction="0.25")
    c1 = make_contribution(datanet=d, curator=curator, stake="4")
    c2 = make_contribution(datanet=d, curator=curator, stake="10")
    enqueue("datanet_create", datanet_payload(d), "dc")
    enqueue("contribution_stake", stake_payload(c1), "s1")
    enqueue("contribution_stake", stake_payload(c2), "s2")
    enqueue("contribution_accept", decision_payload(c1), "a1")
    enqueue("contribution_reject", {**decision_payload(c2), "slash_fraction": "0.25", "reason": "spam"}, "r2")
    enqueue("version_register", {"version_id": 1, "datanet_id": d.pk, "number": 1, "merkle_root": h("root"),
                                 "record_count": 3}, "v1")
    enqueue("model_register", {"model_id": 9, "adapter_hash": h("adapter 9"), "base_model": "minilm-l6",
                               "version_root": h("root"), "attribution_root": h("attr 9"), "developer_id": dev.pk}, "m9")
    rewards_accrue(allocations={earner.pk: Decimal("1.5")}, source="test", reference="audit")
    epoch = rewards_epoch_close()
    outbox.outbox_process()
    reward_claim_request(claim=RewardClaim.objects.get(epoch=epoch), user=earner)
    outbox.outbox_process()
    assert set(LedgerTransaction.objects.values_list("status", flat=True)) == {"confirmed"}


def _audit() -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("ledger_audit", stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_audit_passes_after_real_writes_and_reports_a_tampered_row(chain, client, settings):
    _writes()
    text, error = _audit()
    assert error is None, text
    audit = ledger_audit()
    kinds = {k["kind"] for k in audit.by_kind()}
    assert kinds == set(LedgerTransaction.objects.values_list("kind", flat=True)) and "contribution_stake" in kinds
    assert len(audit.checks) == LedgerTransaction.objects.count() and audit.ok

    # the database says 12 OPEN were staked; the chain's Staked event says 10
    stake = LedgerTransaction.objects.get(idempotency_key="s2")
    LedgerTransaction.objects.filter(pk=stake.pk).update(payload={**stake.payload, "stake": "12"})
    version = LedgerTransaction.objects.get(idempotency_key="v1")
    LedgerTransaction.objects.filter(pk=version.pk).update(payload={**version.payload, "merkle_root": h("forged")})
    text, error = _audit()
    assert error is not None and error.returncode == 1 and "2 mismatches" in str(error)
    assert f"MISMATCH contribution_stake #{stake.pk}" in text and "12000000000000000000 wei staked" in text
    assert f"MISMATCH version_register #{version.pk}" in text and h("forged") in text

    # the explorer shows the same checks, stakes included
    body = client.get(reverse("ledger:explorer")).content.decode()
    assert "contribution_stake" in body and "12000000000000000000 wei staked" in body


def test_a_failed_row_is_a_mismatch(chain):
    d = make_datanet(min_stake="10")
    c = make_contribution(datanet=d, stake="5")
    enqueue("datanet_create", datanet_payload(d), "dc")
    row = enqueue("contribution_stake", stake_payload(c), "s")  # below the minimum: the contract refuses it
    outbox.outbox_process()
    text, error = _audit()
    assert error is not None and f"MISMATCH contribution_stake #{row.pk}" in text and "StakeTooSmall" in text
    assert "no Staked" in text


def test_audit_without_a_chain_exits_non_zero(db, settings):
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"
    with pytest.raises(CommandError, match="could not read the chain"):
        call_command("ledger_audit", stdout=io.StringIO())
