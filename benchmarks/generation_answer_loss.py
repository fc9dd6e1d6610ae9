"""How well a chat base (and a fine-tune's adapter) knows the demo's continuation passages: teacher-forced loss.

    .venv/bin/python benchmarks/generation_answer_loss.py      # the cached demo chat base (built when missing)
    .venv/bin/python benchmarks/generation_answer_loss.py --base B --adapter /tmp/bench-genspans-X/adapter \\
        --finance-rows 150 --passages 100 --passage-lines 4-7

Prints (no results file; docs/language_models.md quotes the figures):
- corpus loss: mean LM loss over 64 fixed windows (seed 123) of 128 tokens of the base's pre-training corpus
  (`pretrain.chat_corpus` of Tiny Shakespeare), to compare pre-training recipes;
- answer loss on the "Continue this passage:" conversations of the Instructions Datanet (seed_demo's, or the
  shape given as in benchmarks/generation_spans.py), split as the fine-tune splits them (eval 0.2, seed 42):
  mean loss per assistant token (its reply after the rendered prompt, <|im_end|> included), trained-on and
  held-out. Reciting 8 tokens greedily needs a loss far below the ~4.9 of the demo base.
One torch thread.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="", help="a chat base folder (default: generation_spans.py's cached build)")
    ap.add_argument("--adapter", default="")
    ap.add_argument("--finance-rows", dest="finance_rows", type=int, default=None)
    ap.add_argument("--passages", type=int, default=None)
    ap.add_argument("--passage-lines", dest="passage_lines", default="")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.generation_spans import DATA, ensure_base, instruction_records
    from factory.training.data import split_examples
    from factory.training.pretrain import chat_corpus
    from factory.training.types import GENERATION, Example

    torch.set_num_threads(1)
    args.base = str(ensure_base(argparse.Namespace(base=args.base, steps=1000))[0])  # `make bench` passes none
    tok = AutoTokenizer.from_pretrained(args.base)
    tok.model_max_length = 1 << 40
    model = AutoModelForCausalLM.from_pretrained(args.base)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    texts = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()
    ids = torch.tensor(tok("\n".join(chat_corpus(texts, path=args.base)), add_special_tokens=False)["input_ids"])
    starts = torch.randint(0, ids.numel() - 130, (64,), generator=torch.Generator().manual_seed(123)).tolist()
    with torch.no_grad():
        losses = [model(input_ids=ids[s:s + 128][None], labels=ids[s:s + 128][None]).loss.item() for s in starts]
    print(f"corpus loss {sum(losses) / len(losses):.3f} (64 windows of 128 tokens)")

    shape = {k: getattr(args, k) for k in ("finance_rows", "passages") if getattr(args, k) is not None}
    if args.passage_lines:
        shape["passage_lines"] = tuple(int(x) for x in args.passage_lines.split("-"))
    records = instruction_records(**shape)
    examples = [Example(text=r["text"], record_id=i, messages=r["messages"]) for i, r in enumerate(records)]
    train_ex, eval_ex = split_examples(examples, eval_split=0.2, seed=42, task=GENERATION)
    for name, part in (("trained-on", train_ex), ("held-out", eval_ex)):
        total, count = 0.0, 0
        for ex in part:
            if not ex.messages[0]["content"].startswith("Continue this passage:"):
                continue
            prompt = tok(tok.apply_chat_template(ex.messages[:1], tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
            full = tok(tok.apply_chat_template(ex.messages, tokenize=False), add_special_tokens=False)["input_ids"]
            x = torch.tensor(full)[None]
            labels = x.clone()
            labels[0, :len(prompt)] = -100
            with torch.no_grad():
                loss = model(input_ids=x, labels=labels).loss.item()
            n = int((labels[0, 1:] != -100).sum())
            total, count = total + loss * n, count + n
        print(f"{name} continuations: answer loss {total / max(1, count):.3f} over {count} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
