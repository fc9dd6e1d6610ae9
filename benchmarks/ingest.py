"""Datanet ingest benchmark: rows/s and peak memory of the real ingest task, against PostgreSQL's own COPY.

    DATABASE_URL=postgres://... .venv/bin/python benchmarks/ingest.py            # PhraseBank, 100k, 1M rows
    DATABASE_URL=postgres://... .venv/bin/python benchmarks/ingest.py --rows 100000 --rows 300000

Files: the Financial PhraseBank as it is (4,846 rows, ISO-8859-1), and synthetic CSVs made by repeating the
PhraseBank with variations (each repeat changes a word and appends a counter, so every row is new and
valid; ISO-8859-1 like the original). Each case runs in a fresh process on a scratch database
(`<DATABASE_URL's name>_ingest_bench`, migrated, dropped afterwards), into an empty Datanet:
`contribution_upload` (hash, store, inspect) then the `cpu` task `contribution_ingest_task` run in that
process (`.apply()`: the task's code without a broker, so the process's own peak RSS is the ingest's).
Baseline: PostgreSQL's `COPY ... FROM STDIN (FORMAT csv)` of the same file into a plain two-column
table on the same database, same run. The ratio is ingest rows/s / COPY rows/s.
Target (issue 3): ratio >= 0.5 and peak RSS under 300 MB whatever the file size.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NAME = "ingest"
DEFAULT_ROWS = (100_000, 1_000_000)
SWAPS = [("company", "firm"), ("profit", "earnings"), ("rose", "climbed"), ("said", "stated"), ("sales", "revenue"),
         ("Finnish", "Nordic"), ("quarter", "period"), ("increased", "grew"), ("net", "total"), ("EUR", "euro")]


def data_dir() -> Path:
    return Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))


def phrasebank_rows() -> list[tuple[str, str]]:
    with open(data_dir() / "financial_phrasebank.csv", encoding="iso-8859-1", newline="") as fh:
        return [(r["result"], r["content"]) for r in csv.DictReader(fh)]


def synthetic_csv(path: Path, n_rows: int) -> None:
    """n_rows made from the PhraseBank: repeat k changes one word (when it has it) and adds '(k.i)'."""
    rows = phrasebank_rows()
    rng = random.Random(0)
    with open(path, "w", encoding="iso-8859-1", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["result", "content"])
        for i in range(n_rows):
            k, j = divmod(i, len(rows))
            label, text = rows[j]
            if k:
                a, b = SWAPS[rng.randrange(len(SWAPS))]
                text = f"{text.replace(a, b, 1)} ({k}.{j})"
            w.writerow([label, text])


# --- one case, in its own process -----------------------------------------------------------------------

def run_case(path: str) -> dict:
    """Runs in a child process with DJANGO_SETTINGS_MODULE and DATABASE_URL set to the scratch database."""
    import django

    django.setup()
    from django.core.files import File
    from django.db import connection

    from accounts.services import user_create
    from core.roles import CONTRIBUTOR
    from datanets import services
    from datanets.models import Datanet
    from datanets.tasks import contribution_ingest_task

    tag = os.urandom(4).hex()
    owner = user_create(username=f"owner-{tag}", password=os.urandom(8).hex(), roles=[CONTRIBUTOR])
    datanet = services.datanet_create(owner=owner, name=f"bench {tag}", domain=Datanet.Domain.FINANCE,
                                      labels=["positive", "negative", "neutral"], max_text_length=2000)
    # Phase 1 (stream, validate, hash, stage) timed by wrapping the service's own step; phase 2 is the rest.
    phase1 = {"s": 0.0}
    stage = services._stage

    def timed_stage(*a, **k):
        t = time.perf_counter()
        try:
            return stage(*a, **k)
        finally:
            phase1["s"] += time.perf_counter() - t

    services._stage = timed_stage
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        result = services.contribution_upload(datanet=datanet, contributor=owner, file=File(fh, name=Path(path).name),
                                              file_name=Path(path).name, auto_start=True, inline=False)
    t1 = time.perf_counter()
    contribution_ingest_task.apply(args=[result.contribution.id]).get()
    t2 = time.perf_counter()
    c = result.contribution
    c.refresh_from_db()
    assert c.ingest_state == "done", c.ingest_errors[:3]
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Baseline on the same connection: COPY the same file into a plain table.
    with connection.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_copy")
        cur.execute("CREATE TABLE bench_copy (label text, text text)")
    t3 = time.perf_counter()
    with connection.cursor() as cur, open(path, "rb") as fh:
        with cur.cursor.copy("COPY bench_copy (label, text) FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING 'LATIN1')") as cp:
            while chunk := fh.read(1 << 20):
                cp.write(chunk)
    t4 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_copy")
        copied = cur.fetchone()[0]
        cur.execute("DROP TABLE bench_copy")
    return {"rows": c.rows_total, "records": c.record_count, "duplicates": c.duplicates_dropped,
            "encoding": c.encoding, "upload_s": t1 - t0, "ingest_s": t2 - t1, "phase1_s": phase1["s"],
            "phase2_s": t2 - t1 - phase1["s"], "copy_s": t4 - t3, "copy_rows": copied,
            "rss_before_mb": rss_before, "rss_peak_mb": rss_peak}


# --- driver -----------------------------------------------------------------------------------------------

def scratch_url(base: str) -> tuple[str, str, str]:
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        sys.exit("This benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    name = (parts.path.lstrip("/") or "postgres") + "_ingest_bench"
    admin = urlunsplit(parts._replace(path="/postgres"))
    return urlunsplit(parts._replace(path="/" + name)), admin, name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, action="append", help="synthetic CSV sizes (repeatable)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)))
        return 0

    import psycopg

    url, admin, dbname = scratch_url(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mf_datanets"))
    work = Path(tempfile.mkdtemp(prefix="mf-ingest-bench-"))
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": str(work / "var"),
           "MEDIA_ROOT": str(work / "media"), "CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "WARNING"}
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        cases = [("financial_phrasebank.csv", data_dir() / "financial_phrasebank.csv")]
        for n in args.rows or DEFAULT_ROWS:
            path = work / f"phrasebank_x{n}.csv"
            synthetic_csv(path, n)
            cases.append((f"synthetic {n:,} rows", path))
        rows = []
        for label, path in cases:
            out = subprocess.run([sys.executable, __file__, "--case", str(path)], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True)
            res = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
            res["file"] = label
            res["file_mb"] = path.stat().st_size / 2**20
            res["ingest_rows_s"] = res["rows"] / res["ingest_s"]
            res["total_rows_s"] = res["rows"] / (res["upload_s"] + res["ingest_s"])
            res["copy_rows_s"] = res["copy_rows"] / res["copy_s"]
            res["ratio"] = res["ingest_rows_s"] / res["copy_rows_s"]
            res["rss_growth_mb"] = res["rss_peak_mb"] - res["rss_before_mb"]
            rows.append(res)
            print(f"{label}: {res['ingest_rows_s']:,.0f} rows/s, peak RSS {res['rss_peak_mb']:.0f} MB", flush=True)
            if path.parent == work:
                path.unlink()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    report(rows)
    return 0


def report(rows: list[dict]) -> None:
    head = ("| file | MB | rows | records | upload s | ingest s (phase 1 + 2) | ingest rows/s | upload+ingest rows/s "
            "| COPY rows/s | ingest / COPY | RSS before MB | peak RSS MB | ingest's growth MB |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['file']} | {r['file_mb']:.1f} | {r['rows']:,} | {r['records']:,} | {r['upload_s']:.2f} | "
                     f"{r['ingest_s']:.2f} ({r['phase1_s']:.2f} + {r['phase2_s']:.2f}) | {r['ingest_rows_s']:,.0f} | {r['total_rows_s']:,.0f} | {r['copy_rows_s']:,.0f} | "
                     f"{r['ratio']:.2f} | {r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['rss_growth_mb']:.0f} |")
    # The figures depend on what else the machine runs: say how busy it was.
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
               f"load average {os.getloadavg()[1]:.1f} at the end")
    md = "\n".join([f"# {NAME}", "", f"Machine: {machine}; run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
                    *lines, "",
                    "ingest = the `contribution_ingest_task`: phase 1 streams, decodes, validates, hashes and stages "
                    "rows with COPY into a temporary table; phase 2 moves new rows into `Record` (dedup, conflicts, "
                    "5 indexes, the contribution foreign key checked at commit) in one transaction. upload = sha256, store, detect format/encoding/columns. "
                    "COPY = PostgreSQL's COPY of the same CSV into a plain table, same database and run. "
                    "Peak RSS is the whole case process; *RSS before* is what Django and the imports hold before the "
                    "upload (every app's admin and models load at `django.setup()`), *growth* is what the upload "
                    "and ingest add."])
    print("\n" + md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.md").write_text(md + "\n")
    (RESULTS / f"{NAME}.json").write_text(json.dumps({"machine": machine, "cases": rows}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
