"""Settle only by attribution: a paid answer made before its model's index is ready is charged and held,
then split by its own attribution when the index is ready; an answer with no positive influence goes by
the model's contributor weights; splits are exact wei by largest remainder. And the answer explained is
the answer served (SERVING_DTYPE=bfloat16 included)."""
from __future__ import annotations

import json
import shutil
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from django.db import transaction
from safetensors.torch import load_file, save_file

from accounts.tests.factories import UserFactory
from attribution import services as attribution_services
from attribution.models import AttributionIndex
from attribution.selectors import model_contributor_weights
from attribution.tests.factories import LABELS, make_model, make_version
from ledger.models import RewardAccrual
from serving import services
from serving.api.serializers import InferenceSerializer
from serving.models import Inference

pytestmark = pytest.mark.django_db
FEE = Decimal("0.01")


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEB3_PROVIDER_URI = ""  # no chain: governance's deployed default split, 70/20/10
    settings.VAR_DIR = tmp_path
    settings.SERVING_FEE_PER_CALL = str(FEE)
    settings.SERVING_BACKEND = "inprocess"


@pytest.fixture
def fresh_engine(monkeypatch):
    """A serving engine built from this test's settings (the process keeps one per settings otherwise)."""
    monkeypatch.setattr(services, "_engine", None)
    monkeypatch.setattr(services, "_batcher", None)


def build_index(model) -> AttributionIndex:
    with transaction.atomic():
        index = attribution_services.attribution_index_build_enqueue(model=model)
    return attribution_services.attribution_index_build(index_id=index.id, hostname="test")


def accrued(row) -> dict[str, dict[int, Decimal]]:
    out: dict[str, dict[int, Decimal]] = {}
    for a in RewardAccrual.objects.filter(reference__in=[f"inference:{row.pk}", f"inference:{row.pk}:contributors"]):
        out.setdefault(a.reference.rpartition(":")[2] if a.reference.endswith("contributors") else "developer",
                       {})[a.user_id] = a.amount
    return out


def assert_exact(split: dict, fee: Decimal) -> None:
    parts = [Decimal(a) for a in split["contributors"].values()]
    parts += [Decimal(split["developer"]["amount"]), Decimal(split["protocol"]), Decimal(split["held"])]
    assert sum(parts) == fee and all(p >= 0 and p == p.quantize(Decimal(10) ** -18) for p in parts)


def test_split_wei_is_largest_remainder_and_exact():
    # quotas 3.5 / 1.75 / 1.75: the two largest remainders get the 2 wei left (rounding down and giving
    # the dust to the largest share would have paid 5 / 1 / 1)
    assert services.split_wei(7, {1: 0.5, 2: 0.25, 3: 0.25}) == {1: 3, 2: 2, 3: 2}
    assert services.split_wei(10, {5: 1, 6: 1, 7: 1}) == {5: 4, 6: 3, 7: 3}  # a tie: the earlier key
    assert services.split_wei(10, {1: 0.0, 2: -1.0}) == {}
    rng = __import__("random").Random(0)
    for _ in range(200):
        total = rng.randrange(1, 10**18)
        shares = {u: rng.random() ** 3 for u in range(rng.randrange(1, 40))}
        got = services.split_wei(total, shares)
        whole = sum(Fraction(s) for s in shares.values())
        assert sum(got.values()) == total
        # each gets its exact quota rounded down or up, never further from it
        assert all(abs(got[u] - total * Fraction(s) / whole) < 1 for u, s in shares.items())


def test_a_call_before_the_index_is_held_then_settled_by_attribution(trained_adapter, attr_base_dir, tmp_path,
                                                                     django_capture_on_commit_callbacks):
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)
    payer = UserFactory()
    row = services.inference_execute(model=model, user=payer, text="the company profit rose in quarter 99")
    # Charged at once; the developer's part accrues; the contributors' part is held, not split by anything.
    assert row.status == Inference.Status.DONE and row.fee == FEE
    assert row.settlement == Inference.Settlement.PENDING and row.settlement_rule == ""
    assert row.attribution["status"] == "pending" and row.attribution["contributors"] == []
    assert row.fee_split["held"] == row.fee_split["contributors_part"] == "0.007000000000000000"
    assert row.fee_split["contributors"] == {} and "record_counts" not in json.dumps(row.fee_split)
    assert_exact(row.fee_split, FEE)
    assert accrued(row) == {"developer": {model.developer_id: Decimal("0.002")}}
    body = InferenceSerializer(row).data
    assert body["settlement"]["status"] == "pending" and body["settlement"]["rule"] == ""
    # The sweep leaves it while the index is not ready.
    assert services.inferences_settle(model_id=model.pk) == {"settled": 0, "waiting": 1}

    with django_capture_on_commit_callbacks(execute=False) as queued:
        index = build_index(model)
    assert index.status == AttributionIndex.Status.READY, index.error
    assert queued, "the index-ready signal queues the settlement"
    row = services.inference_settle(inference_id=row.pk)
    assert row.settlement == Inference.Settlement.SETTLED and row.settled_at is not None
    assert row.settlement_rule == Inference.Rule.ATTRIBUTION
    assert row.attribution["label"] == row.output["label"]  # the label served is the label explained
    shares = {c["user_id"]: c["share"] for c in row.attribution["contributors"]}
    paid = {int(u): Decimal(a) for u, a in row.fee_split["contributors"].items()}
    assert set(paid) == set(shares) and sum(paid.values()) == Decimal("0.007")
    assert row.fee_split["held"] == "0.000000000000000000"
    assert_exact(row.fee_split, FEE)
    assert accrued(row) == {"developer": {model.developer_id: Decimal("0.002")}, "contributors": paid}
    again = services.inference_settle(inference_id=row.pk)  # idempotent: nothing moves, nothing doubles
    assert again.fee_split == row.fee_split and RewardAccrual.objects.count() == 1 + len(paid)
    body = InferenceSerializer(again).data
    assert body["settlement"]["status"] == "settled" and body["settlement"]["rule"] == "attribution"
    # What /explain says of each record and contributor, the paid answer says too.
    explained = attribution_services.prediction_explain(model=model, text=row.input_text, top_k=len(body["attribution"]["records"]),
                                   served=row.output)
    keys = ("record_id", "text", "label", "contributor", "contributor_id")
    assert [{k: r[k] for k in keys} for r in body["attribution"]["records"]] == \
        [{k: r[k] for k in keys} for r in explained["records"]]
    assert {c["user_id"]: c["username"] for c in body["attribution"]["contributors"]} == \
        {c["user_id"]: c["username"] for c in explained["contributors"] if c["user_id"] in shares}


def test_no_positive_influence_is_split_by_the_model_weights(trained_adapter, attr_base_dir, tmp_path):
    # Two contributors who each hold records of every label: some (text, label) answers then have no
    # contributor with positive net influence.
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path,
                       version=make_version(contributors=2))
    assert build_index(model).status == AttributionIndex.Status.READY
    weights = model_contributor_weights(model=model)
    found = {}
    for text in ["profit profit profit", "the meeting was held", "the company profit rose in quarter 99", "weather"]:
        for label in LABELS:
            settled = services.answer_settlement(model=model, text=text, output={"label": label, "probabilities": {}})
            found.setdefault(settled[1], (text, label, settled))
    assert set(found) == {Inference.Rule.ATTRIBUTION, Inference.Rule.MODEL_WEIGHTS}
    _, _, (attribution, rule, shares) = found[Inference.Rule.MODEL_WEIGHTS]
    assert shares == {int(u): w for u, w in weights.items()} and sum(shares.values()) == 1
    assert "no contributor has positive influence" in attribution["reason"]
    # Settled through the same path as a real call: the held part goes out by the weights, exactly.
    text, label, _ = found[Inference.Rule.MODEL_WEIGHTS]
    row = Inference.objects.create(model=model, user=UserFactory(), input_text=text, output={"label": label},
                                   status=Inference.Status.DONE, fee=FEE, settlement=Inference.Settlement.PENDING,
                                   fee_split=services.fee_split_charge(model=model, fee=FEE))
    row = services.inference_settle(inference_id=row.pk)
    assert row.settlement_rule == Inference.Rule.MODEL_WEIGHTS
    paid = {int(u): Decimal(a) for u, a in row.fee_split["contributors"].items()}
    assert paid == {u: Decimal(a) / 10**18 for u, a in services.split_wei(7 * 10**15, shares).items()}
    assert_exact(row.fee_split, FEE)


def test_the_sweep_settles_what_the_signal_missed_and_queues_missing_indexes(trained_adapter, attr_base_dir, tmp_path,
                                                                           django_capture_on_commit_callbacks):
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)
    row = services.inference_execute(model=model, user=UserFactory(), text="sales fell and jobs were cut")
    assert not AttributionIndex.objects.filter(model=model).exists()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert services.inferences_settle() == {"settled": 0, "waiting": 1}
    index = AttributionIndex.objects.get(model=model)  # a model with held answers and no index gets one
    assert index.status == AttributionIndex.Status.QUEUED and len(queued) == 1
    with django_capture_on_commit_callbacks(execute=False):  # the signal's message is lost
        attribution_services.attribution_index_build(index_id=index.pk, hostname="test")
    assert services.inferences_settle() == {"settled": 1, "waiting": 0}
    row.refresh_from_db()
    assert row.settlement == Inference.Settlement.SETTLED and sum(
        Decimal(a) for a in row.fee_split["contributors"].values()) == Decimal("0.007")


def test_explained_on_the_serving_engines_model_in_float32(trained_adapter, attr_base_dir, tmp_path, fresh_engine,
                                                           settings):
    from factory.training import predict

    settings.SERVING_DTYPE = "float32"
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)
    build_index(model)
    row = services.inference_execute(model=model, user=UserFactory(), text="sales fell and jobs were cut")
    assert row.settlement == Inference.Settlement.SETTLED and row.attribution["label"] == row.output["label"]
    assert (str(attr_base_dir), model.adapter_dir) not in predict._cache  # no second copy was loaded
    # ...and it is the explanation a float32 PeftModel copy gives for the same served label
    copy = attribution_services.prediction_explain(model=model, text=row.input_text, top_k=5, served=row.output)
    assert [r["record_id"] for r in copy["records"]] == [r["record_id"] for r in row.attribution["records"]]
    assert [r["score"] for r in copy["records"]] == pytest.approx([r["score"] for r in row.attribution["records"]],
                                                                 rel=1e-3)


def _tied_head(adapter_dir: Path) -> None:
    """Labels 0 and 1 get the same head row and biases 2^-20 apart: float32 serves label 1, bfloat16
    (8 bits of mantissa) rounds both biases to 0.25 and serves label 0. Label 2 is far below. The row is
    scaled to norm 1e-3 so the features' part of a logit stays far below 0.25: a trained head's logits
    (tens, from the trainer's linear-probe start) would put float32's own rounding step above 2^-20."""
    path = adapter_dir / "adapter_model.safetensors"
    tensors = load_file(str(path))
    weight = tensors["base_model.model.classifier.weight"]
    row = weight[0] * (1e-3 / weight[0].norm())
    tensors["base_model.model.classifier.weight"] = row.repeat(3, 1).contiguous()
    tensors["base_model.model.classifier.bias"] = torch.tensor([0.25, 0.25 + 2**-20, -0.25])
    save_file(tensors, str(path))


def test_bfloat16_serving_explains_the_label_it_served(trained_adapter, attr_base_dir, tmp_path, fresh_engine,
                                                       settings):
    from factory.training.predict import predict

    settings.SERVING_DTYPE = "bfloat16"
    src = tmp_path / "tied"
    shutil.copytree(trained_adapter, src)
    _tied_head(src)
    model = make_model(adapter_src=src, base_dir=attr_base_dir, workdir=tmp_path)
    build_index(model)
    text = "the company profit rose in quarter 99"
    assert predict(str(attr_base_dir), model.adapter_dir, text)["label"] == LABELS[1]  # float32's own argmax
    row = services.inference_execute(model=model, user=UserFactory(), text=text)
    assert row.output["label"] == LABELS[0]  # what bfloat16 served and charged
    assert row.settlement == Inference.Settlement.SETTLED
    assert row.attribution["label"] == row.output["label"] == LABELS[0]
