"""How much training text the demo generator reuses, by decoding and by how spans are matched.

    .venv/bin/python benchmarks/generation_spans.py                 # builds the demo base (~2 min), then measures
    .venv/bin/python benchmarks/generation_spans.py --base PATH     # an existing generation base or fine-tune folder

The base is built as `make run`'s bootstrap builds "tiny-gpt2 (Shakespeare)"
(factory.training.tiny.build_demo_generator, 1,000 steps as DEMO_BASE_PRETRAIN_STEPS). The span index
holds Tiny Shakespeare's paragraphs (the Literature Datanet's records), tokenised with the base's
tokenizer. Prompts: 12 random paragraphs cut after their first line and 30 more characters. Each prompt is answered by the serving engine
(`ServingEngine.generate`, 40 new tokens, no_repeat_ngram_size 3) with greedy decoding and with beam
search, and its spans are matched on the answer alone and on the answer after its prompt (spans may
start in the prompt; only their part in the answer counts). Reported: spans per answer of at least 4,
5, 6 and 8 answer tokens, and the share of answer tokens inside a span of >= 4.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")
DATA = Path(os.environ.get("SHAKESPEARE", "/work/shared/data/tinyshakespeare.txt"))
LENGTHS = (4, 5, 6, 8)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="", help="a generation model folder (default: build the demo base)")
    ap.add_argument("--steps", type=int, default=1000, help="pre-training steps when building the base")
    ap.add_argument("--prompts", type=int, default=12)
    args = ap.parse_args()
    from attribution.engines.base import Record
    from attribution.engines.spans import SpanEngine
    from factory.training.modeling import load_tokenizer
    from factory.training.tiny import build_demo_generator
    from serving.openlora import InferenceRequest, ServingConfig, ServingEngine

    text = DATA.read_text(encoding="utf-8")
    work = Path(tempfile.mkdtemp(prefix="bench-genspans-"))
    built = None
    base = Path(args.base) if args.base else work / "base"
    if not args.base:
        built = build_demo_generator(base, texts=text.splitlines(), steps=args.steps)
        print(f"base built: loss {built['first_loss']:.2f} -> {built['last_loss']:.2f} in {built['seconds']:.0f}s")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    engine_spans = SpanEngine(tokenizer=load_tokenizer(str(base)), min_span=min(LENGTHS))
    t0 = time.perf_counter()
    index = engine_spans.fit(None, [Record(id=str(i), text=p, contributor=str(i % 3)) for i, p in enumerate(paragraphs)],
                             directory=work / "spans")
    index_s = time.perf_counter() - t0
    rng = random.Random(0)
    prompts = [p[: len(p.split("\n")[0]) + 1 + 30] for p in rng.sample(paragraphs, args.prompts)]

    rows, examples = [], {}
    for beams in (1, 4):
        engine = ServingEngine(ServingConfig(device="cpu", num_beams=beams, max_new_tokens=40))
        t0 = time.perf_counter()
        answers = [a["text"] for a in engine.generate([
            InferenceRequest(base_path=str(base), adapter_dir=None, text=p, task="generation") for p in prompts])]
        gen_s = time.perf_counter() - t0
        for with_prompt in (False, True):
            per_len = dict.fromkeys(LENGTHS, 0)
            coverage = 0.0
            for prompt, answer in zip(prompts, answers, strict=True):
                out = engine_spans.explain(index, answer, context=prompt if with_prompt else "")
                for s in out["spans"]:
                    for n in LENGTHS:
                        per_len[n] += s["tokens"] >= n
                coverage += out["coverage"]
                longest = max(out["spans"], key=lambda s: s["tokens"] + s.get("context_tokens", 0), default=None)
                key = f"beams {beams}, {'after the prompt' if with_prompt else 'answer alone'}"
                if longest is not None and (key not in examples or longest["tokens"] > examples[key]["tokens"]):
                    examples[key] = {"prompt": prompt, "answer": answer, "span": longest["text"],
                                     "tokens": longest["tokens"], "context_tokens": longest.get("context_tokens", 0),
                                     "count": longest["count"]}
            rows.append({"decoding": "greedy" if beams == 1 else f"beam search ({beams})",
                         "matched": "answer after its prompt" if with_prompt else "answer alone",
                         **{f"spans_ge_{n}": per_len[n] / len(prompts) for n in LENGTHS},
                         "coverage_ge_4": coverage / len(prompts), "generate_s": gen_s})
    table = ["| decoding | spans matched on | " + " | ".join(f">= {n} tokens" for n in LENGTHS)
             + " | answer covered (>= 4) |", "| --- | --- | " + " | ".join("---" for _ in LENGTHS) + " | --- |"]
    for r in rows:
        table.append(f"| {r['decoding']} | {r['matched']} | " + " | ".join(f"{r[f'spans_ge_{n}']:.2f}" for n in LENGTHS)
                     + f" | {r['coverage_ge_4']:.0%} |")
    md = ["# Reused training spans per generated answer (`benchmarks/generation_spans.py`)", "",
          f"Base: {'the demo base, built here' if built else base}"
          + (f" ({args.steps} steps, loss {built['first_loss']:.2f} -> {built['last_loss']:.2f}, {built['seconds']:.0f} s)"
             if built else "") + f". {len(paragraphs)} Tiny Shakespeare paragraphs indexed in {index_s:.1f} s; "
          f"{len(prompts)} prompts, 40 new tokens each; spans per answer by their length in answer tokens.", "",
          *table, "", "Longest span found, by setting:", ""]
    for key, ex in examples.items():
        md.append(f"- {key}: {ex['span']!r} ({ex['tokens']} answer tokens + {ex['context_tokens']} from the prompt, "
                  f"{ex['count']}x in the corpus), answering {ex['prompt'][-40:]!r}")
    md.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generation_spans.md").write_text("\n".join(md))
    (RESULTS / "generation_spans.json").write_text(json.dumps({"rows": rows, "examples": examples, "built": built},
                                                               indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
