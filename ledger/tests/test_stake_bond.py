"""Harmful data has a cost, end to end on anvil: accepted stakes stay bonded; the noisy contributor that the
weight rule finds harmful is flagged with its mislabelled records, a curator slashes its stake within the bond
(treasury up by the Datanet's slash fraction), and the honest contributor's stake is released after the bond."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from accounts.tests.factories import UserFactory
from attribution.engines.weights import ModelWeightsAccumulator
from core.errors import ApplicationError
from datanets import harm, services
from datanets.models import Contribution, CurationDecision, HarmFlag
from datanets.tests.factories import contributor, curator_of
from datanets.tests.helpers import ingest, upload
from ledger import outbox
from ledger.audit import ledger_audit
from ledger.models import LedgerTransaction
from ledger.tests.conftest import TREASURY

pytestmark = pytest.mark.chain
E18 = 10**18
S = LedgerTransaction.Status

LABELS = ["positive", "negative"]
HONEST = [(f"Profit rose {i} percent in quarter {i}.", "positive") if i % 2 else
          (f"Sales fell {i} percent in region {i}.", "negative") for i in range(40)]
# erin: 40% of her labels flipped (rows 0..15), the rest right
NOISY = [(f"Net income grew by {i} million this year.", "negative" if i < 16 else "positive") for i in range(40)]


def _csv(rows) -> bytes:
    return ("label,text\n" + "".join(f"{label},{text}\n" for text, label in rows)).encode()


def _findings(records, rng) -> list[dict]:
    """Synthetic engine scores over the version's real records: honest records help the validation set,
    erin's mislabelled ones hurt it, her right ones help; harmful() as the index build calls it."""
    ids = [str(r.pk) for r in records]
    owners = [str(r.contributor_id) for r in records]
    mislabelled = {r.pk for r in records if r.text.startswith("Net income") and r.label == "negative"}
    mu = np.array([-1.5 if r.pk in mislabelled else 0.5 for r in records])
    scores = (rng.standard_normal((150, len(records))) + mu) * np.exp(rng.standard_normal((150, 1)))
    acc = ModelWeightsAccumulator(owners, record_ids=ids)
    acc.add(scores)
    paid = acc.result()
    findings = [{"contributor_id": int(h.contributor), "statistic": h.statistic, "null_bound": h.null_bound,
                 "records": [(int(ids[col]), s) for col, s in h.records]} for h in acc.harmful(0.02, result=paid)]
    return findings, paid, mislabelled


def _run():
    stats = outbox.outbox_process()
    bad = list(LedgerTransaction.objects.exclude(status=S.CONFIRMED).values_list("kind", "status", "last_error"))
    assert not bad, bad
    return stats


def test_flag_slash_within_the_bond_and_release_after(chain, settings):
    token, reg = chain.c["OpenToken"], chain.c["DatanetRegistry"]
    bond = reg.functions.bondSeconds().call()
    assert bond == settings.LEDGER_STAKE_BOND_SECONDS > 0
    owner = UserFactory()
    datanet = services.datanet_create(owner=owner, name="Harm", labels=LABELS, min_stake=Decimal("10"),
                                      slash_fraction=Decimal("0.25"))
    datanet.harm_threshold = 0.02
    datanet.save(update_fields=["harm_threshold"])
    cora, alice, erin = curator_of(datanet, "cora"), contributor("alice"), contributor("erin")
    honest = ingest(upload(datanet, alice, "alice.csv", _csv(HONEST)))
    noisy = ingest(upload(datanet, erin, "erin.csv", _csv(NOISY)))
    for c in (honest, noisy):
        c = services.contribution_accept(contribution=c, curator=cora)
        assert c.bond == Contribution.Bond.BONDED and c.bonded_until > timezone.now() + timedelta(seconds=bond - 60)
    _run()
    held = token.functions.balanceOf(reg.address).call()
    assert held >= 20 * E18
    for c in (honest, noisy):
        assert reg.functions.stakes(datanet.pk, bytes.fromhex(c.file_sha256)).call()[5] == 1  # bonded on-chain

    # The model-level rule finds erin harmful (and pays her nothing); alice is not flagged.
    version = services.datanet_version_create(datanet=datanet, user=cora)
    findings, paid, mislabelled = _findings(list(version.records.order_by("id")), np.random.default_rng(0))
    assert [f["contributor_id"] for f in findings] == [erin.pk]
    assert paid.weights[str(erin.pk)] == 0 < paid.weights[str(alice.pk)]
    findings[0]["contribution_ids"] = [noisy.pk]
    [flag] = harm.harm_flags_record(datanet=datanet, model_id=4242, model_name="quick finance", harms=findings,
                                    validation_queries=150)
    assert flag.contributor == erin and list(flag.contributions.all()) == [noisy]
    shown = {r["record_id"] for r in flag.evidence["records"][:10]}
    assert shown <= mislabelled  # the evidence lists her flipped labels
    assert flag.statistic < -flag.null_bound and flag.harm_threshold == 0.02

    # Only a curator of the Datanet acts, never erin herself; a reason is required.
    with pytest.raises(ApplicationError, match="not a curator"):
        harm.harm_flag_slash(flag=flag, curator=alice, reason="x")
    with pytest.raises(ApplicationError, match="needs a reason"):
        harm.harm_flag_slash(flag=flag, curator=cora, reason=" ")
    treasury0 = token.functions.balanceOf(TREASURY).call()
    staker0 = token.functions.balanceOf(chain.signer.address).call()  # the operator sponsored both stakes
    [slashed] = harm.harm_flag_slash(flag=flag, curator=cora, reason="40% flipped labels (harm flag)")
    assert slashed.status == Contribution.Status.REJECTED and slashed.bond == Contribution.Bond.SLASHED
    assert CurationDecision.objects.filter(contribution=noisy, decision=CurationDecision.Decision.SLASHED).exists()
    flag.refresh_from_db()
    assert flag.status == HarmFlag.Status.SLASHED and flag.decided_by == cora
    with pytest.raises(ApplicationError, match="already slashed"):
        harm.harm_flag_dismiss(flag=flag, curator=cora)
    _run()
    stake = int(noisy.stake * E18)
    assert token.functions.balanceOf(TREASURY).call() - treasury0 == stake // 4  # slash fraction 0.25
    staker1 = token.functions.balanceOf(chain.signer.address).call()
    assert staker1 - staker0 == stake - stake // 4
    assert reg.functions.stakes(datanet.pk, bytes.fromhex(noisy.file_sha256)).call()[5] == 3  # Slashed

    # Within the bond nothing is released; after it the beat releases alice's whole stake, once.
    assert harm.contribution_bonds_release() == 0
    chain.mine(bond + 1)
    later = timezone.now() + timedelta(seconds=bond) + harm.RELEASE_MARGIN
    with pytest.raises(ApplicationError, match="already|no bonded"):
        harm.contribution_slash(contribution=noisy, curator=cora, reason="again")
    assert harm.contribution_bonds_release(now=later) == 1
    assert harm.contribution_bonds_release(now=later) == 0
    _run()
    honest.refresh_from_db()
    assert honest.bond == Contribution.Bond.RELEASED
    assert token.functions.balanceOf(chain.signer.address).call() - staker1 == int(honest.stake * E18)
    assert token.functions.balanceOf(reg.address).call() == held - stake - int(honest.stake * E18)
    # ledger_audit checks the new kinds against the registry's events
    audit = ledger_audit()
    checks = {c.kind: c for c in audit.checks if c.kind in ("contribution_slash", "contribution_release")}
    assert set(checks) == {"contribution_slash", "contribution_release"} and all(c.ok for c in checks.values())


def test_slash_is_refused_after_the_bond_ends_and_the_chain_agrees(chain):
    datanet = services.datanet_create(owner=UserFactory(), name="Late", labels=LABELS, slash_fraction=Decimal("0.5"))
    cora, erin = curator_of(datanet, "cora2"), contributor("erin2")
    c = services.contribution_accept(contribution=ingest(upload(datanet, erin, "e.csv", _csv(NOISY))), curator=cora)
    _run()
    Contribution.objects.filter(pk=c.pk).update(bonded_until=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApplicationError, match="can no longer be slashed"):
        harm.contribution_slash(contribution=c, curator=cora, reason="late")
    # The chain's clock decides: a slash row sent after its bond ended fails with why, nothing moves.
    Contribution.objects.filter(pk=c.pk).update(bonded_until=timezone.now() + timedelta(days=1))
    chain.mine(chain.c["DatanetRegistry"].functions.bondSeconds().call() + 1)
    harm.contribution_slash(contribution=c, curator=cora, reason="late")
    outbox.outbox_process()
    row = LedgerTransaction.objects.get(idempotency_key=f"contribution_slash:{c.pk}")
    assert row.status == S.FAILED and "bond" in row.last_error
