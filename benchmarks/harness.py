"""The benchmarks' harness: figures a shared, busy machine cannot fool (issue 16, item 1).

On a 2-core machine shared with other work, one configuration's wall time varies up to 4x between
runs, so a single run per configuration compares the machine's load, not the code. Here:

- every run of a configuration is its own process (no warm caches, allocator or JIT state carried over);
- configurations are interleaved: repeat r runs each configuration once, in an order rotated by r, so a
  burst of load falls on all of them rather than on one;
- at least 5 repeats (`MIN_REPEATS`); each figure is reported as its median, its min and its spread
  ((max - min) / median); a figure whose spread exceeds `NOISY_SPREAD` is flagged in the table (`noisy`);
- compute-bound work is measured in CPU time (user + system, `resource.getrusage`) of the process that
  does it, with one torch/BLAS thread (`OMP_NUM_THREADS=1` and `torch.set_num_threads(1)` in the child),
  as the primary figure: it is what the code costs, whatever else runs. Wall time is reported beside it.
  Work done by a PostgreSQL backend on this machine is counted with `backend_cpu()` (its /proc stat);
- the load average at the start and at the end of the run goes into the table's header.

A benchmark script uses it in two halves. The parent calls `run_interleaved(script, cases, repeats)`:
it starts `python script --harness-case '<json>'` for each case and repeat and collects the dict each
child printed. The child's `main()` calls `child_main(run_case)` when it sees `--harness-case`:
`run_case(case) -> dict` does the work and returns figures, usually measured with `Meter`.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIN_REPEATS = 5
NOISY_SPREAD = 0.10
CASE_FLAG = "--harness-case"
RESULT_PREFIX = "HARNESS-RESULT "
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "TOKENIZERS_PARALLELISM": "false"}
_TICK = os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system), all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program, in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child started by a large
    parent (one that wrote a 1M-row index first) would report the parent's size as its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a local process has used so far, from /proc (a PostgreSQL backend of
    this machine: `SELECT pg_backend_pid()`). 0.0 where /proc cannot tell (another machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)


@dataclass
class Meter:
    """CPU (this process, plus an optional local PostgreSQL backend) and wall time of a block.

        with Meter(backend_pid=pid) as m: work()
        m.cpu_s, m.backend_cpu_s, m.total_cpu_s, m.wall_s
    """

    backend_pid: int | None = None
    cpu_s: float = 0.0
    backend_cpu_s: float = 0.0
    wall_s: float = 0.0
    _start: tuple = field(default=(), repr=False)

    def __enter__(self) -> Meter:
        self._start = (cpu_seconds(), backend_cpu(self.backend_pid) if self.backend_pid else 0.0, time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        cpu, backend, wall = self._start
        self.cpu_s = cpu_seconds() - cpu
        self.backend_cpu_s = (backend_cpu(self.backend_pid) - backend) if self.backend_pid else 0.0
        self.wall_s = time.perf_counter() - wall

    @property
    def total_cpu_s(self) -> float:
        return self.cpu_s + self.backend_cpu_s


def single_thread() -> None:
    """One compute thread in this process (torch reads OMP_NUM_THREADS too late once imported)."""
    for k, v in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(k, v)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def child_main(run_case: Callable[[dict], dict]) -> int:
    """The child half: run the case given after --harness-case and print its figures for the parent."""
    single_thread()
    case = json.loads(sys.argv[sys.argv.index(CASE_FLAG) + 1])
    result = run_case(case)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def is_child() -> bool:
    return CASE_FLAG in sys.argv


@dataclass
class Run:
    """All the repeats of one case: the case, each child's figures, and each child's own rusage."""

    case: dict
    results: list[dict] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.results if r.get(key) is not None]

    def stat(self, key: str) -> Stat:
        return Stat.of(self.values(key))


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.10 means the repeats lie within 10% of the median's size."""
        return (self.max - self.min) / abs(self.median) if self.median else 0.0

    @property
    def noisy(self) -> bool:
        return self.n < 2 or self.spread > NOISY_SPREAD

    def cell(self, fmt: str = "{:,.2f}") -> str:
        """'median (min x, ±s%)', with a flag when the repeats spread more than NOISY_SPREAD."""
        if not self.n:
            return "n/a"
        flag = " **noisy**" if self.noisy else ""
        return f"{fmt.format(self.median)} (min {fmt.format(self.min)}, spread {self.spread:.0%}){flag}"

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n, "spread": self.spread,
                "noisy": self.noisy}


def ratio_stat(num: Sequence[float], den: Sequence[float]) -> Stat:
    """A ratio measured pairwise: repeat r's numerator over repeat r's denominator (the same conditions)."""
    return Stat.of([a / b for a, b in zip(num, den, strict=False) if b])


def run_interleaved(script: str | Path, cases: Sequence[dict], *, repeats: int = MIN_REPEATS,
                    env: dict | None = None, cwd: str | Path | None = None, timeout: float | None = None,
                    on_result: Callable[[dict, dict], None] | None = None) -> list[Run]:
    """Run every case `repeats` times, each run a fresh `python script --harness-case <case>` process,
    interleaved (repeat r runs the cases rotated by r). The whole child's CPU time (its rusage) is added
    to its figures as `child_cpu_s`, its wall time as `child_wall_s`, its peak RSS as `peak_rss_mb`.
    A child that fails stops the run with its output."""
    child_env = {**os.environ, **SINGLE_THREAD_ENV, **(env or {})}
    runs = [Run(case=dict(c)) for c in cases]
    for r in range(repeats):
        k = r % len(runs) if runs else 0
        for run in runs[k:] + runs[:k]:
            res = _one(script, run.case, child_env, cwd, timeout)
            res["repeat"] = r
            run.results.append(res)
            if on_result:
                on_result(run.case, res)
    return runs


def _one(script, case: dict, env: dict, cwd, timeout) -> dict:
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, str(script), CASE_FLAG, json.dumps(case)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"case {case} ran past {timeout}s:\n{err[-4000:]}") from None
    # The children run one at a time, so the growth of RUSAGE_CHILDREN across this one is its CPU time
    # (and that of any process it waited for).
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"case {case} failed with exit {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}")
    line = next((x for x in out.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise RuntimeError(f"case {case} printed no result:\n{out[-2000:]}\n{err[-4000:]}")
    res = json.loads(line[len(RESULT_PREFIX):])
    res["child_wall_s"] = time.perf_counter() - started
    res["child_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


@dataclass
class Report:
    """A results table with the run's conditions in its header: machine, load at start and end, repeats."""

    name: str
    title: str = ""
    started: float = field(default_factory=time.time)
    load_start: tuple = field(default_factory=load_average)
    load_end: tuple = ()
    repeats: int = MIN_REPEATS

    def finish(self) -> None:
        self.load_end = load_average()

    def header(self) -> list[str]:
        import platform

        if not self.load_end:
            self.finish()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started))
        ls, le = self.load_start, self.load_end
        return [f"# {self.title or self.name}", "",
                f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; run {when}, "
                f"{time.time() - self.started:.0f} s. Load average (1/5/15 min) at start {ls[0]:.1f}/{ls[1]:.1f}/{ls[2]:.1f}, "
                f"at end {le[0]:.1f}/{le[1]:.1f}/{le[2]:.1f}.",
                f"Each configuration ran {self.repeats} times, each run in its own process, configurations interleaved "
                f"(benchmarks/harness.py). Cells: median (min, spread = (max - min) / median); **noisy** marks a "
                f"spread over {NOISY_SPREAD:.0%}. CPU time is the primary figure (one compute thread), wall time beside it.",
                ""]

    def meta(self) -> dict:
        import platform

        if not self.load_end:
            self.finish()
        return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "seconds": round(time.time() - self.started, 1), "load_start": self.load_start,
                "load_end": self.load_end, "repeats": self.repeats, "noisy_spread": NOISY_SPREAD}


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def write(results_dir: Path, name: str, md: str, data: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.md").write_text(md.rstrip() + "\n")
    (results_dir / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
