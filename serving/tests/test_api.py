"""POST /api/v1/models/<id>/infer: output, attribution, fee and its accrual; every 4xx."""
from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_create
from accounts.tests.factories import UserFactory
from factory.models import FineTuneJob
from factory.tests.factories import make_version
from ledger.models import RewardAccrual
from serving.models import Inference, SpanIndex
from serving.services import span_index_build
from serving.tests.factories import make_model

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEB3_PROVIDER_URI = ""  # no chain: the fee split is governance's deployed default 70/20/10
    settings.VAR_DIR = tmp_path
    settings.SERVING_FEE_PER_CALL = "0.01"
    settings.SERVING_MAX_INPUT_CHARS = 200
    settings.SERVING_BACKEND = "inprocess"


def client_for(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def infer(api, model_id, text="the company profit rose"):
    return api.post(f"/api/v1/models/{model_id}/infer", {"text": text}, format="json")


def test_classifier_call_answers_records_and_charges(tiny_bert, bert_adapters):
    version = make_version(n=12, contributors=3)
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=version)
    payer = UserFactory()
    resp = infer(client_for(payer), model.pk)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["output"]["label"] in ("neg", "pos") and set(body["output"]["probabilities"]) == {"neg", "pos"}
    assert Decimal(body["fee"]) == Decimal("0.01")
    # No gradient index for this model yet: charged, the contributors' part held until it is ready
    # (serving/tests/test_settlement.py settles it), never split by record counts.
    att = body["attribution"]
    assert att["status"] == "pending" and att["contributors"] == []
    assert body["settlement"]["status"] == "pending" and body["settlement"]["rule"] == ""
    row = Inference.objects.get(pk=body["id"])
    assert row.status == Inference.Status.DONE and row.user == payer and row.input_text == "the company profit rose"
    assert row.settlement == Inference.Settlement.PENDING
    accruals = {a.user_id: a.amount for a in RewardAccrual.objects.filter(reference=f"inference:{row.pk}")}
    assert accruals == {model.developer_id: Decimal("0.002")}
    assert row.fee_split["held"] == "0.007000000000000000" and row.fee_split["contributors"] == {}
    assert Decimal(row.fee_split["protocol"]) == Decimal("0.001")
    assert all(a.source == "inference" and a.model_id == model.pk for a in RewardAccrual.objects.all())


def test_api_key_call_is_recorded_and_rate_limited(tiny_bert, bert_adapters):
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[1], version=make_version(n=6))
    user = UserFactory()
    key, raw = api_key_create(user=user, name="integrator", rate_limit_per_minute=2)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert [infer(api, model.pk).status_code for _ in range(2)] == [200, 200]
    assert Inference.objects.filter(api_key=key, user=user, status=Inference.Status.DONE).count() == 2
    # Last: DRF marks the (test's) transaction for rollback when it answers an error.
    third = infer(api, model.pk)
    assert third.status_code == 429


@pytest.mark.parametrize(("model_id", "status"), [("999999", 404), ("abc", 404)])
def test_unknown_model_is_404(model_id, status):
    # Nothing is written for a refused call: the service validates before it creates the row.
    assert infer(client_for(UserFactory()), model_id).status_code == status


# DRF marks an enclosing transaction for rollback when it answers an error: several 4xx in one test need
# real commits (transactional_db) rather than the test's wrapping transaction.
@pytest.mark.django_db(transaction=True)
def test_bad_inputs_and_unready_models(tiny_bert, bert_adapters, tmp_path):
    version = make_version(n=6)
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=version)
    api = client_for(UserFactory())
    assert not Inference.objects.exists()
    empty = infer(api, model.pk, text="   ")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    nul = infer(api, model.pk, text="profit\x00rose")  # PostgreSQL text cannot hold it: a 400, not a 500
    assert nul.status_code == 400 and "nul" in nul.json()["error"]["message"].lower()
    assert api.post(f"/api/v1/models/{model.pk}/infer", {}, format="json").status_code == 400
    big = infer(api, model.pk, text="x" * 201)
    assert big.status_code == 413 and "limit is 200" in big.json()["error"]["message"]
    running = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=version,
                         status=FineTuneJob.Status.RUNNING)
    r = infer(api, running.pk)
    assert r.status_code == 409 and "running" in r.json()["error"]["message"]
    gone = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=version)
    gone.adapter_dir = str(tmp_path / "deleted")
    gone.save()
    r = infer(api, gone.pk)
    assert r.status_code == 409 and "adapter files are missing" in r.json()["error"]["message"]
    assert APIClient().post(f"/api/v1/models/{model.pk}/infer", {"text": "hi"}, format="json").status_code in (401, 403)


SPEECHES = [
    ("First Citizen: Before we proceed any further, hear me speak.", ""),
    ("All: Speak, speak. You are all resolved rather to die than to famish?", ""),
    ("MENENIUS: I tell you, friends, most charitable care have the patricians of you.", ""),
    ("Second Citizen: Would you proceed especially against Caius Marcius?", ""),
]


def test_chat_records_are_indexed_by_their_assistant_turns(tiny_gpt2, gpt2_adapters):
    """A chat record's span credit is for what the model learns to say (its assistant turns), not for its
    stored JSON: an answer reused across a line is found, the user's turn and the JSON syntax are not."""
    from datanets.chat import conversation_text
    from serving.services import generation_explain

    answer = "Speak, speak.\nYou are all resolved rather to die than to famish?"
    rows = [(conversation_text([{"role": "user", "content": "Continue this passage:\nFirst Citizen: hear me"},
                                {"role": "assistant", "content": answer}]), ""),
            (conversation_text([{"role": "user", "content": "Who speaks of the patricians?"},
                                {"role": "assistant", "content": "MENENIUS: I tell you, friends."}]), "")]
    version = make_version(task="generation", rows=rows, contributors=2, slug="plays-chat-spans")
    model = make_model(base_dir=tiny_gpt2, adapter_dir=gpt2_adapters[0], version=version)
    row = span_index_build(span_index_id=SpanIndex.objects.create(version=version, base_model=model.base_model).pk)
    assert row.status == SpanIndex.Status.READY
    got = generation_explain(model=model, text="All said: speak.\nYou are all resolved rather to die, they cried.")
    owner = version.records.get(text__contains="famish").contributor_id
    assert any("\nYou are all resolved rather to die" in s["text"] for s in got["spans"])
    assert got["contributors"] == [{"user_id": owner, "share": 1.0}]
    # Neither the user's turn nor the storage format is a passage the model learned to say.
    for text in ('"role":"assistant","content":"', "Continue this passage:\nFirst Citizen: hear me"):
        assert generation_explain(model=model, text=text)["spans"] == []


def test_generator_spans_attribute_and_pay_the_contributors(tiny_gpt2, gpt2_adapters, django_capture_on_commit_callbacks):
    from serving.services import generation_explain, split_wei

    version = make_version(task="generation", rows=SPEECHES, contributors=2, slug="literature")
    model = make_model(base_dir=tiny_gpt2, adapter_dir=gpt2_adapters[0], version=version)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        pending = generation_explain(model=model, text="hear me speak")
    assert pending["status"] == "queued" and len(queued) == 1  # the build waits for the background task
    row = span_index_build(span_index_id=SpanIndex.objects.get().pk)
    assert row.status == SpanIndex.Status.READY and row.record_count == 4 and row.segments == 1
    text = "He said: resolved rather to die than to famish, and then left."
    got = generation_explain(model=model, text=text)
    assert got["status"] == "ready" and got["spans"]
    span = got["spans"][0]
    assert span["text"] in text and "rather to die" in span["text"]
    owner = version.records.get(text__startswith="All:").contributor_id
    assert got["contributors"] == [{"user_id": owner, "share": 1.0}]
    # After its prompt, the answer's span is the one that carries the prompt's passage on.
    carried = generation_explain(model=model, text=" than to famish? So.", prompt="You are all resolved rather to die")
    (span,) = carried["spans"]
    assert span["text"] == " than to famish?" and span["context_tokens"] > 0
    assert carried["contributors"] == [{"user_id": owner, "share": 1.0}]
    assert split_wei(7 * 10**15, {owner: 1.0}) == {owner: 7 * 10**15}
    # A real call (the span index is ready): settled at once. A generator has no model-level weights, so
    # an answer that reuses no training text leaves the contributors' part with the treasury.
    resp = infer(client_for(UserFactory()), model.pk, text="First Citizen:")
    body = resp.json()
    assert resp.status_code == 200 and isinstance(body["output"]["text"], str)
    assert body["settlement"]["status"] == "settled"
    total = sum(a.amount for a in RewardAccrual.objects.all())
    if body["attribution"]["contributors"]:
        assert body["settlement"]["rule"] == "attribution" and body["attribution"]["method"] == "spans"
        assert total == Decimal("0.009")
    else:
        assert body["settlement"]["rule"] == "treasury" and Decimal(body["fee_split"]["protocol"]) == Decimal("0.008")
        assert total == Decimal("0.002")


def test_new_version_gets_a_delta_segment_then_compacts(tiny_gpt2, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datanets import services as datanet_services
    from datanets.tests.factories import contributor, rows_csv
    from factory.models import BaseModel

    v1 = make_version(task="generation", rows=SPEECHES[:3], contributors=1, slug="lit2")
    base = BaseModel.objects.create(name="tiny-gpt2-spans", source=str(tiny_gpt2))
    first = SpanIndex.objects.create(version=v1, base_model=base)
    span_index_build(span_index_id=first.pk)
    more = datanet_services.contribution_upload(  # one more speech, accepted, frozen into version 2
        datanet=v1.datanet, contributor=contributor(), inline=True, text_column="text", file_name="more.csv",
        file=SimpleUploadedFile("more.csv", rows_csv(SPEECHES[3:4], labelled=False))).contribution
    datanet_services.contribution_accept(contribution=more, curator=v1.created_by)
    v2 = datanet_services.datanet_version_create(datanet=v1.datanet, user=v1.created_by)
    added = v2.records.get(contribution=more)
    assert v2.number == 2 and v2.record_count == 4 and v2.merkle_root != v1.merkle_root
    second = SpanIndex.objects.create(version=v2, base_model=base)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        row = span_index_build(span_index_id=second.pk)
    assert row.derived_from_id == first.pk and row.segments == 2 and row.record_count == 4
    assert len(queued) == 1  # the compaction, in the background
    from serving.services import _engine_for

    engine = _engine_for(base)
    before = engine.explain(engine.load_index(row.directory), "would you proceed especially against Caius")
    row = span_index_build(span_index_id=second.pk, compact=True)
    assert row.segments == 1 and row.record_count == 4
    after = engine.explain(engine.load_index(row.directory), "would you proceed especially against Caius")
    assert before["records"] == after["records"] and after["records"][0]["record_id"] == str(added.pk)


def test_refused_calls_write_nothing(tiny_bert, bert_adapters):
    from core.errors import ApplicationError
    from serving.services import inference_create

    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=make_version(n=6))
    for text, code in (("", 400), ("y" * 500, 413)):
        with pytest.raises(ApplicationError) as err:
            inference_create(model=model, user=UserFactory(), text=text)
        assert err.value.status_code == code
    assert not Inference.objects.exists() and not RewardAccrual.objects.exists()


def test_output_segments_cut_text_at_spans():
    from serving.selectors import output_segments

    text = "abc <b>def</b> ghi"
    spans = [{"char_start": 4, "char_end": 14, "count": 2, "records": {"7": 1}, "tokens": 9},
             {"char_start": 10, "char_end": 16, "count": 1, "records": {"8": 1}, "tokens": 3}]
    segs = output_segments(text=text, spans=spans)
    assert "".join(s["text"] for s in segs) == text
    assert [s["span"] is not None for s in segs] == [False, True, True, False]
    assert segs[1]["text"] == "<b>def</b>" and segs[2]["text"] == " g"
