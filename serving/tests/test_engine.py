"""serving.openlora: mixed-adapter batches give what each adapter gives alone under PEFT."""
from __future__ import annotations

import pytest
import torch

from serving.openlora import AdapterError, InferenceRequest, ServingConfig, ServingEngine, load_adapter

TEXTS = ["the company profit rose", "loss fell in quarter four and the outlook is weak", "hello",
         "First Citizen: speak, speak", "operating profit rose to EUR 13.1 mn from EUR 8.7 mn"]


def peft_reference(base_dir, adapter_dir, task, labels, text, *, generate=0, num_beams=1):
    from peft import PeftModel

    from factory.training.modeling import load_base, load_tokenizer

    tok = load_tokenizer(str(base_dir))
    base = load_base(str(base_dir), task=task, labels=list(labels), pad_token_id=tok.pad_token_id)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    enc = tok(text, return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        if generate:
            ids = model.generate(**enc, max_new_tokens=generate, do_sample=False, no_repeat_ngram_size=3,
                                 num_beams=num_beams, pad_token_id=tok.pad_token_id)
            # The engine serves text without control characters (a random model emits them): so does this.
            from serving.openlora.engine import printable

            return printable(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        logits = model(**enc).logits
    return logits[0] if task == "classification" else logits[0, -1]


def served_and_peft(engine, base_dir, adapters, order):
    """(adapter number, served logits, PEFT fp32 logits) per row of one mixed batch, in `order` of
    adapters, with texts of different lengths (padding)."""
    import json

    reqs = [InferenceRequest(base_path=str(base_dir), adapter_dir=str(adapters[a]), text=TEXTS[i % len(TEXTS)])
            for i, a in enumerate(order)]
    out = []
    for req, a, got in zip(reqs, order, engine.forward(reqs), strict=True):
        labels = json.loads((adapters[a] / "factory.json").read_text())["labels"]
        out.append((a, got, peft_reference(base_dir, adapters[a], "classification", labels, req.text)))
    return out


@pytest.fixture
def engine():
    torch.set_num_threads(1)
    return ServingEngine(ServingConfig(cache_adapters=2, cache_bytes=1 << 30, max_batch=16, max_new_tokens=6,
                                       device="cpu"))


def test_mixed_classifier_batch_equals_peft_per_adapter(engine, tiny_bert, bert_adapters):
    # Every adapter (different ranks, targets, label counts, rsLoRA, one layer only) in one batch,
    # some twice, with texts of different lengths (padding).
    for a, got, want in served_and_peft(engine, tiny_bert, bert_adapters, [0, 1, 2, 3, 1, 0, 3, 2]):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5), (a, got, want)
    # The cache holds 2 adapters; the batch needed 4 and still ran.
    assert len(engine.cache) == 2 and engine.cache.stats.evictions >= 2


@pytest.mark.parametrize("num_beams", [1, 4])
def test_mixed_generator_batch_equals_peft(tiny_gpt2, gpt2_adapters, num_beams):
    torch.set_num_threads(1)
    engine = ServingEngine(ServingConfig(cache_adapters=2, max_batch=16, max_new_tokens=6, num_beams=num_beams,
                                         device="cpu"))
    order = [0, 1, 2, 1]
    reqs = [InferenceRequest(base_path=str(tiny_gpt2), adapter_dir=str(gpt2_adapters[a]), text=TEXTS[i])
            for i, a in enumerate(order)]
    for req, a, got in zip(reqs, order, engine.forward(reqs), strict=True):
        want = peft_reference(tiny_gpt2, gpt2_adapters[a], "generation", [], req.text)
        assert torch.allclose(got, want, atol=1e-4)
    results = engine.infer(reqs)
    for req, a, res in zip(reqs, order, results, strict=True):
        assert res["task"] == "generation" and res["batch_size"] == len(reqs)
        # Each request's beams ran as rows of the mixed batch with that request's adapter.
        assert res["text"] == peft_reference(tiny_gpt2, gpt2_adapters[a], "generation", [], req.text, generate=6,
                                             num_beams=num_beams)


def test_infer_classification_results_and_cache(engine, tiny_bert, bert_adapters):
    reqs = [InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(bert_adapters[0]), text=t) for t in TEXTS]
    results = engine.infer(reqs)
    assert all(set(r["probabilities"]) == {"neg", "pos"} for r in results)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in results)
    assert results[0]["label"] == max(results[0]["probabilities"], key=results[0]["probabilities"].get)
    stats = engine.stats()
    assert stats["misses"] == 1 and stats["hits"] >= 1 and stats["bases"] == 1
    # The same adapter alone and in a batch of others: the same answer.
    mixed = engine.infer([reqs[0], InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(bert_adapters[1]),
                                                    text="x y z")])
    assert mixed[0]["probabilities"] == pytest.approx(results[0]["probabilities"], abs=1e-5)


def test_prefetch_gives_the_same_results_and_surfaces_a_bad_adapter_in_its_own_batch(tiny_bert, bert_adapters,
                                                                                    tmp_path):
    """Batches of 2 over 4 adapters: the next batch's adapters are read while the current one runs."""
    reqs = [InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(bert_adapters[i % 4]), text=t)
            for i, t in enumerate(TEXTS * 2)]
    plain = ServingEngine(ServingConfig(cache_adapters=2, max_batch=2, device="cpu", prefetch=False))
    ahead = ServingEngine(ServingConfig(cache_adapters=2, max_batch=2, device="cpu", prefetch=True))
    assert ahead._prefetcher is not None and plain._prefetcher is None
    expected = plain.infer(reqs)
    got = ahead.infer(reqs)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
    assert ahead.stats()["misses"] >= 4  # every adapter was read, some of them by the prefetcher
    # A missing adapter in the last batch fails the call with its reason, after the earlier batches ran.
    broken = reqs[:4] + [InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(tmp_path), text="zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")]
    with pytest.raises(AdapterError, match="No LoRA adapter"):
        ahead.infer(broken)


def test_cache_limits_by_bytes(tiny_bert, bert_adapters):
    one = load_adapter(bert_adapters[0])
    engine = ServingEngine(ServingConfig(cache_adapters=10, cache_bytes=one.nbytes + 1, device="cpu"))
    engine.adapter(str(bert_adapters[0]))
    engine.adapter(str(bert_adapters[3]))
    assert len(engine.cache) == 1 and engine.cache.bytes <= one.nbytes + 1


def test_bad_adapters_fail_with_reasons(engine, tiny_bert, tmp_path, bert_adapters):
    with pytest.raises(AdapterError, match="No LoRA adapter"):
        engine.adapter(str(tmp_path))
    with pytest.raises(AdapterError, match="does not exist"):
        engine.infer([InferenceRequest(base_path=str(tmp_path / "nope"), adapter_dir=str(bert_adapters[0]), text="x")])
    # A truncated weights file (a copy cut short): a clear AdapterError, and the cache keeps nothing.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bert_adapters[0], broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        engine.adapter(str(broken))
    assert str(broken) not in engine.cache


def test_batcher_puts_concurrent_callers_in_one_forward(tiny_bert, bert_adapters):
    import threading

    from serving.openlora import Batcher

    engine = ServingEngine(ServingConfig(cache_adapters=8, max_batch=8, device="cpu"))
    reqs = [InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(bert_adapters[i % 4]), text=TEXTS[i % 5])
            for i in range(6)]
    alone = [engine.infer([r])[0] for r in reqs]
    batcher = Batcher(engine, max_wait_ms=300)
    results: list = [None] * len(reqs)
    gate = threading.Barrier(len(reqs))

    def call(i):
        gate.wait()
        results[i] = batcher.submit(reqs[i]).result(timeout=60)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(r["batch_size"] for r in results) > 1
    for got, want in zip(results, alone, strict=True):
        assert got["label"] == want["label"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
    # A failing batch fails its callers, not the batcher.
    bad = batcher.submit(InferenceRequest(base_path=str(tiny_bert), adapter_dir="/nonexistent", text="x"))
    with pytest.raises(AdapterError):
        bad.result(timeout=60)
    assert batcher.submit(reqs[0]).result(timeout=60)["label"] == alone[0]["label"]


def test_adapter_packed_into_one_buffer_keeps_every_tensor(bert_adapters):
    """The GPU path of load_adapter (one copy per adapter), run here on the CPU: same tensors, one storage."""
    from serving.openlora.adapters import _to_device_in_one_copy

    plain = load_adapter(bert_adapters[0])
    packed = load_adapter(bert_adapters[0])
    _to_device_in_one_copy(packed, torch.device("cpu"))
    assert plain.layers.keys() == packed.layers.keys() and plain.heads.keys() == packed.heads.keys()
    storages = set()
    for name, (a, b) in plain.layers.items():
        pa, pb = packed.layers[name]
        assert torch.equal(a, pa) and torch.equal(b, pb)
        storages |= {pa.untyped_storage().data_ptr(), pb.untyped_storage().data_ptr()}
    for name, (w, bias) in plain.heads.items():
        pw, pbias = packed.heads[name]
        assert torch.equal(w, pw) and (bias is None) == (pbias is None)
        assert bias is None or torch.equal(bias, pbias)
        storages.add(pw.untyped_storage().data_ptr())
    assert len(storages) == 1


def test_int8_base_serves_mixed_batches_close_to_peft_fp32(tiny_bert, bert_adapters):
    from serving.openlora.lora import BatchedLoRALayer

    torch.set_num_threads(1)
    engine = ServingEngine(ServingConfig(cache_adapters=4, max_batch=16, device="cpu", dtype="int8"))
    for a, got, want in served_and_peft(engine, tiny_bert, bert_adapters, [0, 1, 2, 3, 2, 0]):
        assert got.dtype == torch.float32 and got.shape == want.shape
        # int8 weights and activations: close to fp32, not equal.
        assert float((got - want).abs().max()) <= 0.05 * float(want.abs().max()) + 1e-3, (a, got, want)
    model = engine.base(str(tiny_bert), "classification").model
    wrapped = [m for m in model.modules() if isinstance(m, BatchedLoRALayer)]
    assert wrapped and all(isinstance(m.base_layer, torch.ao.nn.quantized.dynamic.Linear) for m in wrapped)
    # Heads stay float (each adapter brings its own).
    assert isinstance(model.classifier, torch.nn.Module) and not any(
        isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.classifier.modules())


def test_int8_is_refused_on_a_gpu_and_an_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="int8 is for CPUs"):
        ServingEngine(ServingConfig(device="cuda", dtype="int8"))
    with pytest.raises(ValueError, match="int8"):
        ServingEngine(ServingConfig(device="cpu", dtype="float8"))


def _nul_speaking_base(tiny_gpt2, out):
    """The tiny GPT-2 with its final norm fixed so every position predicts the byte-level token of NUL."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2))
    nul = tok.convert_tokens_to_ids("\u0100")  # GPT-2's byte-level alphabet writes byte 0 as U+0100
    assert tok.decode([nul]) == "\x00"
    with torch.no_grad():
        row = model.transformer.wte.weight[nul]
        row.mul_(50 / row.norm())
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(10 * row / row.norm())
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("decoding", [{}, {"temperature": 0}, {"temperature": 1.3, "top_p": 0.9}])
def test_generated_control_characters_are_dropped_whole_and_streamed(tiny_gpt2, tmp_path, decoding):
    """A byte-level tokenizer can emit NUL (a sampled answer once could not be stored: PostgreSQL text
    holds no NUL, and the API answered 500); the served text, whole or streamed, has none."""
    from serving.openlora.engine import printable
    from serving.openlora.stream import TokenStream

    torch.set_num_threads(1)
    base = _nul_speaking_base(tiny_gpt2, tmp_path / "nul")
    engine = ServingEngine(ServingConfig(max_new_tokens=6, device="cpu", no_repeat_ngram_size=0))
    req = InferenceRequest(base_path=str(base), adapter_dir=None, text="MENENIUS:", task="generation", **decoding)
    whole = engine.infer([req])[0]
    assert whole["completion_tokens"] == 6 and "\x00" not in whole["text"]
    stream = TokenStream(engine, req)
    assert "\x00" not in "".join(stream) and "\x00" not in stream.text
    assert printable("a\x00b\tc\nd\x7f\x1b") == "ab\tc\nd"


def test_printable_keeps_prefixes():
    from serving.openlora.engine import printable

    text = "x\x00y\x01\r\nz"
    assert all(printable(text).startswith(printable(text[:i])) for i in range(len(text) + 1))
