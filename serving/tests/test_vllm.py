"""Generators served by a vLLM server (serving/vllm.py) through the OpenAI-compatible API and the
official client: adapters loaded on demand once, whole and streamed answers, charged and attributed like
any call; a restarted server is given the adapter again; a refusal fails the call uncharged; with the
server away, or for a classifier, the built-in engine serves. vLLM itself needs a GPU and its own torch,
so a stand-in (fake_vllm.py) speaks its API and answers with the built-in engine."""
from __future__ import annotations

import openai
import pytest

import serving.services
from accounts.services import api_key_create
from accounts.tests.factories import UserFactory
from factory.tests.factories import make_version
from serving.models import Inference, SpanIndex
from serving.openlora import InferenceRequest, ServingConfig, ServingEngine
from serving.services import span_index_build
from serving.tests.conftest import make_adapter
from serving.tests.factories import make_model
from serving.tests.fake_vllm import FakeVllm
from serving.tests.test_api import SPEECHES
from serving.vllm import lora_name

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = "All: Speak, speak."


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEB3_PROVIDER_URI = ""
    settings.VAR_DIR = tmp_path
    settings.SERVING_FEE_PER_CALL = "0.01"
    settings.SERVING_BACKEND = "inprocess"
    serving.services._vllm = None  # each test starts with a fresh client (no adapters known loaded)
    yield
    serving.services._vllm = None


@pytest.fixture
def vllm(finetuned_gpt2, settings):
    base, _ = finetuned_gpt2
    fake = FakeVllm(base).start()
    settings.SERVING_VLLM_URL = fake.url
    yield fake
    fake.stop()


@pytest.fixture
def setup(finetuned_gpt2, live_server):
    base, adapter = finetuned_gpt2
    version = make_version(task="generation", rows=SPEECHES, contributors=2, slug="plays-vllm")
    model = make_model(base_dir=base, adapter_dir=adapter, version=version)
    span_index_build(span_index_id=SpanIndex.objects.create(version=version, base_model=model.base_model).pk)
    _, raw = api_key_create(user=UserFactory(), name="integrator", rate_limit_per_minute=100)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, max_retries=0, timeout=60)
    return model, client


def greedy(base, adapter, text, n):
    engine = ServingEngine(ServingConfig(max_new_tokens=40, device="cpu"))
    return engine.infer([InferenceRequest(base_path=str(base), adapter_dir=str(adapter), text=text, task="generation",
                                          max_new_tokens=n, temperature=0)])[0]["text"]


def test_vllm_serves_whole_and_streamed_answers_loading_the_adapter_once(vllm, setup, finetuned_gpt2):
    model, client = setup
    whole = client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=8)
    assert whole.choices[0].text == greedy(*finetuned_gpt2, PROMPT, 8)  # no beams in vLLM: greedy by default
    sent = vllm.completions()[-1]
    assert sent["model"] == lora_name(model.adapter_dir) and sent["temperature"] == 0.0 and sent["max_tokens"] == 8
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0
    pieces = list(client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert vllm.completions()[-1]["stream"] is True
    sampled = client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=4, temperature=0.7, top_p=0.9)
    assert vllm.completions()[-1]["temperature"] == 0.7 and vllm.completions()[-1]["top_p"] == 0.9
    assert vllm.loads() == 1 and len(vllm.completions()) == 3
    # Each call was charged and attributed like one the built-in engine served.
    rows = Inference.objects.order_by("pk")
    assert [r.status for r in rows] == [Inference.Status.DONE] * 3 and all(r.fee > 0 for r in rows)
    assert rows[0].output["text"] == whole.choices[0].text and rows[2].output["text"] == sampled.choices[0].text
    assert whole.model_extra["attribution"]["method"] == "spans"


def test_a_restarted_server_gets_the_adapter_again_and_a_refusal_is_uncharged(vllm, setup):
    model, client = setup
    client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=4)
    vllm.restart()
    again = client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=4)
    assert again.choices[0].text is not None and vllm.loads() == 2
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=model.slug, prompt="REFUSE this", max_tokens=4)
    assert err.value.status_code == 409 and "refused by the server" in str(err.value)
    failed = Inference.objects.get(input_text="REFUSE this")
    assert failed.status == Inference.Status.FAILED and failed.fee == 0


def test_without_the_server_the_built_in_engine_serves(setup, settings, finetuned_gpt2):
    model, client = setup
    settings.SERVING_VLLM_URL = "http://127.0.0.1:9"  # nothing listens: the built-in engine serves
    whole = client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=8, temperature=0)
    assert whole.choices[0].text == greedy(*finetuned_gpt2, PROMPT, 8)
    assert Inference.objects.get().status == Inference.Status.DONE


def test_a_base_the_server_does_not_run_stays_on_the_built_in_engine(setup, settings, tiny_gpt2):
    model, client = setup
    fake = FakeVllm(tiny_gpt2).start()  # another base than the model's
    settings.SERVING_VLLM_URL = fake.url
    try:
        client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=4)
        assert fake.calls == [] and Inference.objects.get().status == Inference.Status.DONE
    finally:
        fake.stop()


def test_a_vllm_stream_closed_unread_is_hung_up_and_uncharged(vllm, setup):
    """A client gone before the first token, on the vLLM path: start() opened vLLM's stream, so close()
    hangs it up (the connection is closed, not left to vLLM) and the row is failed and uncharged."""
    from serving.completions import completion_stream_start

    model, _ = setup
    stream = completion_stream_start(model=model, user=UserFactory(), text=PROMPT, params={"max_new_tokens": 8})
    opened = stream._tokens._resp
    assert vllm.completions()[-1]["stream"] is True and not opened.closed
    stream.close()
    assert opened.closed
    row = Inference.objects.get(pk=stream.inference.pk)
    assert row.status == Inference.Status.FAILED and row.fee == 0 and "before the first token" in row.error


def test_an_adapter_with_lora_on_the_output_layer_stays_on_the_built_in_engine(vllm, finetuned_gpt2, live_server,
                                                                              tmp_path):
    """vLLM refuses LoRA weights on lm_head ("unsupported LoRA weight"): such an adapter (the verbatim
    preset's) is served by the built-in engine even while vLLM runs its base; the others still go to vLLM."""
    base, _ = finetuned_gpt2
    adapter = make_adapter(base, tmp_path / "recite", task="generation", targets=("c_attn", "lm_head"), seed=9)
    version = make_version(task="generation", rows=SPEECHES, contributors=2, slug="plays-recite")
    model = make_model(base_dir=base, adapter_dir=adapter, version=version)
    span_index_build(span_index_id=SpanIndex.objects.create(version=version, base_model=model.base_model).pk)
    _, raw = api_key_create(user=UserFactory(), name="integrator", rate_limit_per_minute=100)
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw, max_retries=0, timeout=60)
    whole = client.completions.create(model=model.slug, prompt=PROMPT, max_tokens=8, temperature=0)
    assert whole.choices[0].text == greedy(base, adapter, PROMPT, 8)
    assert vllm.loads() == 0 and vllm.completions() == []
    assert Inference.objects.get().status == Inference.Status.DONE
