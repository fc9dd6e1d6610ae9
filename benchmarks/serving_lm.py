"""OpenLoRA serving of a causal LM: 1,000 rank-8 LoRA adapters of the demo's chat base on one base copy
(issue 15, item 6: the built-in engine's case; on a GPU, vLLM serves these adapters instead, see
docs/serving.md).

    .venv/bin/python benchmarks/serving_lm.py             # 128 requests a scenario, 16 new tokens each
    .venv/bin/python benchmarks/serving_lm.py --quick     # 64

Base: the demo chat base's architecture (Llama, DEMO_CHAT_BASE: ~5M parameters, ChatML BPE trained here on
Tiny Shakespeare) with random weights: throughput does not depend on what the weights learned. Adapters:
rank 8 on q_proj and v_proj of its 4 layers, random (non-zero) A and B, in PEFT's own layout (the first is
saved by PEFT, the rest copy its keys). Prompts: Tiny Shakespeare lines. Greedy decoding, 16 new tokens.

Scenarios ((a) and (b) interleaved window by window, so the shared machine's load hits both alike):
  (a) every request for one adapter                          (batched, the adapter stays cached)
  (b) requests uniform over 1,000 adapters, cache of 100     (mixed-adapter generate; ~90% misses)
  (c) naive: load the base + the adapter for every request   (from_pretrained + PeftModel + generate)
Reported: requests/s and new tokens/s by wall time, and process CPU seconds per request (one torch thread:
on this shared 2-core machine CPU time is the steadier figure). Check: the engine's greedy answers equal
PEFT's own generate on one adapter.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.harness import cpu_seconds  # noqa: E402

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")
DATA = Path(os.environ.get("SHAKESPEARE", "/work/shared/data/tinyshakespeare.txt"))
N_ADAPTERS = 1000
RANK = 8
TARGETS = ("q_proj", "v_proj")
NEW_TOKENS = 16
WINDOW_BATCHES = 4


def prompts(n: int, seed: int) -> list[str]:
    lines = [ln for ln in DATA.read_text(encoding="utf-8").split("\n") if len(ln) > 20]
    rng = random.Random(seed)
    return [rng.choice(lines) for _ in range(n)]


def write_adapters(root: Path, n: int, base: str) -> list[Path]:
    from peft import LoraConfig, TaskType, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=RANK, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=list(TARGETS), init_lora_weights=False))
    first = root / "adapter-0000"
    peft.save_pretrained(str(first))
    meta = json.dumps({"task": "generation", "labels": [], "max_length": 256})
    (first / "factory.json").write_text(meta)
    keys = load_file(str(first / "adapter_model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    out = [first]
    for i in range(1, n):
        d = root / f"adapter-{i:04d}"
        d.mkdir()
        tensors = {k: (torch.randn(v.shape, generator=gen) * (0.05 if "lora_B" in k else 1 / v.shape[-1] ** 0.5))
                   for k, v in keys.items()}
        save_file(tensors, str(d / "adapter_model.safetensors"))
        shutil.copy(first / "adapter_config.json", d / "adapter_config.json")
        (d / "factory.json").write_text(meta)
        out.append(d)
    return out


def peft_generate(base: str, adapter: Path, texts: list[str]) -> list[str]:
    """PEFT's own greedy generate, one text at a time (the naive design and the reference)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    out = []
    with torch.inference_mode():
        for t in texts:
            enc = {k: v for k, v in tok(t, return_tensors="pt").items() if k != "token_type_ids"}
            ids = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                                 no_repeat_ngram_size=3, pad_token_id=tok.pad_token_id)
            new = ids[0, enc["input_ids"].shape[1]:].tolist()
            ends = {tok.eos_token_id, tok.bos_token_id}
            cut = next((i for i, x in enumerate(new) if x in ends), len(new))
            out.append(tok.decode(new[:cut], skip_special_tokens=True))
    return out


def run_interleaved(engine, base: str, scenarios: dict, batch: int) -> dict:
    from serving.openlora import InferenceRequest

    window = batch * WINDOW_BATCHES
    stats = {n: {"lat": [], "wall": 0.0, "cpu": 0.0, "tokens": 0, "hits": 0, "misses": 0} for n in scenarios}
    longest = max(len(t) for _, t in scenarios.values())
    for s in range(0, longest, window):
        for name, (adapters, texts) in scenarios.items():
            if s >= len(texts):
                continue
            reqs = [InferenceRequest(base_path=base, adapter_dir=str(a), text=t, task="generation",
                                     max_new_tokens=NEW_TOKENS, temperature=0)
                    for a, t in zip(adapters[s:s + window], texts[s:s + window], strict=True)]
            cs = engine.cache.stats
            before = (cs.hits, cs.misses)
            w0, c0 = time.perf_counter(), cpu_seconds()
            results = engine.infer(reqs)
            st = stats[name]
            st["wall"] += time.perf_counter() - w0
            st["cpu"] += cpu_seconds() - c0
            st["lat"] += [r["latency_ms"] / 1000 for r in results]
            st["tokens"] += sum(r["completion_tokens"] for r in results)
            st["hits"] += cs.hits - before[0]
            st["misses"] += cs.misses - before[1]
    return {n: {"requests": len(st["lat"]), "rps": len(st["lat"]) / st["wall"], "tokens_per_s": st["tokens"] / st["wall"],
                "cpu_ms_per_request": 1000 * st["cpu"] / len(st["lat"]),
                "p50_ms": float(np.percentile(st["lat"], 50) * 1000), "p99_ms": float(np.percentile(st["lat"], 99) * 1000),
                "hit_rate": st["hits"] / max(1, st["hits"] + st["misses"])} for n, st in stats.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cache", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on this shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from factory.training.tiny import DEMO_CHAT_BASE, build_tiny_causal_lm
    from serving.openlora import ServingConfig, ServingEngine

    n = 64 if args.quick else 128
    n_c = 8 if args.quick else 16
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-lm-", dir=os.environ.get("BENCH_TMP")))
    try:
        text = DATA.read_text(encoding="utf-8")
        base = str(build_tiny_causal_lm(work / "base", family="llama", texts=text.split("\n\n")[:4000],
                                        **DEMO_CHAT_BASE))
        params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(base).parameters())
        t0 = time.perf_counter()
        adapters = write_adapters(work / "adapters", N_ADAPTERS, base)
        write_s = time.perf_counter() - t0
        checks = prompts(8, seed=99)
        reference = peft_generate(base, adapters[7], checks)
        engine = ServingEngine(ServingConfig(cache_adapters=args.cache, cache_bytes=1 << 40, max_batch=args.batch,
                                             max_new_tokens=NEW_TOKENS, device="cpu"))
        from serving.openlora import InferenceRequest

        ours = [r["text"] for r in engine.infer([InferenceRequest(base_path=base, adapter_dir=str(adapters[7]), text=t,
                                                                  task="generation", max_new_tokens=NEW_TOKENS,
                                                                  temperature=0) for t in checks])]
        same = sum(a == b for a, b in zip(ours, reference, strict=True)) / len(checks)
        engine.infer([InferenceRequest(base_path=base, adapter_dir=str(adapters[i % 2]), text=t, task="generation",
                                       max_new_tokens=NEW_TOKENS, temperature=0)
                      for i, t in enumerate(prompts(args.batch, seed=1))])  # warm-up
        rng = random.Random(3)
        runs = run_interleaved(engine, base, {
            "a": ([adapters[0]] * n, prompts(n, seed=2)),
            "b": ([adapters[rng.randrange(N_ADAPTERS)] for _ in range(n)], prompts(n, seed=4)),
        }, args.batch)
        lat_c, w0, c0 = [], time.perf_counter(), cpu_seconds()
        for t in prompts(n_c, seed=5):
            s0 = time.perf_counter()
            peft_generate(base, adapters[rng.randrange(N_ADAPTERS)], [t])
            lat_c.append(time.perf_counter() - s0)
        runs["c"] = {"requests": n_c, "rps": n_c / (time.perf_counter() - w0),
                     "cpu_ms_per_request": 1000 * (cpu_seconds() - c0) / n_c,
                     "p50_ms": float(np.percentile(lat_c, 50) * 1000), "p99_ms": float(np.percentile(lat_c, 99) * 1000)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b, c = runs["a"], runs["b"], runs["c"]
    result = {"meta": {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                                  f"{torch.get_num_threads()} threads, cpu",
                       "base": f"Llama (DEMO_CHAT_BASE), {params:,} parameters, random weights",
                       "adapters": f"{N_ADAPTERS} x LoRA r={RANK} on {'+'.join(TARGETS)}", "batch": args.batch,
                       "cache": args.cache, "new_tokens": NEW_TOKENS, "write_adapters_s": round(write_s, 1),
                       "load_average_start": load_start, "load_average_end": os.getloadavg()},
              "runs": runs, "b_over_a_wall": b["rps"] / a["rps"], "b_over_a_cpu": a["cpu_ms_per_request"] / b["cpu_ms_per_request"],
              "b_over_c_cpu": c["cpu_ms_per_request"] / b["cpu_ms_per_request"], "same_text_as_peft": same}
    rows = [("(a) one adapter", a), (f"(b) uniform over {N_ADAPTERS}, cache {args.cache}", b),
            ("(c) naive: base + adapter per request", c)]
    md = ["# OpenLoRA serving of a causal LM (`benchmarks/serving_lm.py`)", "",
          f"Base: {result['meta']['base']}. Adapters: {result['meta']['adapters']}. Greedy, {NEW_TOKENS} new tokens, "
          f"batches of {args.batch}. Machine: {result['meta']['machine']}; load average "
          f"{load_start[0]:.1f} at the start, {result['meta']['load_average_end'][0]:.1f} at the end (shared).", "",
          "| scenario | requests | req/s (wall) | new tokens/s (wall) | CPU ms / request | p50 ms | p99 ms |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, d in rows:
        tps = f"{d['tokens_per_s']:.1f}" if "tokens_per_s" in d else "-"
        md.append(f"| {name} | {d['requests']} | {d['rps']:.2f} | {tps} | "
                  f"{d['cpu_ms_per_request']:.0f} | {d['p50_ms']:.0f} | {d['p99_ms']:.0f} |")
    md += ["", f"- (b) / (a): **{result['b_over_a_cpu']:.0%}** by CPU time per request, {result['b_over_a_wall']:.0%} "
           f"by wall time; (b) hit rate {b['hit_rate']:.0%}. (b) / (c): **{result['b_over_c_cpu']:.1f}x** by CPU time.",
           f"- The engine's greedy answers equal PEFT's own generate on {same:.0%} of 8 prompts (adapter 7); with random "
           "weights the next-token logits are nearly flat, so float rounding between the batched LoRA and PEFT's "
           "can flip a near-tie (serving/tests/test_engine.py checks the logits themselves against PEFT).",
           "- GPU: not measured (no GPU machine was lent); on a GPU these adapters go to vLLM (docs/serving.md), whose "
           "many-adapter throughput is the GPU target of issue 15, item 6.", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving_lm.md").write_text("\n".join(md))
    (RESULTS / "serving_lm.json").write_text(json.dumps(result, indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
