"""The OpenAI-compatible API through the official `openai` client against a live server, on a really
fine-tuned tiny GPT-2: models, chat and text completions streamed and not, usage, the fee and its
split, attribution, and errors in OpenAI's shape."""
from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from accounts.services import api_key_create
from accounts.tests.factories import UserFactory
from factory.tests.factories import make_version
from ledger.models import RewardAccrual
from serving.models import Inference, SpanIndex
from serving.services import span_index_build
from serving.tests.factories import make_model
from serving.tests.test_api import SPEECHES

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEB3_PROVIDER_URI = ""  # the fee split is governance's deployed default 70/20/10
    settings.VAR_DIR = tmp_path
    settings.SERVING_FEE_PER_CALL = "0.01"
    settings.SERVING_MAX_INPUT_CHARS = 300
    settings.SERVING_BACKEND = "inprocess"


@pytest.fixture
def setup(finetuned_gpt2, live_server):
    """A generator with its span index ready, a caller with an API key, and a client for the live server."""
    base, adapter = finetuned_gpt2
    version = make_version(task="generation", rows=SPEECHES, contributors=2, slug="plays")
    model = make_model(base_dir=base, adapter_dir=adapter, version=version)
    span_index_build(span_index_id=SpanIndex.objects.create(version=version, base_model=model.base_model).pk)
    caller = UserFactory()
    key, raw = api_key_create(user=caller, name="integrator", rate_limit_per_minute=100)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, max_retries=0, timeout=60)
    return model, key, client


def _charged(inference_id: int, key) -> Inference:
    row = Inference.objects.get(pk=inference_id)
    assert row.status == Inference.Status.DONE and row.api_key == key and row.user == key.user
    assert row.fee == Decimal("0.01") and row.settlement == Inference.Settlement.SETTLED
    developer = RewardAccrual.objects.get(reference=f"inference:{row.pk}")
    assert developer.amount == Decimal("0.002") and developer.user_id == row.model.developer_id
    return row


def test_models_and_chat_completions_streamed_and_not(setup):
    model, key, client = setup
    assert model.slug == f"tiny-adapter-{model.pk}"
    listed = client.models.list()
    assert [m.id for m in listed.data] == [model.slug] and listed.data[0].owned_by == model.developer.username
    assert client.models.retrieve(model.slug).id == model.slug

    messages = [{"role": "system", "content": "You speak as a citizen."},
                {"role": "user", "content": "First Citizen: Before we proceed"}]
    whole = client.chat.completions.create(model=model.slug, messages=messages, max_tokens=12, temperature=0)
    answer = whole.choices[0].message.content
    assert whole.object == "chat.completion" and whole.model == model.slug and whole.choices[0].message.role == "assistant"
    assert isinstance(answer, str) and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 5 and 1 <= whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    extra = whole.model_extra["attribution"]
    assert extra["method"] == "spans" and extra["status"] == "ready" and Decimal(extra["fee"]) == Decimal("0.01")
    row = _charged(extra["inference_id"], key)
    # The chat was rendered with the base's template (a plain one: this base has none) and stored as asked.
    assert row.input_text.startswith("System: You speak as a citizen.\nUser: First Citizen:")
    assert row.input_text.endswith("Assistant:") and row.params["temperature"] == 0.0
    assert row.output["text"] == answer and row.output["completion_tokens"] == whole.usage.completion_tokens

    chunks = list(client.chat.completions.create(model=model.slug, messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer  # greedy both ways: the stream is the same answer, token by token
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    (final,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    row = _charged(final.model_extra["attribution"]["inference_id"], key)
    assert row.output["text"] == answer and row.attribution["method"] == "spans"
    for span in row.attribution["spans"]:  # what the playground highlights: a real cut of the answer
        assert answer[span["char_start"]:span["char_end"]] == span["text"]
    assert Inference.objects.filter(status=Inference.Status.DONE).count() == 2


def test_text_completions_streamed_and_not_with_stop(setup):
    model, key, client = setup
    whole = client.completions.create(model=model.slug, prompt="All: Speak, speak.", max_tokens=10, temperature=0)
    text = whole.choices[0].text
    assert whole.object == "text_completion" and whole.usage.completion_tokens <= 10
    pieces = list(client.completions.create(model=model.slug, prompt="All: Speak, speak.", max_tokens=10,
                                            temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == text
    assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    # A stop sequence cuts the answer before it, streamed or not.
    if len(text.strip()) > 2:
        stop = text.strip()[1:3]
        cut = client.completions.create(model=model.slug, prompt="All: Speak, speak.", max_tokens=10, temperature=0,
                                        stop=[stop])
        assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
        streamed = client.completions.create(model=model.slug, prompt="All: Speak, speak.", max_tokens=10,
                                             temperature=0, stop=stop, stream=True)
        assert "".join(p.choices[0].text for p in streamed) == cut.choices[0].text
    # Sampling settings are honoured (a sampled answer is still a charged call).
    sampled = client.completions.create(model=model.slug, prompt="MENENIUS:", max_tokens=6, temperature=1.3, top_p=0.9)
    assert _charged(sampled.model_extra["attribution"]["inference_id"], key).params == {
        "max_new_tokens": 6, "temperature": 1.3, "top_p": 0.9}


def test_errors_have_openai_shape_and_write_nothing(setup, live_server, tiny_bert, bert_adapters):
    model, key, client = setup
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found" and err.value.body["param"] == "model"
    bad = [({"messages": []}, "messages"), ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
           ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
           ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
           ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
           ({"messages": [{"role": "user", "content": "x" * 400}]}, None)]
    for kwargs, param in bad:
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=model.slug, **kwargs)
        assert err.value.status_code in (400, 413) and err.value.body["type"] == "invalid_request_error"
        assert err.value.body["param"] == param, kwargs
    assert err.value.status_code == 413 and err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="NUL"):  # PostgreSQL text cannot hold it: 400, not 500
        client.completions.create(model=model.slug, prompt="MENENIUS:\x00", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model=model.slug, prompt="  ")
    classifier = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=make_version(n=6))
    with pytest.raises(openai.BadRequestError, match="is a classifier"):
        client.completions.create(model=classifier.slug, prompt="profit rose")
    for wrong in ("nope.nope", "not-a-token"):
        stranger = openai.OpenAI(base_url=live_server.url + "/v1", api_key=wrong, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            stranger.models.list()
        assert err.value.body["type"] == "authentication_error"
    assert not Inference.objects.exists() and not RewardAccrual.objects.exists()


def test_a_closed_stream_is_charged_for_what_it_generated(finetuned_gpt2):
    """The stop button or a client that leaves: generation ends, the partial answer is charged and
    attributed like any call."""
    from serving.completions import completion_stream_start

    base, adapter = finetuned_gpt2
    model = make_model(base_dir=base, adapter_dir=adapter, version=make_version(task="generation", rows=SPEECHES,
                                                                              contributors=1, slug="plays2"))
    stream = completion_stream_start(model=model, user=UserFactory(), text="First Citizen:",
                                     params={"max_new_tokens": 40, "temperature": 0})
    assert stream.inference.status == Inference.Status.PENDING
    pieces = iter(stream)
    got = [next(pieces), next(pieces)]
    pieces.close()
    row = stream.inference
    assert row.status == Inference.Status.DONE and row.output["finish_reason"] == "cancelled"
    assert row.output["text"].startswith("".join(got)) and row.output["completion_tokens"] < 40
    assert row.fee == Decimal("0.01") and RewardAccrual.objects.filter(reference=f"inference:{row.pk}").exists()


def test_a_llama_chat_base_answers_with_its_chat_template(tmp_path):
    """A Llama-family base with a ChatML tokenizer: the chat is rendered with its template, no plain stop
    strings are added (the base ends its turn with its own token), and a greedy stream is the whole answer."""
    import json

    from django.test import Client

    from factory.training.tiny import build_tiny_causal_lm
    from serving.tests.conftest import SHAKESPEARE, make_adapter

    base = build_tiny_causal_lm(tmp_path / "llama", family="llama", texts=SHAKESPEARE * 4)
    adapter = make_adapter(base, tmp_path / "lora", task="generation", targets=("q_proj", "v_proj"), seed=3)
    model = make_model(base_dir=base, adapter_dir=adapter)
    key, raw = api_key_create(user=UserFactory(), name="llama")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    ask = {"model": model.slug, "messages": [{"role": "user", "content": "Speak, speak."}], "max_tokens": 8,
           "temperature": 0}
    response = client.post("/v1/chat/completions", json.dumps(ask), content_type="application/json")
    assert response.status_code == 200, response.content
    whole = response.json()
    row = Inference.objects.get(pk=whole["attribution"]["inference_id"])
    assert row.input_text == "<|im_start|>user\nSpeak, speak.<|im_end|>\n<|im_start|>assistant\n"
    assert "stop" not in row.params and row.api_key == key
    streamed = client.post("/v1/chat/completions", json.dumps({**ask, "stream": True}), content_type="application/json")
    body = b"".join(streamed.streaming_content).decode()
    assert body.endswith("data: [DONE]\n\n")
    chunks = [json.loads(b[6:]) for b in body.split("\n\n") if b and b != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
