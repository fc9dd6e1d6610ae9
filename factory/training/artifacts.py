"""Artifacts of a run: the adapter's hash and its model card (markdown)."""
from __future__ import annotations

import hashlib
from pathlib import Path

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
CARD_FILE = "README.md"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _md(text) -> str:
    """Keep user-supplied names from breaking the markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def model_card_render(*, name: str, task: str, base_model: str, base_model_source: str, datanet: str,
                      version_number: int, merkle_root: str, hyperparameters: dict, metrics: dict,
                      best_epoch: int, contributors: list[tuple[str, int]], adapter_sha256: str,
                      labels: list[str], train_examples: int, eval_examples: int, train_seconds: float,
                      device: str) -> str:
    """The model card: what it is, what it was trained on (and by whom), how well it does, the hashes."""
    lines = [
        f"# {_md(name)}", "",
        f"A LoRA adapter for **{_md(base_model)}** ({task}), fine-tuned by Model Factory.", "",
        "## Training data", "",
        f"- Datanet: **{_md(datanet)}**, version {version_number}",
        f"- Version Merkle root: `{merkle_root}`",
        f"- {train_examples} training and {eval_examples} held-out evaluation records",
    ]
    if labels:
        lines.append(f"- Labels: {', '.join(_md(x) for x in labels)}")
    lines += ["", "### Contributors", "", "| contributor | records |", "| --- | --- |"]
    lines += [f"| {_md(who)} | {n} |" for who, n in contributors]
    lines += ["", "## Hyperparameters", "", "| name | value |", "| --- | --- |"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in hyperparameters.items()]
    kept = "last" if (hyperparameters or {}).get("keep_epoch") == "last" else "best"
    lines += ["", f"## Evaluation ({kept} epoch: {best_epoch})", ""]
    for key, value in metrics.items():
        if isinstance(value, float | int):
            lines.append(f"- {key}: {value:.4f}" if isinstance(value, float) else f"- {key}: {value}")
    if "confusion_matrix" in metrics:
        labs = metrics.get("labels", labels)
        lines += ["", "Confusion matrix (rows: true label, columns: predicted):", "",
                  "| | " + " | ".join(_md(x) for x in labs) + " |", "|---" * (len(labs) + 1) + "|"]
        for lab, row in zip(labs, metrics["confusion_matrix"], strict=False):
            lines.append(f"| **{_md(lab)}** | " + " | ".join(str(x) for x in row) + " |")
    lines += [
        "", "## Hashes", "",
        f"- `{ADAPTER_FILE}` sha256: `{adapter_sha256}`",
        f"- Datanet version Merkle root: `{merkle_root}`",
        f"- Base model: `{_md(base_model_source)}`",
        "", "## Use", "",
        "```python",
        "from peft import PeftModel",
        "from transformers import " + ("AutoModelForSequenceClassification" if task == "classification"
                                       else "AutoModelForCausalLM") + ", AutoTokenizer",
        "base = " + ("AutoModelForSequenceClassification.from_pretrained(BASE, num_labels="
                     f"{len(labels)})" if task == "classification" else "AutoModelForCausalLM.from_pretrained(BASE)"),
        "model = PeftModel.from_pretrained(base, ADAPTER_DIR)",
        "```", "",
        f"Trained in {train_seconds:.0f} s on {device}.", "",
    ]
    return "\n".join(lines)
