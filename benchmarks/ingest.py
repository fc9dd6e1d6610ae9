"""Datanet ingest benchmark: the real ingest against PostgreSQL's own COPY, in CPU time (issue 16, item 3).

    DATABASE_URL=postgres://.../mf_x nice -n 10 .venv/bin/python benchmarks/ingest.py               # 100k and 1M rows
    DATABASE_URL=postgres://.../mf_x .venv/bin/python benchmarks/ingest.py --rows 200000 --repeats 5 --no-sqlite

Files: synthetic CSVs made by repeating the Financial PhraseBank with variations (each repeat changes a
word and appends a counter, so every row is new and valid, and most rows are near-duplicates of a
PhraseBank sentence: the near-duplicate clustering does real work; ISO-8859-1 like the original).

Each run is its own process (benchmarks/harness.py) on its own fresh database, created from a migrated
template (`<DATABASE_URL's name>_ingest_tpl`; SQLite: a copy of a migrated file), into an empty Datanet:
`contribution_upload` (hash, store, inspect), then the `cpu` task `contribution_ingest_task` in that process
(`.apply()`: the task's code without a broker). Phase 1 (stream, validate, hash, MinHash, stage with COPY)
and phase 2 (staged rows -> `Record`: dedup, conflicts, near-duplicate clusters, indexes, the stake) are
metered apart. Baseline: `COPY ... FROM STDIN (FORMAT csv)` of the same file into a plain two-column table
on a fresh database, interleaved with the ingest runs. On SQLite, the baseline is `executemany` of the
parsed CSV rows into a plain table (SQLite has no COPY).

CPU time counts this process and its PostgreSQL backend (same machine: /proc), so a busy machine slows
the figures' wall time but not their CPU time. Ratios (ingest / COPY) are taken repeat by repeat.
Target: phase 2 at >= 0.5 of COPY's rows per CPU second at 1M rows; peak RSS < 300 MB at any size.
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402

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


# --- one run, in its own process ---------------------------------------------------------------------------

def _fresh_database(case: dict) -> str:
    """A fresh database for this run, from the template; returns its DATABASE_URL."""
    if case["db"] == "sqlite":
        path = Path(case["work"]) / f"run-{os.getpid()}.sqlite3"
        shutil.copyfile(case["template"], path)
        return f"sqlite:///{path}"
    import psycopg

    parts = urlsplit(case["template"])
    name = f"{parts.path.lstrip('/')}_{os.getpid()}"
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{parts.path.lstrip("/")}"')
    return urlunsplit(parts._replace(path="/" + name))


def _drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        Path(url[len("sqlite:///"):]).unlink(missing_ok=True)
        return
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


# Phase-2 choices measured against each other (`--variant`, repeatable): each is the default ingest less one part.
VARIANTS = {
    "default": "the ingest as it is",
    "no-search-index": "without the full-text index (PostgreSQL GIN on to_tsvector; SQLite the FTS5 triggers)",
    "no-clusters": "without the near-duplicate clustering (signatures still computed and stored)",
    "floor": "without the clustering, the full-text index and every secondary index of `Record` (its primary key "
             "only): what moving the rows costs at least, for scale",
}


def _apply_variant(case: dict) -> None:
    variant = case.get("variant", "default")
    if variant in ("no-search-index", "floor"):
        from django.db import connection

        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                cur.execute("DROP INDEX datanets_record_text_fts")
            else:
                for name in ("ai", "ad", "au"):
                    cur.execute(f"DROP TRIGGER datanets_record_fts_{name}")
    if variant in ("no-clusters", "floor"):
        from datanets import neardup

        neardup.cluster_assign = lambda **kwargs: {}
    if variant == "floor":
        from django.db import connection

        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'datanets_record' "
                            "AND indexname <> 'datanets_record_pkey'")
            else:
                cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'datanets_record' "
                            "AND sql IS NOT NULL")
            for (name,) in cur.fetchall():
                cur.execute(f'DROP INDEX "{name}"')


def run_case(case: dict) -> dict:
    url = _fresh_database(case)
    os.environ["DATABASE_URL"] = url
    try:
        kind = case["kind"]
        return _copy(case) if kind == "copy" else _copy_records(case) if kind == "copy_records" else _ingest(case)
    finally:
        from django.db import connections

        connections.close_all()
        _drop_database(url)


def _setup():
    import django

    django.setup()
    from django.db import connection

    pid = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
    return connection, pid


def _ingest(case: dict) -> dict:
    connection, pid = _setup()
    _apply_variant(case)
    from django.core.files import File

    from accounts.services import user_create
    from core.roles import CONTRIBUTOR
    from datanets import services
    from datanets.models import Contribution, Datanet
    from datanets.tasks import contribution_ingest_task

    owner = user_create(username="owner", password=os.urandom(8).hex(), roles=[CONTRIBUTOR])
    datanet = services.datanet_create(owner=owner, name="bench", domain=Datanet.Domain.FINANCE,
                                      labels=["positive", "negative", "neutral"], max_text_length=2000)
    # Each phase metered by wrapping the service's own step; SQL statements timed by a wrapper.
    meters: dict[str, harness.Meter] = {}
    sql: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])

    def metered(name, fn):
        def wrapper(*a, **k):
            meters[name] = harness.Meter(backend_pid=pid)
            with meters[name]:
                return fn(*a, **k)
        return wrapper

    def timed_sql(execute, statement, params, many, context):
        t, b = time.perf_counter(), harness.backend_cpu(pid) if pid else 0.0
        try:
            return execute(statement, params, many, context)
        finally:
            key = " ".join(statement.split())[:90]
            sql[key][0] += 1
            sql[key][1] += time.perf_counter() - t
            sql[key][2] += (harness.backend_cpu(pid) - b) if pid else 0.0

    # What a long-lived worker has loaded already: the chain client (phase 2 reads the Datanet's terms
    # through it; importing web3 takes ~2 s of CPU once per process, not per ingest).
    import web3  # noqa: F401

    services._stage = metered("phase1", services._stage)
    services._commit_records = metered("phase2", services._commit_records)
    rss_before = harness.peak_rss_mb()
    path = case["path"]
    with harness.Meter(backend_pid=pid) as upload, open(path, "rb") as fh:
        result = services.contribution_upload(datanet=datanet, contributor=owner, file=File(fh, name=Path(path).name),
                                              file_name=Path(path).name, auto_start=True, inline=False)
    with connection.execute_wrapper(timed_sql), harness.Meter(backend_pid=pid) as ingest:
        contribution_ingest_task.apply(args=[result.contribution.id]).get()
    c = Contribution.objects.get(pk=result.contribution.pk)
    assert c.ingest_state == "done", c.ingest_errors[:3]
    p1, p2 = meters["phase1"], meters["phase2"]
    top = sorted(sql.items(), key=lambda kv: -kv[1][1])[:8]
    peak = harness.peak_rss_mb()  # before the dump below, which is no part of the ingest
    if case.get("dump") and not Path(case["dump"]).exists():
        _records_dump(connection, Path(case["dump"]))
    return {"rows": c.rows_total, "records": c.record_count, "duplicates": c.duplicates_dropped,
            "near_dups": c.records.filter(near_dup_of__isnull=False).count(),
            "upload_wall_s": upload.wall_s, "upload_cpu_s": upload.total_cpu_s,
            "ingest_wall_s": ingest.wall_s, "ingest_cpu_s": ingest.total_cpu_s,
            "phase1_wall_s": p1.wall_s, "phase1_cpu_s": p1.total_cpu_s, "phase1_backend_cpu_s": p1.backend_cpu_s,
            "phase2_wall_s": p2.wall_s, "phase2_cpu_s": p2.total_cpu_s, "phase2_backend_cpu_s": p2.backend_cpu_s,
            "rss_before_mb": rss_before, "peak_rss_mb": peak,
            "sql": [[k, n, round(s, 3), round(b, 3)] for k, (n, s, b) in top]}


RECORD_COLUMNS = ("id", "datanet_id", "contribution_id", "contributor_id", "text", "label", "sha256", "text_sha256",
                  "row_number", "is_conflict", "minhash", "near_dup_of_id", "near_dup_similarity")


def _records_dump(connection, out: Path) -> None:
    """The ingest's final Record rows in COPY's text format (the full-row baseline loads them)."""
    tmp = out.with_suffix(".part")
    cols = ", ".join(RECORD_COLUMNS)
    with connection.cursor() as cur, open(tmp, "wb") as fh:
        if connection.vendor == "postgresql":
            with cur.cursor.copy(f"COPY (SELECT {cols} FROM datanets_record ORDER BY id) TO STDOUT") as cp:
                for block in cp:
                    fh.write(block)
        else:
            from datanets.services import _COPY_ESCAPES

            def field(v):
                if v is None:
                    return "\\N"
                if isinstance(v, (bytes, memoryview)):
                    return "\\\\x" + bytes(v).hex()
                if isinstance(v, bool):
                    return "t" if v else "f"
                return str(v).translate(_COPY_ESCAPES) if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)
            cur.execute(f"SELECT {cols} FROM datanets_record ORDER BY id")  # noqa: S608
            while rows := cur.fetchmany(10_000):
                fh.write("".join("\t".join(field(v) for v in r) + "\n" for r in rows).encode())
    tmp.rename(out)


_UNESCAPE = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}


def _copy_fields(line: str) -> tuple:
    """One line of COPY's text format back to SQLite values (the columns of RECORD_COLUMNS)."""
    import re

    out = []
    for k, v in enumerate(line.rstrip("\n").split("\t")):
        if v == "\\N":
            out.append(None)
        elif k == 10:
            out.append(bytes.fromhex(v[3:]))
        elif k == 9:
            out.append(v == "t")
        else:
            out.append(re.sub(r"\\[\\tnr]", lambda m: _UNESCAPE[m.group()], v) if "\\" in v else v)
    return tuple(out)


def _copy_records(case: dict) -> dict:
    """The honest baseline: the ingest's own final Record rows (every column) loaded with COPY into
    `datanets_record` itself, on a fresh database holding the same user, Datanet and contribution (its
    primary key, secondary indexes, full-text index and foreign key all maintained). SQLite: executemany
    in one transaction (its FTS5 triggers fire)."""
    connection, pid = _setup()
    from django.core.files import File

    from accounts.services import user_create
    from core.roles import CONTRIBUTOR
    from datanets import services
    from datanets.models import Datanet

    owner = user_create(username="owner", password=os.urandom(8).hex(), roles=[CONTRIBUTOR])
    datanet = services.datanet_create(owner=owner, name="bench", domain=Datanet.Domain.FINANCE,
                                      labels=["positive", "negative", "neutral"], max_text_length=2000)
    with open(case["path"], "rb") as fh:
        services.contribution_upload(datanet=datanet, contributor=owner, file=File(fh, name=Path(case["path"]).name),
                                     file_name=Path(case["path"]).name, auto_start=False, inline=False)
    cols = ", ".join(RECORD_COLUMNS)
    dump = Path(case["dump"])
    if connection.vendor == "postgresql":
        with harness.Meter(backend_pid=pid) as m, connection.cursor() as cur, open(dump, "rb") as fh:
            with cur.cursor.copy(f"COPY datanets_record ({cols}) FROM STDIN") as cp:
                while chunk := fh.read(1 << 20):
                    cp.write(chunk)
    else:
        db = sqlite3.connect(connection.settings_dict["NAME"])
        with harness.Meter() as m, open(dump, encoding="utf-8", newline="\n") as fh:
            with db:
                db.executemany(f"INSERT INTO datanets_record ({cols}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})",
                               map(_copy_fields, fh))
        db.close()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM datanets_record")
        copied = cur.fetchone()[0]
    return {"rows": copied, "copy_wall_s": m.wall_s, "copy_cpu_s": m.total_cpu_s, "copy_backend_cpu_s": m.backend_cpu_s,
            "peak_rss_mb": harness.peak_rss_mb()}


def _copy(case: dict) -> dict:
    connection, pid = _setup()
    path = case["path"]
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE bench_copy (label text, text text)")
    if connection.vendor == "postgresql":
        with harness.Meter(backend_pid=pid) as m, connection.cursor() as cur, open(path, "rb") as fh:
            with cur.cursor.copy("COPY bench_copy (label, text) FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING 'LATIN1')") as cp:
                while chunk := fh.read(1 << 20):
                    cp.write(chunk)
    else:  # the closest SQLite has: parsed rows, executemany in one transaction
        db = sqlite3.connect(connection.settings_dict["NAME"])
        with harness.Meter() as m, open(path, encoding="iso-8859-1", newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            with db:
                db.executemany("INSERT INTO bench_copy (label, text) VALUES (?, ?)", reader)
        db.close()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_copy")
        copied = cur.fetchone()[0]
    return {"rows": copied, "copy_wall_s": m.wall_s, "copy_cpu_s": m.total_cpu_s, "copy_backend_cpu_s": m.backend_cpu_s}


# --- driver -------------------------------------------------------------------------------------------------

def _templates(base_url: str, work: Path, sqlite: bool) -> dict[str, str]:
    """Migrated template databases: PostgreSQL `<name>_ingest_tpl` and an SQLite file."""
    import psycopg

    parts = urlsplit(base_url)
    if not parts.scheme.startswith("postgres"):
        sys.exit("This benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    name = (parts.path.lstrip("/") or "postgres") + "_ingest_tpl"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    out = {"postgres": urlunsplit(parts._replace(path="/" + name))}
    base_env = {**os.environ, "VAR_DIR": str(work / "var"), "MEDIA_ROOT": str(work / "media"), "LOG_LEVEL": "WARNING"}
    subprocess_run([sys.executable, "manage.py", "migrate", "-v0"], {**base_env, "DATABASE_URL": out["postgres"]})
    if sqlite:
        out["sqlite"] = str(work / "template.sqlite3")
        subprocess_run([sys.executable, "manage.py", "migrate", "-v0"], {**base_env, "DATABASE_URL": f"sqlite:///{out['sqlite']}"})
    return out


def subprocess_run(cmd: list[str], env: dict) -> None:
    import subprocess

    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def main() -> int:
    if harness.is_child():
        return harness.child_main(run_case)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, action="append", help="synthetic CSV sizes (repeatable)")
    ap.add_argument("--repeats", type=int, default=harness.MIN_REPEATS)
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--sqlite-only", action="store_true", help="SQLite only (PostgreSQL still holds the template)")
    ap.add_argument("--variant", action="append", choices=list(VARIANTS), help="phase-2 variants (default: default)")
    ap.add_argument("--name", default=NAME, help="results file name")
    ap.add_argument("--merge", nargs="+", metavar="NAME",
                    help="no run: one table (--name) from finished results files (e.g. PostgreSQL and SQLite run "
                         "side by side as two invocations)")
    ap.add_argument("--note", default="", help="with --merge: a line for the header (e.g. which commit each part ran)")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.name, args.note)
        return 0
    report = harness.Report(NAME, "ingest: the Datanet ingest against COPY", repeats=args.repeats)
    work = Path(tempfile.mkdtemp(prefix="mf-ingest-bench-"))
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mf_bench")
    templates: dict[str, str] = {}
    env = {"DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": str(work / "var"), "MEDIA_ROOT": str(work / "media"),
           "CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "WARNING"}
    cases, records_cases = [], []
    try:
        templates.update(_templates(base, work, sqlite=not args.no_sqlite))
        for n in args.rows or DEFAULT_ROWS:
            path = work / f"phrasebank_x{n}.csv"
            synthetic_csv(path, n)
            for db, template in templates.items():
                if args.sqlite_only and db != "sqlite":
                    continue
                common = {"rows": n, "path": str(path), "db": db, "template": template, "work": str(work)}
                dump = {"dump": str(work / f"records_{n}_{db}.tsv")}
                cases += [{"kind": "ingest", "variant": v, **common, **({"dump": dump["dump"]} if v == "default" else {})}
                          for v in args.variant or ["default"]]
                cases.append({"kind": "copy", **common})
                if "default" in (args.variant or ["default"]):
                    records_cases.append({"kind": "copy_records", **common, **dump})

        def progress(case, res):
            key = "ingest_wall_s" if case["kind"] == "ingest" else "copy_wall_s"
            print(f"  {case['db']} {case['kind']} {case.get('variant', '')} {case['rows']:,} rows: {res[key]:.1f} s wall, "
                  f"{res.get('ingest_cpu_s', res.get('copy_cpu_s')):.1f} s CPU (repeat {res['repeat']})", flush=True)

        runs = harness.run_interleaved(__file__, cases, repeats=args.repeats, env=env, cwd=ROOT, on_result=progress)
        # The full-row baseline loads the records a default ingest stored (dumped by its first run), so it
        # runs after them, its repeats interleaved among themselves.
        runs += harness.run_interleaved(__file__, records_cases, repeats=args.repeats, env=env, cwd=ROOT,
                                        on_result=progress)
    finally:
        import psycopg

        if templates:
            parts = urlsplit(templates["postgres"])
            with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    report.finish()
    write_report(report, runs, args.name)
    return 0


def merge(names: list[str], name: str, note: str = "") -> None:
    """One results file from several runs' JSON (each of its own invocation): runs rebuilt, table redrawn,
    every part's conditions (start, seconds, load) in the header."""
    import json

    parts = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    runs: list[harness.Run] = []

    def add(case: dict, results: list[dict]) -> None:  # the same configuration in two parts: its repeats
        run = next((r for r in runs if r.case == case), None)
        if run is None:
            runs.append(harness.Run(case=case, results=[]))
            run = runs[-1]
        run.results.extend(dict(res, repeat=len(run.results)) for res in results)

    for part in parts:
        baselines = set()  # each case of a part carries its (db, rows)'s baselines: taken once a part
        for c in part["cases"]:
            key = {"db": c["db"], "rows": c["rows"]}
            add({**key, "kind": "ingest", "variant": c["variant"]}, c["runs"])
            if (c["db"], c["rows"]) not in baselines:
                baselines.add((c["db"], c["rows"]))
                add({**key, "kind": "copy"}, c["copy_runs"])
                if c.get("copy_records_runs"):
                    add({**key, "kind": "copy_records"}, c["copy_records_runs"])
    repeats = max(len(r.results) for r in runs)
    report = harness.Report(NAME, "ingest: the Datanet ingest against COPY", repeats=repeats)
    conditions = "; ".join(
        f"{n}: run {p['started']}, {p['seconds']:.0f} s, load average at start {'/'.join(f'{x:.1f}' for x in p['load_start'])}, "
        f"at end {'/'.join(f'{x:.1f}' for x in p['load_end'])}" for n, p in zip(names, parts, strict=True))
    header = [f"# {report.title}", "", f"Machine: {parts[0]['machine']}. Merged from {len(parts)} invocations that ran "
              f"side by side ({conditions}).", *([note] if note else []), *report.header()[3:]]
    meta = {"merged_from": {n: {k: v for k, v in p.items() if k != "cases"} for n, p in zip(names, parts, strict=True)},
            "repeats": report.repeats, "noisy_spread": harness.NOISY_SPREAD, "note": note}
    write_report(report, runs, name, header=header, meta=meta)


def write_report(report: harness.Report, runs: list[harness.Run], name: str, header: list[str] | None = None,
                 meta: dict | None = None) -> None:
    by_key = {(r.case["db"], r.case["rows"], r.case["kind"], r.case.get("variant", "")): r for r in runs}
    rows, data = [], []
    for (db, n, kind, variant), run in by_key.items():
        if kind != "ingest":
            continue
        copy = by_key[(db, n, "copy", "")]
        rows_n = run.results[0]["rows"]

        def rate(key, r=run, n_rows=rows_n):
            return harness.Stat.of([n_rows / v for v in r.values(key)])

        p2_ratio_cpu = harness.ratio_stat([rows_n / v for v in run.values("phase2_cpu_s")],
                                          [rows_n / v for v in copy.values("copy_cpu_s")])
        all_ratio_cpu = harness.ratio_stat([rows_n / v for v in run.values("ingest_cpu_s")],
                                           [rows_n / v for v in copy.values("copy_cpu_s")])
        p2_ratio_wall = harness.ratio_stat([rows_n / v for v in run.values("phase2_wall_s")],
                                           [rows_n / v for v in copy.values("copy_wall_s")])
        copy_rate = harness.Stat.of([rows_n / v for v in copy.values("copy_cpu_s")])
        # The full-row baseline: COPY of the same final Record rows into Record with its indexes.
        full = by_key.get((db, n, "copy_records", ""))
        if full is not None:
            full_rate = harness.Stat.of([r["rows"] / r["copy_cpu_s"] for r in full.results])
            p2_full_cpu = harness.ratio_stat([rows_n / v for v in run.values("phase2_cpu_s")],
                                             [r["rows"] / r["copy_cpu_s"] for r in full.results])
            p2_full_wall = harness.ratio_stat([rows_n / v for v in run.values("phase2_wall_s")],
                                              [r["rows"] / r["copy_wall_s"] for r in full.results])
            full_cells = [full_rate.cell("{:,.0f}"), p2_full_cpu.cell(), p2_full_wall.cell()]
        else:
            full_rate = p2_full_cpu = p2_full_wall = None
            full_cells = ["n/a"] * 3
        rss = run.stat("peak_rss_mb")
        rows.append([db, variant, f"{n:,}", f"{run.results[0]['records']:,} ({run.results[0]['near_dups']:,} near-dup)",
                     rate("phase1_cpu_s").cell("{:,.0f}"), rate("phase2_cpu_s").cell("{:,.0f}"),
                     rate("ingest_cpu_s").cell("{:,.0f}"), copy_rate.cell("{:,.0f}"),
                     p2_ratio_cpu.cell(), all_ratio_cpu.cell(), p2_ratio_wall.cell(), *full_cells,
                     run.stat("phase2_wall_s").cell(), run.stat("ingest_wall_s").cell(),
                     f"{rss.max:.0f}"])
        median_run = sorted(run.results, key=lambda r: r["phase2_cpu_s"])[len(run.results) // 2]
        data.append({"db": db, "variant": variant, "rows": n, "runs": run.results, "copy_runs": copy.results,
                     "phase2_over_copy_cpu": p2_ratio_cpu.as_dict(), "ingest_over_copy_cpu": all_ratio_cpu.as_dict(),
                     "phase2_over_copy_wall": p2_ratio_wall.as_dict(), "peak_rss_mb": rss.as_dict(),
                     "copy_records_runs": full.results if full else None,
                     "phase2_over_copy_records_cpu": p2_full_cpu.as_dict() if p2_full_cpu else None,
                     "phase2_over_copy_records_wall": p2_full_wall.as_dict() if p2_full_wall else None,
                     "median_run_sql": median_run.get("sql")})
    head = ["db", "variant", "rows", "records", "phase 1 rows/CPU s", "phase 2 rows/CPU s", "ingest rows/CPU s",
            "COPY rows/CPU s", "phase 2 / COPY (CPU)", "ingest / COPY (CPU)", "phase 2 / COPY (wall)",
            "COPY Record rows/CPU s", "phase 2 / COPY Record (CPU)", "phase 2 / COPY Record (wall)",
            "phase 2 wall s", "ingest wall s", "peak RSS MB (max)"]
    sql_lines = []
    for d in data:
        sql_lines += [f"Slowest statements of the median {d['db']} {d['variant']} {d['rows']:,}-row ingest "
                      f"(count, wall s, PostgreSQL backend CPU s):", ""]
        sql_lines += [f"- `{s}`: {n}, {t:.2f}, {b:.2f}" for s, n, t, *rest in d["median_run_sql"] or [] for b in [rest[0] if rest else 0.0]]
        sql_lines.append("")
    md = "\n".join([*(header or report.header()), *harness.table(head, rows), "",
                    "CPU = this process + its PostgreSQL backend (user + system). Phase 1 streams, decodes, validates, "
                    "hashes (sha256 of text+label and of text), computes the MinHash signatures and stages rows with COPY; "
                    "phase 2 moves the new rows into `Record` (exact dedup in the file and against the Datanet, "
                    "conflicts, near-duplicate clusters, indexes, the stake) in one transaction. COPY = PostgreSQL's "
                    "COPY of the same CSV into a plain two-column table (SQLite: executemany of the parsed rows), "
                    "fresh database each run, interleaved. COPY Record = the honest second baseline: COPY of the "
                    "same final Record rows (every column, dumped from the default ingest) into `datanets_record` "
                    "itself on a fresh database with the same user, Datanet and contribution, so Record's primary "
                    "key, secondary indexes, full-text index and foreign key are all maintained (SQLite: executemany "
                    "of the parsed rows in one transaction, its FTS5 triggers firing); its repeats run after the "
                    "ingest runs, interleaved among themselves. Ratios are rows/s ours over rows/s COPY, repeat by repeat. "
                    "Variants: " + "; ".join(f"*{k}*: {v}" for k, v in VARIANTS.items()) + ".",
                    "", *sql_lines])
    print("\n" + md)
    harness.write(RESULTS, name, md, {**(meta or report.meta()), "cases": data})


if __name__ == "__main__":
    sys.exit(main())
