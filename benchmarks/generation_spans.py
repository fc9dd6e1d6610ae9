"""Does the demo's chat fine-tune reuse its training passages, so that an answer shows highlighted, paid spans?

    .venv/bin/python benchmarks/generation_spans.py                  # builds the demo chat base (cached), then measures
    .venv/bin/python benchmarks/generation_spans.py --base PATH      # an existing chat base folder
    .venv/bin/python benchmarks/generation_spans.py --preset quick   # another preset than the form's default
    .venv/bin/python benchmarks/generation_spans.py --passages 100 --passage-lines 4-7 --finance-rows 150
                                                                     # another shape of the demo instruction data

The product's path, step by step, without the database:
- base: the demo chat base as `make run`'s bootstrap builds it (`factory.training.tiny.build_demo_chat_base`,
  DEMO_BASE_PRETRAIN_STEPS steps on Tiny Shakespeare), cached under var/genspans/ (built once);
- data: the Instructions Datanet's records as `seed_demo` uploads them (`instruction_uploads`: alice's finance
  questions, bob's and carol's "Continue this passage:" conversations), parsed as the ingest parses them;
- fine-tune: the factory's trainer (`factory.training.train`) with the form's default preset for this base and
  Datanet (`factory.services.preset_params`' rules: the preset's values, every linear layer when it says "all"
  and the output layer too when it says "all+output",
  max length capped by the base's), assistant-only loss on the conversations;
- span index: `SpanEngine` (min span SERVING_SPANS_MIN_TOKENS) over each record's assistant turns
  (`datanets.chat.conversation_answers`), tokenised with the base's tokenizer, as `serving.services` builds it;
- answers: 12 continuation prompts drawn (seed 0) from the conversations the fine-tune trained on, rendered with
  the base's chat template (`chat_prompt_render`), answered by the serving engine with the playground's
  default decoding (temperature 0: greedy) and the API's (no temperature: beam search), 40 new tokens;
  each answer's spans are matched after its prompt, as a paid answer's are (`generation_explain`).
Reported per prompt: the longest reused span in answer tokens, its record's contributor, and the count of
prompts with a span of >= 8 answer tokens (the demo's target: at least half).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")
DATA = Path(os.environ.get("SHARED_DATA_DIR", "/work/shared/data"))
CACHE = ROOT / "var" / "genspans"
TARGET_TOKENS = 8
MIN_SPAN = 6  # set from settings.SERVING_SPANS_MIN_TOKENS in main()
MAX_CHAT_CHARS = 20_000  # the ingest's conversation limit is larger than any demo row; only validation here
DECODINGS = (("playground (greedy)", 0.0), ("API default (beam search, 4)", None))


def instruction_records(**shape) -> list[dict]:
    """The Instructions Datanet's records in ingest order: {"text" (stored form), "messages", "contributor"}.
    A conversation already seen is dropped, as the ingest drops duplicates. `shape`: instruction_uploads'
    keywords (another shape of the demo data than seed_demo's; none: the demo's own)."""
    from datanets import chat
    from datanets.management.commands.seed_demo import instruction_uploads

    out, seen = [], set()
    for name, file_name, content in instruction_uploads(DATA / "financial_phrasebank.csv", DATA / "tinyshakespeare.txt",
                                                        **shape):
        text = content.decode("utf-8")
        if file_name.endswith(".csv"):
            rows = [chat.conversation_from_pair(r["prompt"], r["response"], max_length=MAX_CHAT_CHARS)
                    for r in csv.DictReader(io.StringIO(text))]
        else:
            rows = [chat.conversation_parse(json.loads(line)["messages"], max_length=MAX_CHAT_CHARS)
                    for line in text.splitlines() if line.strip()]
        for turns in rows:
            stored = chat.conversation_text(turns)
            if stored not in seen:
                seen.add(stored)
                out.append({"text": stored, "messages": turns, "contributor": name})
    return out


def default_params(preset: str, base: Path, examples: list) -> dict:
    """The preset's hyperparameters as the fine-tune form fills them for this base and Datanet version
    (factory.services.preset_params without the catalog rows): every linear layer when the preset says "all";
    the epochs sized from the record count (`preset_epochs`: a language model has no labels); the max length
    fitted to the records (`generation_max_length`: 95% of an evenly spaced sample of 500 kept whole, at
    least the preset's, at most the base's)."""
    from factory import services
    from factory.training.data import causal_lm_lengths, fitted_max_length
    from factory.training.estimate import sized_epochs
    from factory.training.modeling import inspect_model, load_tokenizer
    from factory.training.presets import PRESET_SIZING, PRESETS

    spec, sizing = PRESETS[preset], PRESET_SIZING[preset]
    info = inspect_model(base)
    params = {k: v for k, v in spec.items() if k != "targets"}
    params["epochs"] = sized_epochs(n_examples=len(examples), eval_split=params["eval_split"],
                                    batch_size=params["batch_size"], num_labels=0, **sizing)
    params["target_modules"] = services.preset_targets(spec["targets"], base_model=SimpleNamespace(**info),
                                                       task="generation")
    sample = examples[::max(1, -(-len(examples) // services.LENGTH_SAMPLE))]
    lengths = causal_lm_lengths(sample, tokenizer=load_tokenizer(str(base)))
    params["max_length"] = fitted_max_length(lengths, floor=min(params["max_length"], info["max_length"]),
                                             cap=info["max_length"])
    return params


def ensure_base(args) -> tuple[Path, dict | None]:
    if args.base:
        return Path(args.base), None
    from factory.training.tiny import build_demo_chat_base

    base = CACHE / f"chat-base-{args.steps}"
    if (base / "build.json").is_file():
        return base, json.loads((base / "build.json").read_text())
    texts = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()
    t0 = time.process_time()
    built = dict(build_demo_chat_base(base, texts=texts, steps=args.steps, threads=1) or {})
    built["cpu_s"] = time.process_time() - t0
    (base / "build.json").write_text(json.dumps(built, indent=2))
    return base, built


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="", help="a chat base folder (default: build the demo chat base, cached)")
    ap.add_argument("--steps", type=int, default=1000, help="pre-training steps when building the base")
    ap.add_argument("--preset", default="", help="fine-tune preset (default: the form's default)")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--max-length", dest="max_length", type=int, default=None, help="override the fitted max length")
    ap.add_argument("--patience", type=int, default=None, help="override the preset's early-stopping patience")
    ap.add_argument("--learning-rate", dest="learning_rate", type=float, default=None)
    ap.add_argument("--out", default="generation_spans", help="results name under benchmarks/results/")
    ap.add_argument("--loraplus-ratio", dest="loraplus_ratio", type=float, default=None,
                    help="override the preset's LoRA+ ratio (the B matrices' rate over the A matrices')")
    ap.add_argument("--no-base-rows", action="store_true", help="skip the answers of the base without the adapter")
    ap.add_argument("--records", type=int, default=0, help="keep every n-th record only (a quick smoke run)")
    ap.add_argument("--adapter", default="", help="reuse a fine-tune's output folder (skips training)")
    ap.add_argument("--finance-rows", dest="finance_rows", type=int, default=None,
                    help="another shape of the demo data: alice's finance questions (seed_demo's by default)")
    ap.add_argument("--passages", type=int, default=None, help="... bob's and carol's continuation pairs each")
    ap.add_argument("--passage-lines", dest="passage_lines", default="",
                    help="... only paragraphs of LOW-HIGH lines (e.g. 4-7: answers of two to four lines)")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    from attribution.engines.base import Record
    from attribution.engines.spans import SpanEngine
    from datanets.chat import conversation_answers
    from factory.training import TrainConfig, train
    from factory.training.data import split_examples
    from factory.training.modeling import load_tokenizer
    from factory.training.presets import DEFAULT_PRESET
    from factory.training.types import GENERATION, Example
    from serving.openlora import InferenceRequest, ServingConfig, ServingEngine

    global MIN_SPAN
    MIN_SPAN = settings.SERVING_SPANS_MIN_TOKENS  # the shortest span an answer shows and pays
    torch.set_num_threads(1)
    base, built = ensure_base(args)
    if built and "first_loss" in built:
        print(f"base {base}: loss {built['first_loss']:.2f} -> {built['last_loss']:.2f}, {built.get('cpu_s', 0):.0f} s CPU")
    shape = {k: getattr(args, k) for k in ("finance_rows", "passages") if getattr(args, k) is not None}
    if args.passage_lines:
        shape["passage_lines"] = tuple(int(x) for x in args.passage_lines.split("-"))
    records = instruction_records(**shape)
    if args.records:
        records = records[::args.records]
    preset = args.preset or DEFAULT_PRESET
    examples = [Example(text=r["text"], record_id=i, messages=r["messages"]) for i, r in enumerate(records)]
    params = default_params(preset, base, examples)
    for key in ("epochs", "max_length", "learning_rate", "patience", "loraplus_ratio"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    config = TrainConfig(task=GENERATION, model_path=str(base), **{k: v for k, v in params.items()
                                                                    if k in TrainConfig.__dataclass_fields__},
                         cpu_threads=1, device="cpu")
    train_ex, _ = split_examples(examples, eval_split=config.eval_split, seed=config.seed, task=config.task)

    out = Path(args.adapter) if args.adapter else Path(tempfile.mkdtemp(prefix="bench-genspans-"))
    logs: list[str] = []
    t0 = time.process_time()
    if args.adapter:
        adapter_dir, trained = out / "adapter", json.loads((out / "bench-train.json").read_text())
    else:
        from factory.training.trainer import Callbacks

        result = train(config, examples, output_dir=out, callbacks=Callbacks(on_log=lambda m: (logs.append(m), print(m))))
        adapter_dir = result.adapter_dir
        evals = [h for h in result.history if "eval_loss" in h]
        trained = {"steps": result.steps, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early, "eval_loss": result.metrics.get("eval_loss"),
                   "eval_losses": [round(h["eval_loss"], 4) for h in evals], "cpu_s": time.process_time() - t0,
                   "train_examples": result.train_examples, "log": logs}
        (out / "bench-train.json").write_text(json.dumps(trained, indent=2))
    print(f"fine-tune ({preset}): {trained['steps']} steps, eval loss {trained['eval_loss']:.3f}, "
          f"{trained['cpu_s']:.0f} s CPU; adapter {adapter_dir}")

    tokenizer = load_tokenizer(str(base))
    spans = SpanEngine(tokenizer=tokenizer, min_span=MIN_SPAN)
    t0 = time.process_time()
    index = spans.fit(None, [Record(id=str(i), text=conversation_answers(r["text"]), contributor=r["contributor"])
                             for i, r in enumerate(records)], directory=out / "spans")
    index_s = time.process_time() - t0

    continuations = [ex for ex in train_ex if ex.messages[0]["content"].startswith("Continue this passage:")]
    picked = random.Random(0).sample(continuations, args.prompts)
    engine = ServingEngine(ServingConfig(device="cpu", threads=1))
    rows = []
    runs = [(label, temperature, True) for label, temperature in DECODINGS]
    runs += [(label, temperature, False) for label, temperature in DECODINGS if not args.no_base_rows]
    for label, temperature, tuned in runs:
        label = label if tuned else f"base alone, {label}"
        for ex in picked:
            user = ex.messages[:1]
            prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            answer = engine.generate([InferenceRequest(base_path=str(base), adapter_dir=str(adapter_dir) if tuned else None, text=prompt,
                                                       task=GENERATION, temperature=temperature)])[0]["text"]
            found = spans.explain(index, answer, context=prompt)
            longest = max(found["spans"], key=lambda s: s["tokens"], default=None)
            credited = longest["credited"] or next(iter(longest["records"])) if longest else None
            record = records[int(credited)] if longest else None
            rows.append({
                "decoding": label, "record": ex.record_id, "prompt": user[0]["content"], "answer": answer,
                "reference": ex.messages[1]["content"], "longest_tokens": longest["tokens"] if longest else 0,
                "longest_text": longest["text"] if longest else "", "context_tokens": longest.get("context_tokens", 0) if longest else 0,
                "own_record": bool(longest) and str(ex.record_id) in longest["records"],
                "contributor": record["contributor"] if record else "", "coverage": found["coverage"],
                "shares": {k: round(v, 3) for k, v in found["contributor_shares"].items()}})
    write(rows, base=base, built=built, preset=preset, params=params, trained=trained, n_records=len(records),
          n_train=len(train_ex), index_s=index_s, out=args.out)
    return 0


def write(rows, *, base, built, preset, params, trained, n_records, n_train, index_s,
          out: str = "generation_spans") -> None:
    summary = {}
    for label in dict.fromkeys(r["decoding"] for r in rows):
        mine = [r for r in rows if r["decoding"] == label]
        summary[label] = {"prompts": len(mine), "span_ge_8": sum(r["longest_tokens"] >= TARGET_TOKENS for r in mine),
                          "span_ge_6": sum(r["longest_tokens"] >= MIN_SPAN for r in mine),
                          "own_passage": sum(r["own_record"] and r["longest_tokens"] >= TARGET_TOKENS for r in mine),
                          "mean_coverage": sum(r["coverage"] for r in mine) / max(1, len(mine))}
    hp = ", ".join(f"{k} {params[k]}" for k in ("epochs", "patience", "learning_rate", "batch_size", "lora_r",
                                                "max_length") + tuple(k for k in ("loraplus_ratio", "keep_epoch")
                                                                       if k in params))
    from factory.training.types import OUTPUT_LAYER

    layers = "every linear layer" + (" and the output layer" if OUTPUT_LAYER in params["target_modules"] else "")
    md = ["# Reused training spans in the demo's chat answers (`benchmarks/generation_spans.py`)", "",
          "Command: `" + " ".join(["benchmarks/generation_spans.py", *sys.argv[1:]]) + "`", "",
          f"Base: {'the demo chat base, built here' if built else base}"
          + (f" ({built.get('steps', '?')} pre-training steps, loss {built['first_loss']:.2f} -> {built['last_loss']:.2f}, "
             f"{built.get('cpu_s', 0):.0f} s CPU)" if built and "first_loss" in built else "")
          + f". Fine-tune: preset `{preset}` ({hp}, {layers}), assistant-only loss, on "
          f"{trained.get('train_examples', n_train)} of the {n_train} training conversations (the rest cut before their "
          f"answer) of the Instructions Datanet's {n_records}: {trained['steps']} steps, kept epoch {trained['best_epoch']}, "
          f"eval loss {trained['eval_loss']:.3f} (per epoch {trained['eval_losses']}), {trained['cpu_s']:.0f} s CPU. "
          f"Span index over the records' assistant turns in {index_s:.1f} s CPU. {len({r['record'] for r in rows})} "
          "continuation prompts drawn from the trained-on conversations; 40 new tokens; spans matched after the prompt.",
          "", "| decoding | prompts with a span >= 8 tokens | >= 6 tokens | >= 8 from the prompt's own passage "
          "| answer tokens in spans |", "| --- | --- | --- | --- | --- |"]
    for label, s in summary.items():
        md.append(f"| {label} | {s['span_ge_8']} of {s['prompts']} | {s['span_ge_6']} | {s['own_passage']} "
                  f"| {s['mean_coverage']:.0%} |")
    md += ["", "Per prompt: the longest reused span (answer tokens), whose record it is, and its contributor.", "",
           "| decoding | prompt ends | longest span | tokens | record | contributor |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["decoding"].startswith("base alone"):
            continue
        tail = r["prompt"].rstrip().split("\n")[-1][-40:]
        md.append(f"| {r['decoding'].split(' ')[0]} | {tail!r} | {r['longest_text'][:60]!r} | {r['longest_tokens']} "
                  f"| {'its own' if r['own_record'] else 'another'} | {r['contributor'] or '-'} |")
    md.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{out}.md").write_text("\n".join(md))
    (RESULTS / f"{out}.json").write_text(json.dumps(
        {"summary": summary, "rows": rows, "built": built, "preset": preset, "params": params,
         "trained": {k: v for k, v in trained.items() if k != "log"}}, indent=2, ensure_ascii=False))
    print("\n".join(md))


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
