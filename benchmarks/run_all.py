"""`make bench`: run every benchmark script in this folder, each in its own process.

    .venv/bin/python benchmarks/run_all.py [names]               # timing scripts off the harness: 5 runs
    .venv/bin/python benchmarks/run_all.py --repeats 1 [names]   # every script once (a smoke run)

The machine's load average is printed before and after each script. Scripts on the harness
(benchmarks/harness.py: they import it) repeat their configurations themselves and run once; so do the
quality benchmarks (`QUALITY`: their figures are model quality, not time; two of them report seeds and
intervals). Every other script runs `--repeats` times (default 5, the harness's minimum), interleaved
with the others (repeat r in an order rotated by r), with one compute thread; each numeric figure of its
results JSON, and the script's own CPU and wall time, are then reported as median, min and spread,
flagged when noisy, in `benchmarks/results/<name>_repeats.md`.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks import harness  # noqa: E402

RESULTS = HERE / "results"
MAX_ROWS = 300  # figures per repeats table: a results file with more lists the first ones
# Quality, not time: run once (hours each; their tables carry seeds and confidence intervals).
QUALITY = {"attribution_quality", "payout_fairness", "generation_spans", "generation_memorisation",
           "generation_answer_loss", "probe_head_scale"}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def on_harness(script: Path) -> bool:
    """Repeats its own cases (or measures quality): run once."""
    return script.stem in QUALITY or "from benchmarks import harness" in script.read_text()


def _run(script: Path, env: dict) -> tuple[int, float, float]:
    print(f"\n=== {script.stem} (load average {_load()}) ===", flush=True)
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - started
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"=== {script.stem}: exit {rc} in {wall:.0f}s, {cpu:.0f} s CPU (load average {_load()}) ===", flush=True)
    return rc, cpu, wall


def numeric_leaves(data, path: str = "") -> dict[str, float]:
    """{"runs[0].examples_per_s": 12.3, ...}: every int/float in a JSON document, by its path."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(numeric_leaves(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.update(numeric_leaves(v, f"{path}[{i}]"))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[path] = float(data)
    return out


def repeats_report(name: str, report: harness.Report, runs: list[dict]) -> None:
    leaves = [numeric_leaves(r["results"]) for r in runs if r["results"] is not None]
    common = [k for k in (leaves[0] if leaves else {}) if all(k in x for x in leaves)]
    varying = common
    rows = [["script CPU s", harness.Stat.of([r["cpu_s"] for r in runs]).cell()],
            ["script wall s", harness.Stat.of([r["wall_s"] for r in runs]).cell()]]
    rows += [[f"`{k}`", harness.Stat.of([x[k] for x in leaves]).cell("{:,.4g}")] for k in varying[:MAX_ROWS]]
    noisy = sum(1 for k in varying if harness.Stat.of([x[k] for x in leaves]).noisy)
    md = "\n".join([*report.header(), f"Every numeric figure of `benchmarks/results/{name}.json` over {len(runs)} "
                    f"runs of `benchmarks/{name}.py` ({noisy} of {len(varying)} noisy; the script's own table is "
                    f"the last run's).", "", *harness.table(["figure", "median (min, spread)"], rows)])
    harness.write(RESULTS, f"{name}_repeats", md, {**report.meta(), "runs": runs})
    print(f"--- {name}: {len(runs)} runs, {noisy} of {len(varying)} figures noisy -> results/{name}_repeats.md")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--repeats", type=int, default=harness.MIN_REPEATS)
    args = ap.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py")
                     if p.name not in {"run_all.py", "__init__.py", "harness.py"} and not p.name.startswith("_")
                     and (not args.names or p.stem in args.names))
    failed: set[str] = set()
    env = {**os.environ, **(harness.SINGLE_THREAD_ENV if args.repeats > 1 else {})}
    for script in [s for s in scripts if on_harness(s)] if args.repeats > 1 else scripts:
        if _run(script, env)[0]:
            failed.add(script.stem)
    if args.repeats > 1:
        repeated = [s for s in scripts if not on_harness(s)]
        report = harness.Report("run_all", repeats=args.repeats)
        runs: dict[str, list[dict]] = {s.stem: [] for s in repeated}
        for r in range(args.repeats):
            k = r % len(repeated) if repeated else 0
            for script in repeated[k:] + repeated[:k]:
                rc, cpu, wall = _run(script, env)
                if rc:
                    failed.add(script.stem)
                    continue
                path = RESULTS / f"{script.stem}.json"
                results = json.loads(path.read_text()) if path.exists() else None
                runs[script.stem].append({"repeat": r, "cpu_s": cpu, "wall_s": wall, "results": results})
        report.finish()
        for name, rs in runs.items():
            if rs:
                repeats_report(name, report, rs)
    if failed:
        print("failed:", ", ".join(sorted(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
