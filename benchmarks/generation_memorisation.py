"""Can a fine-tune of the demo chat base recite its own training passages? LoRA against full weights.

    .venv/bin/python benchmarks/generation_memorisation.py                 # every configuration, ~25 CPU min
    .venv/bin/python benchmarks/generation_memorisation.py --configs full  # one
    .venv/bin/python benchmarks/generation_memorisation.py --base PATH     # another chat base folder

The question behind issue 15's item 8 (generation_spans.py: 0 of 12 answers reuse an 8-token passage):
is it the base, the preset, or LoRA itself? The same 100 "Continue this passage:" conversations of the
demo's Instructions Datanet (bob's and carol's, shuffled with seed 0), the demo chat base as the bootstrap
builds it (cached under var/genspans/ by generation_spans.py, or --base), assistant-only loss through the
factory's chat encoding, AdamW, linear decay after a 5% warm-up, batch 16, one thread. Every
`--every` epochs: the mean training loss of the epoch, and how many of the first 12 conversations' prompts
the model answers (greedy, 40 new tokens) with a run of >= 8 tokens of that conversation's own answer
(the longest such run per prompt is listed). This is memorisation on the trained-on prompts, the most
favourable case for generation_spans.py's target; nothing here is a product path.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")
TARGET = 8
PROMPTS = 12
# name: (LoRA rank or 0 for every weight, alpha, dropout, learning rate, LoRA on the output layer too,
# LoRA+ ratio: the B matrices' rate over the A matrices', 1 for plain LoRA)
CONFIGS = {
    "lora-r16-lr1e-3": (16, 32, 0.1, 1e-3, False, 1),   # the balanced preset's LoRA and rate, before lm_head
    "lora-r16-lr3e-3": (16, 32, 0.1, 3e-3, False, 1),
    "lora-r64-lr3e-3": (64, 128, 0.1, 3e-3, False, 1),
    "lora-r16-lr1e-3-lm_head": (16, 32, 0.1, 1e-3, True, 1),
    "lora-r16-lr3e-3-lm_head": (16, 32, 0.1, 3e-3, True, 1),
    "lora-r16-lr1e-3-nodrop": (16, 32, 0.0, 1e-3, False, 1),
    "loraplus16-r16-lr1e-3": (16, 32, 0.1, 1e-3, False, 16),
    "loraplus16-r16-lr1e-3-nodrop": (16, 32, 0.0, 1e-3, False, 16),
    "loraplus16-r16-lr1e-3-lm_head": (16, 32, 0.1, 1e-3, True, 16),
    "full-lr1e-3": (0, 0, 0.0, 1e-3, False, 1),
}


def longest_run(generated: list[int], answer: list[int]) -> int:
    best = 0
    for i in range(len(generated)):
        for j in range(len(answer)):
            n = 0
            while i + n < len(generated) and j + n < len(answer) and generated[i + n] == answer[j + n]:
                n += 1
            best = max(best, n)
    return best


def run(name: str, base: Path, records: list[dict], *, epochs: int, every: int, batch: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factory.training.data import collate, encode
    from factory.training.modeling import inspect_model, wrap_lora
    from factory.training.trainer import param_groups
    from factory.training.types import GENERATION, Example, TrainConfig

    rank, alpha, dropout, lr, lm_head, plus = CONFIGS[name]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    if rank:
        targets = [m for m in inspect_model(base)["target_modules"] if m != "lm_head"]  # the body's linear layers
        targets += ["lm_head"] if lm_head else []
        model = wrap_lora(model, task=GENERATION, r=rank, alpha=alpha, dropout=dropout, target_modules=targets)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The trainer's own encoding and batches: the chat template, assistant-only labels, dynamic padding.
    data = encode([Example(text=r["text"], messages=r["messages"]) for r in records], tokenizer=tok,
                  task=GENERATION, labels=[], max_length=256)
    # The trainer's own parameter groups: LoRA+ gives the B matrices `plus` times the rate (1: plain LoRA).
    groups = param_groups(model, TrainConfig(task=GENERATION, model_path=str(base), learning_rate=lr,
                                             loraplus_ratio=float(plus)))
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    steps = epochs * -(-len(data.input_ids) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                pct_start=0.05, anneal_strategy="linear")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def recite() -> list[int]:
        model.eval()
        runs = []
        for r in records[:PROMPTS]:
            prompt = tok.apply_chat_template(list(r["messages"])[:1], tokenize=False, add_generation_prompt=True)
            ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                out = model.generate(input_ids=ids, max_new_tokens=40, do_sample=False, pad_token_id=pad)
            answer = tok(r["messages"][1]["content"], add_special_tokens=False)["input_ids"]
            runs.append(longest_run(out[0, ids.shape[1]:].tolist(), answer))
        model.train()
        return runs

    checkpoints, train_cpu = [], 0.0
    model.train()
    order = list(range(len(data.input_ids)))
    for epoch in range(1, epochs + 1):
        random.Random(epoch).shuffle(order)
        total = count = 0
        started = time.process_time()
        for s in range(0, len(order), batch):
            loss = model(**collate(data, order[s:s + batch], pad_id=pad, task=GENERATION)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total, count = total + loss.item(), count + 1
        train_cpu += time.process_time() - started  # the recitation checks below are not training time
        if epoch % every == 0 or epoch == epochs:
            runs = recite()
            checkpoints.append({"epoch": epoch, "loss": round(total / count, 3), "runs": runs,
                                "reciting": sum(x >= TARGET for x in runs), "cpu_s": round(train_cpu)})
            print(f"{name} epoch {epoch}: loss {total / count:.3f}, reciting {checkpoints[-1]['reciting']}/{PROMPTS} "
                  f"{runs}", flush=True)
    return {"name": name, "rank": rank, "alpha": alpha, "dropout": dropout, "lr": lr, "lm_head": lm_head,
            "loraplus_ratio": plus, "trainable": trainable,
            "checkpoints": checkpoints}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="", help="a chat base folder (default: generation_spans.py's cached build)")
    ap.add_argument("--steps", type=int, default=1000, help="pre-training steps of the cached base to use or build")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--conversations", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="generation_memorisation")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import generation_spans

    torch.set_num_threads(1)
    base, _ = generation_spans.ensure_base(argparse.Namespace(base=args.base, steps=args.steps))
    records = [r for r in generation_spans.instruction_records() if r["contributor"] != "alice"]
    random.Random(0).shuffle(records)
    records = records[:args.conversations]
    results = [run(name, base, records, epochs=args.epochs, every=args.every, batch=args.batch) for name in args.configs]

    epochs = sorted({c["epoch"] for r in results for c in r["checkpoints"]})
    lines = [
        "# Can a fine-tune of the demo chat base recite its training passages? (`benchmarks/generation_memorisation.py`)",
        "",
        f"Command: `benchmarks/generation_memorisation.py {' '.join(sys.argv[1:])}`. Base: `{base.name}`. "
        f"{len(records)} continuation conversations (bob's and carol's), {args.epochs} epochs of batch {args.batch}, "
        "assistant-only loss, one thread. Cells: mean training loss of the epoch / prompts (of the first "
        f"{PROMPTS} trained-on conversations) whose greedy 40-token answer holds >= {TARGET} tokens of its own "
        "answer in a row. CPU s: training only, to the last epoch.",
        "",
        "| configuration | trainable parameters | " + " | ".join(f"epoch {e}" for e in epochs) + " | CPU s |",
        "| --- | --- | " + " | ".join("---" for _ in epochs) + " | --- |",
    ]
    for r in results:
        by = {c["epoch"]: c for c in r["checkpoints"]}
        cells = [f"{by[e]['loss']:.2f} / {by[e]['reciting']} of {PROMPTS}" if e in by else "-" for e in epochs]
        lines.append(f"| {r['name']} | {r['trainable']:,} | " + " | ".join(cells) + f" | {r['checkpoints'][-1]['cpu_s']} |")
    lines += ["", "Longest run of the prompt's own answer per prompt at the last epoch:", ""]
    lines += [f"- {r['name']}: {r['checkpoints'][-1]['runs']}" for r in results]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
