"""The served base seen as a PEFT model (serving.openlora.peft_view): the gradient engine's per-example
LoRA gradients taken on it equal those of `PeftModel.from_pretrained`, and serving is unchanged after."""
from __future__ import annotations

import pytest
import torch

from attribution.engines.gradient import LoraGradientHooks
from factory.training.predict import load_adapter as peft_load
from serving.openlora import InferenceRequest, ServingConfig, ServingEngine

TEXTS = ["the company profit rose", "sales fell and jobs were cut in the quarter", "meeting"]


def _grads(module, tokenizer, labels):
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with LoraGradientHooks(module) as hooks:
        logits = module(**enc).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(labels), reduction="sum")
        names = [p.name for p in hooks.pairs]
        shapes = [(tuple(p.lora_a.weight.shape), tuple(p.lora_b.weight.shape)) for p in hooks.pairs]
        grads = hooks.per_example_grads(loss)
    return logits.detach(), names, shapes, grads


@pytest.mark.parametrize("which", [0, 1, 2])  # rank 4; rank 8 on four targets; rsLoRA on one layer
def test_view_gradients_equal_peft(tiny_bert, bert_adapters, which):
    adapter = bert_adapters[which]
    engine = ServingEngine(ServingConfig(prefetch=False))
    requests = [InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(adapter), text=t) for t in TEXTS]
    # another adapter first, so the base has layers wrapped that this adapter does not touch
    engine.infer([InferenceRequest(base_path=str(tiny_bert), adapter_dir=str(bert_adapters[3]), text="x")])
    before = engine.infer(requests)
    peft_model, peft_tok, _ = peft_load(str(tiny_bert), str(adapter))
    labels = [i % 2 for i in range(len(TEXTS))]
    ref_logits, ref_names, ref_shapes, ref_grads = _grads(peft_model, peft_tok, labels)
    with engine.peft_view(str(tiny_bert), str(adapter)) as (module, tokenizer):
        logits, names, shapes, grads = _grads(module, tokenizer, labels)
    assert names and names == ref_names and shapes == ref_shapes  # the index's recorded layout matches
    assert all(ra.abs().sum() > 0 and rb.abs().sum() > 0 for ra, rb in ref_grads)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    for (ga, gb), (ra, rb) in zip(grads, ref_grads, strict=True):
        assert torch.allclose(ga, ra, atol=1e-5, rtol=1e-4) and torch.allclose(gb, rb, atol=1e-5, rtol=1e-4)
    after = engine.infer(requests)  # the layers are the served ones again
    assert [(r["label"], r["probabilities"]) for r in after] == [(r["label"], r["probabilities"]) for r in before]


def test_view_refuses_a_precision_the_index_does_not_have(tiny_bert, bert_adapters):
    engine = ServingEngine(ServingConfig(prefetch=False, dtype="bfloat16"))
    assert not engine.explains_exactly
    with pytest.raises(ValueError, match="float32"), engine.peft_view(str(tiny_bert), str(bert_adapters[0])):
        pass
