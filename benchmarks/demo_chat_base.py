"""The demo chat base as `make run` builds it: tokenizer, pre-training time and loss, and what it answers
before and after a LoRA fine-tune on the demo Instructions Datanet's conversations.

    .venv/bin/python benchmarks/demo_chat_base.py                  # 1,000 steps, 480 conversations, 1 epoch
    .venv/bin/python benchmarks/demo_chat_base.py --steps 300 --examples 200

Builds with `factory.training.tiny.build_demo_chat_base` (what the gpu task runs) into a temporary folder,
then trains LoRA (r 16, every linear layer, lr 1e-3, batch 8, max length 256) through `factory.training.train`
on a seeded sample of `seed_demo.instruction_uploads`, and answers a few prompts greedily through
`factory.training.predict` (the chat template applied). Writes benchmarks/results/demo_chat_base.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

RESULTS = ROOT / "benchmarks" / "results"
PROMPTS = [
    "What is the sentiment of this sentence from financial news: positive, negative or neutral?\n\n"
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "What is the sentiment of this sentence from financial news: positive, negative or neutral?\n\n"
    "The company's net sales decreased by 5% compared to the previous year.",
    "Continue this passage:\nFirst Citizen:\nBefore we proceed any further, hear me speak.",
    "Continue this passage:\nROMEO:\nBut, soft! what light through yonder window breaks?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=480)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import django

    django.setup()
    import torch
    from django.conf import settings

    from benchmarks.sft_overhead import conversations
    from factory.training import Example, TrainConfig, train
    from factory.training.modeling import inspect_model
    from factory.training.predict import predict
    from factory.training.tiny import build_demo_chat_base

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    lines = (Path(settings.SHARED_DATA_DIR) / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()
    curve: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        started = time.monotonic()
        built = build_demo_chat_base(base, texts=lines, steps=args.steps, threads=args.threads,
                                     on_progress=lambda s, t, loss: curve.append((s, loss)) if s % 100 == 0 else None)
        build_s = time.monotonic() - started
        info = inspect_model(base)
        examples = [Example(text="", record_id=i, messages=m) for i, m in enumerate(conversations(args.examples, 42))]
        config = TrainConfig(task="generation", model_path=str(base), target_modules=info["target_modules"],
                             lora_r=16, lora_alpha=32, lora_dropout=0.1, epochs=args.epochs, learning_rate=1e-3,
                             batch_size=8, max_length=256, eval_split=0.2, seed=42, checkpoint_every=0,
                             progress_every_s=30, cpu_threads=args.threads)
        started = time.monotonic()
        result = train(config, examples, output_dir=Path(tmp) / "ft")
        finetune_s = time.monotonic() - started
        answers = [(p, predict(str(base), str(result.adapter_dir), p, max_new_tokens=40)["text"]) for p in PROMPTS]
    table = [
        "# The demo chat base (`benchmarks/demo_chat_base.py`)", "",
        f"Built as the gpu task builds it: {info['parameter_count']:,} parameters ({info['architecture']}, "
        f"{info['num_layers']} layers, {info['hidden_size']} hidden, vocab {info['vocab_size']:,}), {args.steps} "
        f"pre-training steps of 8 x 128 tokens. Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared "
        f"with other work (load average {', '.join(f'{x:.1f}' for x in load)} at the start); torch threads "
        f"{args.threads}.", "",
        "| stage | seconds | loss |", "| --- | --- | --- |",
        f"| tokenizer + model + pre-training | {build_s:.0f} | {built['first_loss']:.2f} -> {built['last_loss']:.2f} |",
        f"| LoRA fine-tune, {result.train_examples} conversations x {args.epochs} epoch(s), {result.steps} steps | "
        f"{finetune_s:.0f} | eval (assistant tokens) {result.metrics['eval_loss']:.2f}, perplexity "
        f"{result.metrics['perplexity']:.1f} |", "",
        "Pre-training loss every 100 steps: " + ", ".join(f"{s}: {loss:.2f}" for s, loss in curve), "",
        "Answers after the fine-tune (greedy, 40 new tokens):", "",
    ]
    for prompt, answer in answers:
        shown = " / ".join(line.strip() for line in answer.strip().splitlines() if line.strip())[:200]
        table += [f"- **{prompt.splitlines()[-1][:90]}** -> `{shown}`"]
    table.append("")
    text = "\n".join(table)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_chat_base.md").write_text(text)
    (RESULTS / "demo_chat_base.json").write_text(json.dumps({
        "args": vars(args), "load_average": load, "build_seconds": build_s, "pretrain": built, "curve": curve,
        "finetune_seconds": finetune_s, "finetune_metrics": result.metrics, "answers": answers}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
