"""Browsing a million-record Datanet: the Datanet page and the records API, p95 page time (issue 16, item 4).

    DATABASE_URL=postgres://.../mf_x nice -n 10 .venv/bin/python benchmarks/browse.py            # PostgreSQL and SQLite, 1M
    DATABASE_URL=postgres://.../mf_x .venv/bin/python benchmarks/browse.py --records 100000 --db postgres

The Datanet is built once (kept for later runs; `--rebuild` to start again): synthetic PhraseBank
variants from 10 contributors, most contributions accepted, one pending and one rejected, to `--records`
records in all (see `build`: contributions through the services, their records in bulk). PostgreSQL: database
`<DATABASE_URL's name>_browse`; SQLite: a file under $TMPDIR/mf-browse-bench/.

Each run (benchmarks/harness.py: its own process, databases interleaved, 5 repeats) requests every query of
QUERIES `--requests` times through Django's test client (URL routing, middleware, view, template or
serializer, the database; no network), as a signed-in contributor who curates nothing (the visibility
filter applies) and, for the status filters, as a curator. Page time = wall time of one request; p95 per
query and over all. CPU time (this process + its PostgreSQL backend) per request beside it.
Target: p95 page time < 200 ms at 1M records.
"""
from __future__ import annotations

import argparse
import csv
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import harness  # noqa: E402
from benchmarks.ingest import SWAPS, phrasebank_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NAME = "browse"
SLUG = "browse-bench"
CONTRIBUTORS = 10
TARGET_MS = 200

# (name, who, "page" or "api", query parameters). "{after}" is a keyset cursor deep into the Datanet,
# "{small}" a contributor with few records.
QUERIES = [
    ("first page", "reader", "page", {}),
    ("deep page (keyset)", "reader", "page", {"after": "{after}"}),
    ("label", "reader", "page", {"label": "negative"}),
    ("contributor (large)", "reader", "page", {"contributor": "c1"}),
    ("contributor (small)", "reader", "page", {"contributor": "{small}"}),
    ("search, common word", "reader", "page", {"q": "profit"}),
    ("search, rare word", "reader", "page", {"q": "Nordic bank"}),
    ("search, no match", "reader", "page", {"q": "zyxwvut"}),
    ("search + label", "reader", "page", {"q": "sales", "label": "positive"}),
    ("status pending (curator)", "curator", "page", {"status": "pending"}),
    ("status rejected + search (curator)", "curator", "page", {"status": "rejected", "q": "operating"}),
    ("api first page", "reader", "api", {}),
    ("api deep page", "reader", "api", {"after": "{after}"}),
    ("api search", "reader", "api", {"q": "profit"}),
    ("api label + contributor", "reader", "api", {"label": "neutral", "contributor": "c2"}),
    ("api status pending (curator)", "curator", "api", {"status": "pending"}),
    ("api search + status (curator)", "curator", "api", {"status": "accepted", "q": "net sales"}),
]


def synthetic_rows(start: int, n: int) -> list[tuple[str, str]]:
    """Rows start..start+n of an endless PhraseBank variant stream (distinct texts; like benchmarks/ingest.py)."""
    base = phrasebank_rows()
    rng = random.Random(start)
    out = []
    for i in range(start, start + n):
        k, j = divmod(i, len(base))
        label, text = base[j]
        if k:
            a, b = SWAPS[rng.randrange(len(SWAPS))]
            text = f"{text.replace(a, b, 1)} ({k}.{j})"
        out.append((label, text))
    return out


# --- the Datanet, built once through the services ------------------------------------------------------------

def plan(records: int) -> list[tuple[str, int, str]]:
    """(contributor, rows, decision) per contribution: c0 small, c9 pending, c8 rejected, the rest accepted."""
    small = max(1000, records // 200)
    side = records // 20
    big = (records - small - 2 * side) // (CONTRIBUTORS - 3)
    out = [("c0", small, "accepted")]
    out += [(f"c{i}", big, "accepted") for i in range(1, CONTRIBUTORS - 2)]
    out += [("c8", side, "rejected"), ("c9", records - small - side - big * (CONTRIBUTORS - 3), "pending")]
    return out


def build(records: int, work: Path) -> None:
    """Users, the Datanet and its contributions through the services (each contribution a real upload,
    ingest and curator decision), then each contribution's bulk of records written straight into
    `Record` (COPY; SQLite executemany, so its FTS5 triggers run), with the hashes and per-label counts
    the ingest would store. Not the ingest path (benchmarks/ingest.py measures that): a million records
    through it take tens of minutes on a shared 2-core machine; what is browsed is the same."""
    import django

    django.setup()
    from django.core.files import File
    from django.db import connection, transaction

    from accounts.services import user_create
    from core.roles import CONTRIBUTOR, CURATOR
    from datanets import readers, services
    from datanets.models import Contribution, Datanet

    if Datanet.objects.filter(slug=SLUG).exists():
        return
    curator = user_create(username="curator", password=os.urandom(8).hex(), roles=[CURATOR])
    user_create(username="reader", password=os.urandom(8).hex(), roles=[CONTRIBUTOR])
    datanet = services.datanet_create(owner=curator, name="browse bench", slug=SLUG, domain=Datanet.Domain.FINANCE,
                                      labels=["positive", "negative", "neutral"], max_text_length=2000,
                                      curators=[curator])
    start = 0
    for name, n, decision in plan(records):
        t = time.perf_counter()
        user = user_create(username=name, password=os.urandom(8).hex(), roles=[CONTRIBUTOR])
        rows = synthetic_rows(start, n)
        start += n
        path = work / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as fh:  # the contribution's first row, ingested
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["result", "content"])
            w.writerow(rows[0])
        with open(path, "rb") as fh:
            c = services.contribution_upload(datanet=datanet, contributor=user, file=File(fh, name=path.name),
                                             file_name=path.name, inline=True).contribution
        path.unlink()
        assert c.ingest_state == "done", c.ingest_errors[:3]
        with transaction.atomic(), connection.cursor() as cur:
            cols = "datanet_id, contribution_id, contributor_id, text, label, sha256, text_sha256, row_number, is_conflict"
            for i in range(1, n, 50_000):
                batch = [(datanet.id, c.id, user.id, text, label, readers.record_sha256(text, label),
                          readers.text_sha256(text), j + 1, False)
                         for j, (label, text) in enumerate(rows[i:i + 50_000], start=i)]
                if connection.vendor == "postgresql":
                    with cur.cursor.copy(f"COPY datanets_record ({cols}) FROM STDIN") as cp:
                        for row in batch:
                            cp.write_row(row)
                else:
                    cur.executemany(f"INSERT INTO datanets_record ({cols}) VALUES ({', '.join(['%s'] * 9)})", batch)
            cur.execute("SELECT label, COUNT(*) FROM datanets_record WHERE contribution_id = %s GROUP BY label", [c.id])
            counts = dict(cur.fetchall())
        Contribution.objects.filter(pk=c.pk).update(record_count=sum(counts.values()), label_counts=counts)
        if decision == "accepted":
            services.contribution_accept(contribution=c, curator=curator)
        elif decision == "rejected":
            services.contribution_reject(contribution=c, curator=curator, reason="benchmark")
        print(f"  built {name}: {n:,} records, {decision}, {time.perf_counter() - t:.0f} s", flush=True)
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE datanets_record" if connection.vendor == "postgresql" else "ANALYZE")


# --- one run -----------------------------------------------------------------------------------------------

def run_case(case: dict) -> dict:
    os.environ["DATABASE_URL"] = case["url"]
    if case.get("build"):
        build(case["records"], Path(case["work"]))
        return {}
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from datanets.models import Datanet, Record

    pid = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
    datanet = Datanet.objects.get(slug=SLUG)
    users = {u.username: u for u in get_user_model().objects.filter(username__in=["reader", "curator"])}
    clients = {}
    for who, user in users.items():
        clients[who] = Client()
        clients[who].force_login(user)
    ids = Record.objects.filter(datanet=datanet).order_by("-id").values_list("id", flat=True)
    deep = ids[case["records"] // 10]  # 90% of the way through
    fill = {"after": str(deep), "small": "c0"}
    page_url, api_url = f"/datanets/{SLUG}/", f"/api/v1/datanets/{SLUG}/records/"
    out: dict = {"queries": {}}
    rng = random.Random(case["repeat_seed"])
    order = list(range(len(QUERIES))) * case["requests"]
    rng.shuffle(order)  # queries interleaved, so no one query gets all of a quiet or a busy moment
    times: dict[str, list[tuple[float, float]]] = {q[0]: [] for q in QUERIES}
    for _ in range(2):  # warm: the first requests load templates and URL resolvers
        for who in clients:
            clients[who].get(page_url)
            clients[who].get(api_url)
    # The fresh process's first full garbage collections (~90 ms of CPU, Django's startup objects) run now, not
    # in whichever early request the shuffle puts there: a serving process has long done them.
    gc.collect()
    for i in order:
        name, who, kind, params = QUERIES[i]
        params = {k: v.format(**fill) for k, v in params.items()}
        if kind == "api" and "after" in params:  # the API's cursor is opaque: follow `next` to a deep id instead
            params = {"cursor": _api_cursor(int(params.pop("after")))}
        url = (page_url if kind == "page" else api_url) + "?" + urlencode(params)
        with harness.Meter(backend_pid=pid) as m:
            resp = clients[who].get(url)
        assert resp.status_code == 200, (url, resp.status_code)
        times[name].append((m.wall_s * 1000, m.total_cpu_s * 1000))
    for name, samples in times.items():
        walls = sorted(w for w, _ in samples)
        out["queries"][name] = {"p95_ms": _p95(walls), "median_ms": statistics.median(walls),
                                "cpu_p95_ms": _p95(sorted(c for _, c in samples))}
    out["p95_ms"] = _p95(sorted(w for s in times.values() for w, _ in s))
    out["cpu_p95_ms"] = _p95(sorted(c for s in times.values() for _, c in s))
    out["records"] = Record.objects.filter(datanet=datanet).count()
    return out


def _api_cursor(after_id: int) -> str:
    """DRF's cursor for 'the records after id X' (base64 of the query string p=X)."""
    import base64

    return base64.b64encode(urlencode({"p": after_id}).encode()).decode()


def _p95(sorted_values: list[float]) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, int(round(0.95 * len(sorted_values))) - 1)
    return sorted_values[k]


# --- driver -------------------------------------------------------------------------------------------------

def _databases(base_url: str, which: list[str], work: Path, rebuild: bool, records: int) -> dict[str, str]:
    import subprocess

    import psycopg

    urls = {}
    env = {**os.environ, "VAR_DIR": str(work / "var"), "MEDIA_ROOT": str(work / "media"), "LOG_LEVEL": "WARNING",
           "CELERY_BROKER_URL": "memory://", "DJANGO_SETTINGS_MODULE": "config.settings"}
    if "postgres" in which:
        parts = urlsplit(base_url)
        if not parts.scheme.startswith("postgres"):
            sys.exit("Set DATABASE_URL=postgres://... (the PostgreSQL half of this benchmark)")
        name = f"{parts.path.lstrip('/') or 'postgres'}_browse_{records}"
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if rebuild and exists:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            if rebuild or not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        urls["postgres"] = urlunsplit(parts._replace(path="/" + name))
    if "sqlite" in which:
        path = work / f"browse_{records}.sqlite3"
        if rebuild:
            path.unlink(missing_ok=True)
        urls["sqlite"] = f"sqlite:///{path}"
    for db, url in urls.items():
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env={**env, "DATABASE_URL": url}, check=True)
        print(f"building the {db} Datanet ({records:,} records) unless it is there ...", flush=True)
        harness.run_interleaved(__file__, [{"build": True, "url": url, "records": records, "work": str(work)}],
                                repeats=1, env=env, cwd=ROOT)
    return urls


def main() -> int:
    if harness.is_child():
        return harness.child_main(run_case)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--db", action="append", choices=["postgres", "sqlite"], help="default: both")
    ap.add_argument("--repeats", type=int, default=harness.MIN_REPEATS)
    ap.add_argument("--requests", type=int, default=10, help="requests per query per run")
    ap.add_argument("--rebuild", action="store_true", help="build the Datanet again")
    ap.add_argument("--name", default=NAME)
    args = ap.parse_args()
    which = args.db or ["postgres", "sqlite"]
    work = Path(os.environ.get("MF_BROWSE_BENCH_DIR", Path(tempfile.gettempdir()) / "mf-browse-bench"))
    work.mkdir(parents=True, exist_ok=True)
    urls = _databases(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mf_bench"), which, work,
                      args.rebuild, args.records)
    report = harness.Report(NAME, f"browse: a {args.records:,}-record Datanet's page and records API", repeats=args.repeats)
    env = {"VAR_DIR": str(work / "var"), "MEDIA_ROOT": str(work / "media"), "LOG_LEVEL": "WARNING",
           "CELERY_BROKER_URL": "memory://", "DJANGO_SETTINGS_MODULE": "config.settings"}
    cases = [{"db": db, "url": url, "records": args.records, "requests": args.requests, "repeat_seed": 0}
             for db, url in urls.items()]
    runs = harness.run_interleaved(__file__, cases, repeats=args.repeats, env=env, cwd=ROOT,
                                   on_result=lambda c, r: print(f"  {c['db']}: p95 {r['p95_ms']:.0f} ms (repeat {r['repeat']})",
                                                                flush=True))
    report.finish()
    write_report(report, runs, args)
    return 0


def write_report(report: harness.Report, runs: list[harness.Run], args) -> None:
    head = ["query", *(f"{r.case['db']} p95 CPU ms" for r in runs), *(f"{r.case['db']} p95 wall ms" for r in runs)]
    rows = []
    for name, *_ in QUERIES:
        cells = [name]
        for key in ("cpu_p95_ms", "p95_ms"):
            for r in runs:
                cells.append(harness.Stat.of([x["queries"][name][key] for x in r.results]).cell("{:,.1f}"))
        rows.append(cells)
    overall = ["**all queries: p95**"]
    for key in ("cpu_p95_ms", "p95_ms"):
        for r in runs:
            overall.append(harness.Stat.of(r.values(key)).cell("{:,.1f}"))
    rows.append(overall)

    def verdict(key: str) -> str:
        return ", ".join(f"{r.case['db']} {harness.Stat.of(r.values(key)).median:,.0f} ms "
                         f"({'meets' if harness.Stat.of(r.values(key)).median < TARGET_MS else 'MISSES'} {TARGET_MS} ms)"
                         for r in runs)
    md = "\n".join([*report.header(), *harness.table(head, rows), "",
                    f"{runs[0].results[0]['records']:,} records in the Datanet, {CONTRIBUTORS} contributors; "
                    f"{args.requests} requests per query per run, queries shuffled; p95 over a run's requests, then "
                    f"median (min, spread) over the runs. Page = the Datanet page's HTML (records table, label chart, "
                    f"per-contributor counts, counts), API = `GET /api/v1/datanets/<slug>/records/` (keyset cursor). "
                    f"Wall time per request is the page time as the machine ran it; CPU = this process + its PostgreSQL "
                    f"backend, what the request costs whatever else runs (the primary figure on a shared machine). "
                    f"p95 over all queries, median of the runs: CPU {verdict('cpu_p95_ms')}; wall {verdict('p95_ms')}. "
                    f"Load average during the run is in the header: with a load over the core count, wall time "
                    f"includes waiting for a core."])
    print("\n" + md)
    harness.write(RESULTS, args.name, md, {**report.meta(), "queries": [q[0] for q in QUERIES],
                                           "runs": [{"case": r.case, "results": r.results} for r in runs]})


if __name__ == "__main__":
    sys.exit(main())
