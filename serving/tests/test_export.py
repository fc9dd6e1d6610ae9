"""Merged export (issue 15, item 9): the API answers 202 while a real `cpu` worker merges, then the zip; the
unzipped folder loads with plain transformers (no PEFT) and answers as the served model does, for a really
fine-tuned classifier and a really fine-tuned causal LM."""
from __future__ import annotations

import io
import time
import zipfile

import pytest
import torch
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from factory.models import FineTunedModel
from factory.tests.factories import make_version
from serving.tests.factories import make_model

PROMPT = "All: Speak, speak."
SPEECH = "All: Speak, speak. You are all resolved rather to die than to famish?"


@pytest.fixture(scope="module")
def memorising_gpt2(tmp_path_factory):
    """(base, adapter) of a tiny GPT-2 fine-tuned (the factory's trainer) until it knows one speech by heart:
    its answers are peaked, so beam search has no near-ties that rounding could flip (a barely trained model's
    are near-uniform, and W + BA folded differs from W x + B(A x) in the last bits)."""
    from factory.training import Example, TrainConfig, train
    from factory.training.tiny import build_tiny_gpt2

    root = tmp_path_factory.mktemp("export-gpt2")
    base = build_tiny_gpt2(root / "base", texts=[SPEECH, "First Citizen: Before we proceed any further."])
    cfg = TrainConfig(task="generation", model_path=str(base), lora_r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["c_attn", "c_proj", "c_fc"], epochs=30, learning_rate=2e-2, batch_size=4,
                      max_length=48, eval_split=0.2, seed=1, checkpoint_every=0, progress_every_s=0, cpu_threads=1)
    result = train(cfg, [Example(text=SPEECH)] * 10, output_dir=root / "run")
    return base, result.adapter_dir


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path, monkeypatch):
    from serving import services

    # The served answers come from an engine built with these settings (float32), not one an earlier test of
    # the session left in this process (bfloat16, int8).
    monkeypatch.setattr(services, "_engine", None)
    monkeypatch.setattr(services, "_batcher", None)
    settings.WEB3_PROVIDER_URI = ""
    settings.SERVING_BACKEND = "inprocess"
    settings.SERVING_DEVICE = "cpu"
    settings.SERVING_DTYPE = "float32"
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()


def _merged_zip(api, model_id, timeout=240) -> bytes:
    first = api.get(f"/api/v1/factory/models/{model_id}/merged/")
    assert first.status_code == 202, first.content
    assert first.json()["state"] == "queued" and first.json()["download"] is None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = api.get(f"/api/v1/factory/models/{model_id}/merged/")
        if resp.status_code == 200:
            assert resp["Content-Type"] == "application/zip"
            return b"".join(resp.streaming_content)
        assert resp.status_code == 202, resp.content
        assert resp.json()["state"] in ("queued", "running")
        time.sleep(0.5)
    raise AssertionError(f"not merged within {timeout}s: {FineTunedModel.objects.get(pk=model_id).merged_error}")


def _unzip(data: bytes, dest) -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert any(n.endswith("/model.safetensors") for n in names), names
        assert not any("adapter" in n.rsplit("/", 1)[-1] for n in names), names  # merged: no adapter files
        zf.extractall(dest)
    (top,) = {n.split("/", 1)[0] for n in names}
    return dest / top


@pytest.mark.slow
def test_merged_models_load_with_plain_transformers_and_answer_as_served(
        start_worker, tmp_path, attr_base_dir, trained_adapter, memorising_gpt2):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from serving.openlora import InferenceRequest
    from serving.services import serving_engine

    torch.set_num_threads(1)
    start_worker(queues="cpu", OMP_NUM_THREADS=1)
    version = make_version(n=6)
    classifier = make_model(base_dir=attr_base_dir, adapter_dir=trained_adapter, version=version)
    gpt_base, gpt_adapter = memorising_gpt2
    generator = make_model(base_dir=gpt_base, adapter_dir=gpt_adapter,
                           version=make_version(task="generation", n=4, contributors=1, slug="lit-x"))
    api = APIClient()
    api.force_authenticate(UserFactory())

    # Classifier: the merged model's probabilities are the served answer's.
    folder = _unzip(_merged_zip(api, classifier.pk), tmp_path / "clf")
    merged = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert list(merged.config.id2label.values()) == classifier.labels
    text = "the company profit rose strongly in the quarter"
    served = api.post(f"/api/v1/models/{classifier.pk}/infer", {"text": text}, format="json")
    assert served.status_code == 200, served.content
    with torch.no_grad():
        probs = torch.softmax(merged(**tok(text, return_tensors="pt")).logits[0], -1).tolist()
    mine = dict(zip(classifier.labels, probs, strict=True))
    out = served.json()["output"]
    assert out["label"] == max(mine, key=mine.get)
    for label, p in out["probabilities"].items():
        assert abs(mine[label] - p) < 1e-5, (label, mine, out)
    # ... and it is not the bare base: the trained head and LoRA changed the answer.
    assert max(abs(a - b) for a, b in zip(probs, [1 / len(probs)] * len(probs), strict=True)) > 1e-3

    # Causal LM: same next-token logits as the engine, same decoded answer as the served call.
    folder = _unzip(_merged_zip(api, generator.pk), tmp_path / "gen")
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    engine = serving_engine()
    (engine_logits,) = engine.forward([InferenceRequest(base_path=str(gpt_base), adapter_dir=str(gpt_adapter),
                                                        text=PROMPT)])
    (bare_logits,) = engine.forward([InferenceRequest(base_path=str(gpt_base), adapter_dir=None, text=PROMPT,
                                                      task="generation")])
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        logits = merged(**enc).logits[0, -1]
    assert torch.allclose(logits, engine_logits, atol=1e-4), (logits - engine_logits).abs().max()
    assert (logits - bare_logits).abs().max() > 1e-2  # the adapter is in the merged weights
    served = api.post(f"/api/v1/models/{generator.pk}/infer", {"text": PROMPT}, format="json")
    assert served.status_code == 200, served.content
    cfg = engine.config
    with torch.no_grad():
        ids = merged.generate(**enc, max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, do_sample=False,
                              no_repeat_ngram_size=cfg.no_repeat_ngram_size, pad_token_id=tok.pad_token_id)
    new = ids[0, enc["input_ids"].shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    text = served.json()["output"]["text"]
    assert tok.decode(new, skip_special_tokens=True) == text and "resolved" in text, (new, text)

    # Kept: a second request is answered from the cached zip, not merged again.
    row = FineTunedModel.objects.get(pk=generator.pk)
    assert row.merged_state == "done" and row.merged_progress == 1.0 and row.merged_bytes > 0
    again = api.get(f"/api/v1/factory/models/{generator.pk}/merged/")
    assert again.status_code == 200
    assert api.post(f"/api/v1/factory/models/{generator.pk}/merged/").json()["state"] == "done"


@pytest.mark.django_db
def test_merged_export_needs_a_signed_in_user_and_reports_a_failure(tiny_bert, bert_adapters, client):
    """Who may download: signed-in users (as for the adapter); anonymous callers are refused on the API and
    sent to log in on the site. A failed merge answers 409 with its reason until a POST retries it."""
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0])
    assert APIClient().get(f"/api/v1/factory/models/{model.pk}/merged/").status_code in (401, 403)
    resp = client.get(f"/factory/models/{model.pk}/merged.zip")
    assert resp.status_code == 302 and "/login" in resp["Location"]
    assert client.post(f"/factory/models/{model.pk}/merged/").status_code in (302, 403)
    model.refresh_from_db()
    assert model.merged_state == ""  # nothing queued for an anonymous caller

    FineTunedModel.objects.filter(pk=model.pk).update(merged_state="failed", merged_error="Internal error: disk full")
    api = APIClient()
    api.force_authenticate(UserFactory())
    failed = api.get(f"/api/v1/factory/models/{model.pk}/merged/")
    assert failed.status_code == 409 and "disk full" in failed.json()["error"]["message"]
    retry = api.post(f"/api/v1/factory/models/{model.pk}/merged/")
    assert retry.status_code == 202 and retry.json()["state"] == "queued" and retry.json()["error"] == ""

    # The model page shows the state to a signed-in user (queued: the cell polls).
    client.force_login(UserFactory())
    page = client.get(f"/factory/models/{model.pk}/")
    assert b"Merge queued" in page.content
    assert f"/factory/models/{model.pk}/merged/status/".encode() in page.content  # the cell polls while queued
