"""What one index of `Record` costs a bulk ingest: 100,000 records inserted set-based (as the ingest's phase 2
does) into a copy of `datanets_record` with the product's indexes, the contribution index varied.

    DATABASE_URL=postgres://.../mf_x nice -n 10 .venv/bin/python benchmarks/record_index_cost.py

Runs against the PostgreSQL Datanet that benchmarks/browse.py builds (`<DATABASE_URL's name>_browse_<records>`,
made first with `benchmarks/browse.py --db postgres`): its first `--rows` records are the rows inserted. Each
run (benchmarks/harness.py: own process, variants interleaved, 5 repeats) creates a table like
`datanets_record` (its columns, defaults, primary key, the full-text GIN index, the hash and contributor
indexes, the conflicts index; no foreign key), adds the variant's contribution index, and times one
`INSERT ... SELECT` of the rows under one contribution (one ingest), in CPU time of its PostgreSQL backend.
Variants: *contribution_id* (the foreign key's index until migration 0013), *contribution_id, id* (its
replacement, which serves status pages in id order), *none* (neither: what the others cost over it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NAME = "record_index_cost"
STAGE = "mf_index_cost_stage"
COLS = "datanet_id, contribution_id, contributor_id, text, label, sha256, text_sha256, row_number, is_conflict, minhash"
VARIANTS = {"contribution_id": "(contribution_id)", "contribution_id, id": "(contribution_id, id)", "none": None}


def run_case(case: dict) -> dict:
    import psycopg

    table = f"mf_index_cost_{os.getpid()}"
    with psycopg.connect(case["url"], autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute(
            f"CREATE TABLE {table} (LIKE datanets_record INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS)"
        )
        conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
        try:
            for sql in case["indexes"]:
                conn.execute(sql.replace("datanets_record", table))
            if case["index"]:
                conn.execute(f"CREATE INDEX ON {table} {case['index']}")
            cols = COLS.replace("contribution_id", "%s AS contribution_id")
            with harness.Meter(backend_pid=pid) as m:
                conn.execute(f"INSERT INTO {table} ({COLS}) SELECT {cols} FROM {STAGE} ORDER BY row_id", [10**9])
            size = conn.execute(
                "SELECT COALESCE(SUM(pg_relation_size(indexrelid)), 0) FROM pg_index WHERE indrelid = %s::regclass",
                [table],
            ).fetchone()[0]
            idx = conn.execute(
                "SELECT COALESCE(SUM(pg_relation_size(i.indexrelid)), 0) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
                "AND c.relname LIKE %s",
                [table, f"{table}_contribution_id%"],
            ).fetchone()[0]
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return {
        "insert_cpu_s": m.backend_cpu_s,
        "insert_wall_s": m.wall_s,
        "index_mb": float(idx) / 2**20,
        "all_indexes_mb": float(size) / 2**20,
    }


def main() -> int:
    if harness.is_child():
        return harness.child_main(run_case)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--records", type=int, default=1_000_000, help="which browse benchmark Datanet to read rows from")
    ap.add_argument("--repeats", type=int, default=harness.MIN_REPEATS)
    args = ap.parse_args()
    import psycopg

    parts = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mf_bench"))
    url = urlunsplit(parts._replace(path=f"/{parts.path.lstrip('/')}_browse_{args.records}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {STAGE}")
        conn.execute(
            f"CREATE UNLOGGED TABLE {STAGE} AS SELECT row_number() OVER (ORDER BY id) AS row_id, {COLS} "
            f"FROM datanets_record ORDER BY id LIMIT %s",
            [args.rows],
        )
        # The product's indexes of datanets_record but the contribution one (the variants'), as they stand.
        indexes = [
            sql
            for (sql,) in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'datanets_record' AND indexname <> 'datanets_record_pkey' "
                "AND indexdef NOT LIKE '%%(contribution_id%%'"
            )
        ]
    indexes = [sql.replace(" ON public.datanets_record", " ON datanets_record").split(" ON ", 1) for sql in indexes]
    indexes = [f"CREATE INDEX ON {rest}" for _, rest in indexes]
    report = harness.Report(
        NAME,
        f"record_index_cost: {args.rows:,} records inserted set-based, per contribution index",
        repeats=args.repeats,
    )
    cases = [
        {"variant": v, "index": ix, "indexes": indexes, "url": url, "rows": args.rows} for v, ix in VARIANTS.items()
    ]
    t = time.perf_counter()
    runs = harness.run_interleaved(
        __file__,
        cases,
        repeats=args.repeats,
        cwd=ROOT,
        on_result=lambda c, r: print(
            f"  {c['variant']}: {r['insert_cpu_s']:.2f} s CPU (repeat {r['repeat']})", flush=True
        ),
    )
    report.finish()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {STAGE}")
    base = {r.case["variant"]: r for r in runs}["none"]
    rows = []
    for r in runs:
        extra = [
            a - b for a, b in zip(r.values("insert_cpu_s"), base.values("insert_cpu_s"), strict=True)
        ]  # repeat by repeat
        rows.append(
            [
                r.case["variant"],
                harness.Stat.of(r.values("insert_cpu_s")).cell("{:,.2f}"),
                harness.Stat.of(extra).cell("{:+,.2f}") if r is not base else "-",
                harness.Stat.of(r.values("insert_wall_s")).cell("{:,.2f}"),
                f"{harness.Stat.of(r.values('index_mb')).median:,.1f}",
            ]
        )
    md = "\n".join(
        [
            *report.header(),
            *harness.table(
                [
                    "contribution index",
                    "INSERT CPU s",
                    "over none, CPU s (repeat by repeat)",
                    "INSERT wall s",
                    "index MB",
                ],
                rows,
            ),
            "",
            f"{args.rows:,} records (the browse benchmark Datanet's first ones) inserted with one `INSERT ... SELECT` "
            f"under one contribution into a table like `datanets_record` with the product's other indexes (full-text "
            f"GIN, the two hash indexes, the contributor browse index, the conflicts index, the primary key), no foreign key. CPU = "
            f"the PostgreSQL backend's. {time.perf_counter() - t:.0f} s in all.",
        ]
    )
    print("\n" + md)
    harness.write(
        RESULTS,
        NAME,
        md,
        {
            **report.meta(),
            "runs": [{"case": {k: v for k, v in r.case.items() if k != "indexes"}, "results": r.results} for r in runs],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
