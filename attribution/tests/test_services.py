"""The attribution service end to end: a really trained tiny LoRA classifier, a real index on disk."""
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.db import transaction

from attribution import selectors, services
from attribution.models import AttributionIndex, ModelContributorWeight
from attribution.tests.factories import LABELS, make_model
from core.errors import ApplicationError

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(trained_adapter, attr_base_dir, tmp_path):
    return make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)


def build(model) -> AttributionIndex:
    with transaction.atomic():
        index = services.attribution_index_build_enqueue(model=model)
    return services.attribution_index_build(index_id=index.id, hostname="test")


def test_a_rebuild_is_queued_after_commit(model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        index = services.attribution_index_build_enqueue(model=model)
    assert index.status == AttributionIndex.Status.QUEUED and index.method == "gradient"
    assert len(callbacks) == 1  # the gpu task is sent once the caller's transaction commits


def test_build_explain_and_weights(model):
    index = build(model)
    assert index.status == AttributionIndex.Status.READY, index.error
    directory = Path(index.directory)
    assert directory == Path(model.adapter_dir).parent / "attribution" / "gradient"
    for name in ("index.json", "grads.f16", "preconditioner.npy", "weights.json", "summary.json"):
        assert (directory / name).is_file(), name
    # the index covers exactly the trainer's training split; the weights average over its held-out split
    version_ids = set(model.datanet_version.records.values_list("id", flat=True))
    assert index.record_count == 27 and index.validation_count == 9
    assert index.disk_bytes > 0 and index.timings["total_s"] > 0

    weights = selectors.model_contributor_weights(model=model)
    assert set(weights) <= set(model.datanet_version.records.values_list("contributor_id", flat=True))
    assert all(isinstance(w, Decimal) and w > 0 for w in weights.values())
    assert sum(weights.values()) == Decimal(1)
    assert ModelContributorWeight.objects.filter(model=model).count() == 3
    assert sum(r.record_count for r in ModelContributorWeight.objects.filter(model=model)) == 27

    out = services.prediction_explain(model=model, text="the company profit rose in quarter 99", top_k=4)
    assert out["prediction"]["label"] in LABELS
    assert abs(sum(out["prediction"]["probabilities"].values()) - 1) < 1e-3
    assert len(out["records"]) == 4
    relevance = [r["relevance"] for r in out["records"]]
    assert relevance == sorted(relevance, reverse=True)  # shown by relative influence, not raw score
    assert all(np.sign(r["relevance"]) == np.sign(r["score"]) for r in out["records"])
    for r in out["records"]:
        assert r["record_id"] in version_ids
        record = model.datanet_version.records.get(pk=r["record_id"])
        assert (r["text"], r["label"], r["contributor_id"]) == (record.text, record.label, record.contributor_id)
        assert r["contributor"] == record.contributor.username
    shares = [c["share"] for c in out["contributors"]]
    assert shares and abs(sum(shares) - 1) < 1e-9 and all(s > 0 for s in shares)
    # every record shown (top_k = all 27): the answer's split is the net relevance per contributor, clipped
    # at zero, i.e. computed from the same numbers as the records shown, not from the raw scores
    everything = services.prediction_explain(model=model, text="the company profit rose in quarter 99", top_k=27)
    assert len(everything["records"]) == 27
    net: dict[int, float] = {}
    for r in everything["records"]:
        net[r["contributor_id"]] = net.get(r["contributor_id"], 0.0) + r["relevance"]
    positive = {u: v for u, v in net.items() if v > 0}
    expected = {u: v / sum(positive.values()) for u, v in positive.items()}
    got = {c["user_id"]: c["share"] for c in everything["contributors"]}
    assert got.keys() == expected.keys()
    assert all(abs(got[u] - expected[u]) < 1e-9 for u in expected)

    influential = selectors.model_influential_records(model=model, limit=5)
    mislabeled = selectors.model_self_influence_top(model=model, limit=5)
    assert len(mislabeled) == 5 and all(r["record_id"] in version_ids for r in influential + mislabeled)


def test_weights_are_deterministic_for_a_fixed_seed(model):
    build(model)
    first = selectors.model_contributor_weights(model=model)
    explained = services.prediction_explain(model=model, text="sales fell and jobs were cut", top_k=3)
    index = build(model)  # a rebuild from scratch: new files swapped in, rows replaced
    assert index.status == AttributionIndex.Status.READY and index.attempts == 2
    assert selectors.model_contributor_weights(model=model) == first
    again = services.prediction_explain(model=model, text="sales fell and jobs were cut", top_k=3)
    assert [r["record_id"] for r in again["records"]] == [r["record_id"] for r in explained["records"]]
    assert not list(Path(index.directory).parent.glob("*.tmp-*"))


def test_a_finished_build_is_not_run_again(model):
    index = build(model)
    assert services.attribution_index_build(index_id=index.id, hostname="other") is None  # a redelivered message


def test_explain_needs_a_ready_index_and_valid_input(model):
    with pytest.raises(ApplicationError) as info:
        services.prediction_explain(model=model, text="profit rose")
    assert info.value.status_code == 409 and "no attribution index" in info.value.message
    with transaction.atomic():
        services.attribution_index_build_enqueue(model=model)
    with pytest.raises(ApplicationError, match="is queued"):
        services.prediction_explain(model=model, text="profit rose")
    with pytest.raises(ApplicationError, match="Type some text"):
        services.prediction_explain(model=model, text="   ")
    with pytest.raises(ApplicationError, match="top_k"):
        services.prediction_explain(model=model, text="profit rose", top_k=0)


def test_generation_models_are_marked_unsupported(trained_adapter, attr_base_dir, tmp_path):
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path, task="generation")
    with transaction.atomic():
        index = services.attribution_index_build_enqueue(model=model)
    assert index.status == AttributionIndex.Status.UNSUPPORTED and "classification" in index.error
    assert services.attribution_index_build(index_id=index.id) is None
    # ...and their Datanet version's span index is queued instead, for the span attribution of answers.
    from serving.models import SpanIndex

    span = SpanIndex.objects.get(version=model.datanet_version, base_model=model.base_model)
    assert span.status == SpanIndex.Status.QUEUED


def test_a_missing_base_model_fails_the_build_with_a_reason(model):
    base = model.base_model
    base.source = "/nonexistent/tiny-bert"
    base.save()
    index = build(model)
    assert index.status == AttributionIndex.Status.FAILED and "config.json" in index.error
    assert selectors.model_contributor_weights(model=model) == {}


def test_weights_say_which_rule_paid(model):
    # 9 held-out queries cannot tell 3 contributors from noise (the null's quantile needs >= 14 queries
    # for even a perfectly consistent contributor): the build says so and splits equally.
    import json

    index = build(model)
    assert index.settings["weights_signal"] is False and index.settings["weights_rule"] == "equal_no_signal"
    stored = json.loads((Path(index.directory) / services.WEIGHTS_FILE).read_text())
    assert stored["signal"] is False and stored["null_alpha"] == 0.01 and stored["queries_scored"] == 9
    weights = selectors.model_contributor_weights(model=model)
    assert len(weights) == 3 and sum(weights.values()) == Decimal(1)
    assert max(weights.values()) - min(weights.values()) <= Decimal("1e-16")  # equal up to float rounding


def test_published_weights_stay_what_is_paid_after_a_rebuild(model):
    """The chain holds the first published root (set once per model): a rebuild whose weights differ does not
    replace the weights payouts use, so what is paid stays what anyone can verify against the chain."""
    from attribution.models import AttributionPublication, ModelContributorWeight
    from attribution.publication import published_matches_current

    build(model)
    publication = AttributionPublication.objects.get(model=model)
    published = selectors.model_contributor_weights(model=model)
    # Mark the published rows: a rebuild that replaced them would write fresh record counts.
    ModelContributorWeight.objects.filter(model=model).update(record_count=0)
    build(model)
    assert selectors.model_contributor_weights(model=model) == published
    assert set(ModelContributorWeight.objects.filter(model=model).values_list("record_count", flat=True)) == {0}
    assert published_matches_current(publication=publication, weights=published)


def test_the_curator_held_evaluation_set_is_the_validation_queries(trained_adapter, attr_base_dir, tmp_path):
    """With an evaluation set in the version, its records (and only they) are the validation queries; the
    trainer's split and the paid records are those of the training records, and its uploader is never paid.
    Without one, the held-out split is the fallback (test_build_explain_and_weights: 9 queries)."""
    import hashlib
    import json

    from accounts.tests.factories import UserFactory
    from attribution.tests.factories import WORDS, make_version
    from datanets.models import Contribution, Record

    version = make_version()
    cura = UserFactory(username="cura")
    held = Contribution.objects.create(datanet=version.datanet, contributor=cura, file_name="held.csv",
                                       file_sha256="e" * 64, status=Contribution.Status.ACCEPTED, is_evaluation=True)
    rows = [(f"an analyst saw {WORDS[label][i % 5]} at the firm, case {i}", label)
            for i, label in enumerate(LABELS * 4)]
    version.records.add(*[Record.objects.create(
        datanet=version.datanet, contribution=held, contributor=cura, text=text, label=label, row_number=i,
        sha256=hashlib.sha256(f"{text}\x00{label}".encode()).hexdigest()) for i, (text, label) in enumerate(rows)])
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path, version=version)
    index = build(model)
    assert index.status == AttributionIndex.Status.READY, index.error
    assert index.record_count == 27 and index.validation_count == 12  # 36 training records (27 + 9 held out)
    assert index.settings["validation_source"] == "evaluation_set"
    weights = json.loads((Path(index.directory) / services.WEIGHTS_FILE).read_text())
    assert weights["validation_queries"] == 12 and weights["validation_source"] == "evaluation_set"
    assert str(cura.id) not in weights["weights"]
    assert not ModelContributorWeight.objects.filter(model=model, contributor=cura).exists()
    fallback = build(make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path / "b",
                                version=make_version(slug="no-evaluation-set")))
    assert fallback.validation_count == 9 and fallback.settings["validation_source"] == "held_out"
