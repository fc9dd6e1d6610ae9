"""Settings, read from the environment (12-factor).

With nothing set, the app runs on one machine: SQLite and a file-system Celery broker under `var/`,
DEBUG on and a secret generated once into `var/secret_key`. Each integration is switched on by its
variable: DATABASE_URL, CELERY_BROKER_URL, WEB3_PROVIDER_URI. Real environment variables win over `.env`.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"), overwrite=False)

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=True)


def _secret_key() -> str:
    key = env.str("DJANGO_SECRET_KEY", default="")
    if key:
        return key
    if not DEBUG:
        # Production must say its secret; a generated one would differ per machine.
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "core",
    "accounts",
    "datanets",
    "factory",
    "attribution",
    "ledger",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.ErrorPageMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.roles",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the worker write progress while the web process reads it. synchronous=NORMAL: in WAL mode a
    # commit then writes the log without waiting for fsync (a power cut may lose the last commits, never
    # corrupt the file); each commit, and so each wait for the one write lock, is that much shorter.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;")
    # Seconds a writer waits for the write lock before "database is locked" (the busy timeout).
    DATABASES["default"]["OPTIONS"]["timeout"] = env.float("SQLITE_TIMEOUT_SECONDS", default=60.0)
    # A deferred transaction that reads and then writes cannot wait for the lock: SQLite answers
    # "database is locked" at once, whatever the timeout (7 of 17 logins failed so while a fine-tune ran).
    # IMMEDIATE takes the write lock at BEGIN, so concurrent writers (web, worker, beat) queue on the
    # timeout instead. Requests are then not wrapped whole: a page view would hold the write lock while it
    # renders; services that write several rows still run in their own `transaction.atomic`.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["ATOMIC_REQUESTS"] = False
    # Tests that start a worker process need the test database in a file the worker can open.
    DATABASES["default"].setdefault("TEST", {}).setdefault("NAME", str(VAR_DIR / "test_db.sqlite3"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
WHITENOISE_AUTOREFRESH = DEBUG
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Rate-limit counters must be shared by all web processes: Redis when REDIS_CACHE_URL is set.
CACHES = {"default": env.cache("REDIS_CACHE_URL", default="locmemcache://")}

# Uploads: larger files go to a temporary file, never whole into memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATANET_UPLOAD_MAX_BYTES = env.int("DATANET_UPLOAD_MAX_BYTES", default=200 * 1024 * 1024)

# --- REST API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.authentication.ApiKeyRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "core.api.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Model Factory API",
    "DESCRIPTION": "Datanets, fine-tunes, Proof of Attribution and the ledger.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Request bodies as their own components: read-only fields are not asked for, write-only not promised.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.api.schema_links"],
    # Swagger UI from the installed sidecar package: the machines have no internet, so no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---
# No CELERY_BROKER_URL: a file-system broker under var/ that needs no server process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Long fine-tunes are acked late: the message must stay invisible longer than a job runs.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 12 * 3600}
# Job state lives in the database rows; a result backend is optional.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None) or None
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ROUTES = {
    "datanets.tasks.*": {"queue": "cpu"},
    # A merged export needs memory, not a GPU: it runs beside the version exports (checked before the glob).
    "factory.tasks.finetuned_model_merge_task": {"queue": "cpu"},
    "factory.tasks.*": {"queue": "gpu"},
    "attribution.tasks.*": {"queue": "gpu"},
    "ledger.tasks.*": {"queue": "ledger"},
}
CELERY_BEAT_SCHEDULE: dict = {}
# Soft time limit (seconds) of each kind of long task (core.tasks.LongTask): at it the task stops and its
# row says why (a fine-tune keeps its checkpoint; a retry resumes); the hard limit, GRACE later, kills it.
TASK_TIME_LIMITS = {
    "finetune": env.int("TASK_TIME_LIMIT_FINETUNE", default=24 * 3600),
    "attribution_index": env.int("TASK_TIME_LIMIT_ATTRIBUTION_INDEX", default=6 * 3600),
    "ingest": env.int("TASK_TIME_LIMIT_INGEST", default=2 * 3600),
    "span_index": env.int("TASK_TIME_LIMIT_SPAN_INDEX", default=2 * 3600),
    "export": env.int("TASK_TIME_LIMIT_EXPORT", default=3600),
    "settle": env.int("TASK_TIME_LIMIT_SETTLE", default=1800),
    "base_build": env.int("TASK_TIME_LIMIT_BASE_BUILD", default=3 * 3600),
    # Merging an adapter into its base and zipping the result (a 7B base: minutes, tens of GB on disk).
    "merge": env.int("TASK_TIME_LIMIT_MERGE", default=2 * 3600),
    "batch_inference": env.int("TASK_TIME_LIMIT_BATCH_INFERENCE", default=6 * 3600),
}
TASK_TIME_LIMIT_GRACE_SECONDS = env.int("TASK_TIME_LIMIT_GRACE_SECONDS", default=300)
# Seconds after which a worker that stopped beating counts as gone (see core.heartbeat).
WORKER_HEARTBEAT_SECONDS = env.int("WORKER_HEARTBEAT_SECONDS", default=10)
WORKER_STALE_SECONDS = env.int("WORKER_STALE_SECONDS", default=45)

# --- Chain ---
WEB3_PROVIDER_URI = env.str("WEB3_PROVIDER_URI", default="")
LEDGER_PRIVATE_KEY = env.str("LEDGER_PRIVATE_KEY", default="")
LEDGER_CONFIRMATIONS = env.int("LEDGER_CONFIRMATIONS", default=1)

# --- ML ---
MODELS_DIR = Path(env.str("MODELS_DIR", default=str(VAR_DIR / "models")))
HF_HOME = env.str("HF_HOME", default=str(VAR_DIR / "hf"))
# Steps of pre-training for the demo's locally built generation base (bootstrap; nothing can be downloaded).
DEMO_BASE_PRETRAIN_STEPS = env.int("DEMO_BASE_PRETRAIN_STEPS", default=1000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    STORAGES["staticfiles"]["BACKEND"] = "whitenoise.storage.CompressedManifestStaticFilesStorage"

# Every variable the settings read, for docs and the docker-compose check.
ENV_VARS = (
    "VAR_DIR", "SQLITE_TIMEOUT_SECONDS", "REDIS_CACHE_URL", "DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DJANGO_CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL", "MEDIA_ROOT", "DATANET_UPLOAD_MAX_BYTES", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
    "WORKER_HEARTBEAT_SECONDS", "WORKER_STALE_SECONDS", "TASK_TIME_LIMIT_FINETUNE", "TASK_TIME_LIMIT_ATTRIBUTION_INDEX",
    "TASK_TIME_LIMIT_INGEST", "TASK_TIME_LIMIT_SPAN_INDEX", "TASK_TIME_LIMIT_EXPORT", "TASK_TIME_LIMIT_SETTLE",
    "TASK_TIME_LIMIT_BASE_BUILD", "TASK_TIME_LIMIT_MERGE", "TASK_TIME_LIMIT_BATCH_INFERENCE", "TASK_TIME_LIMIT_GRACE_SECONDS", "WEB3_PROVIDER_URI", "LEDGER_PRIVATE_KEY",
    "LEDGER_CONFIRMATIONS", "MODELS_DIR", "HF_HOME", "DEMO_BASE_PRETRAIN_STEPS", "LOG_LEVEL", "DJANGO_SECURE_COOKIES",
)

# --- datanets ---
# A compressed upload (.gz, .zip) or a Parquet file may decompress to at most this many bytes.
DATANET_DECOMPRESSED_MAX_BYTES = env.int("DATANET_DECOMPRESSED_MAX_BYTES", default=2 * 1024 * 1024 * 1024)
# Rows per batch written to the staging table (and between progress updates) during ingest.
DATANET_INGEST_BATCH_ROWS = env.int("DATANET_INGEST_BATCH_ROWS", default=5_000)
# The read-only demo data (financial_phrasebank.csv, tinyshakespeare.txt) that `seed_demo` loads.
# The shared data sets sit beside the checkout (../shared/data); a clone elsewhere on this machine finds /work's.
_shared_candidates = [BASE_DIR.parent / "shared" / "data", Path("/work/shared/data")]
SHARED_DATA_DIR = Path(env.str(
    "SHARED_DATA_DIR", default=str(next((p for p in _shared_candidates if p.is_dir()), _shared_candidates[0]))))
ENV_VARS += ("DATANET_DECOMPRESSED_MAX_BYTES", "DATANET_INGEST_BATCH_ROWS", "SHARED_DATA_DIR")

# --- ledger ---
# Slashes and unclaimed rewards go to the treasury (default: the signer's own address).
LEDGER_TREASURY_ADDRESS = env.str("LEDGER_TREASURY_ADDRESS", default="")
# Seconds a passed governance proposal waits in the timelock before anyone can execute it.
# Two minutes with DEBUG, so a proposal passes the timelock during a demo; fixed in the timelock at deploy.
LEDGER_GOVERNANCE_DELAY_SECONDS = env.int("LEDGER_GOVERNANCE_DELAY_SECONDS", default=120 if DEBUG else 3600)
# OpenGovernor (OPEN holders' votes), fixed at deploy: blocks from proposal to vote start, blocks of voting,
# whole OPEN of votes needed to propose, percent of the supply that must vote (for + abstain) for a quorum.
# Small with DEBUG (a vote in a minute on anvil); about a day and a week of 12-second blocks otherwise.
LEDGER_GOVERNOR_VOTING_DELAY_BLOCKS = env.int("LEDGER_GOVERNOR_VOTING_DELAY_BLOCKS", default=1 if DEBUG else 7200)
LEDGER_GOVERNOR_VOTING_PERIOD_BLOCKS = env.int("LEDGER_GOVERNOR_VOTING_PERIOD_BLOCKS", default=10 if DEBUG else 50400)
LEDGER_GOVERNOR_PROPOSAL_THRESHOLD = env.int("LEDGER_GOVERNOR_PROPOSAL_THRESHOLD", default=0 if DEBUG else 100_000)
LEDGER_GOVERNOR_QUORUM_PERCENT = env.int("LEDGER_GOVERNOR_QUORUM_PERCENT", default=4)
# Custodial demo wallets: keys derived from this secret (default: DJANGO_SECRET_KEY). See docs/ledger.md.
LEDGER_CUSTODIAL_SECRET = env.str("LEDGER_CUSTODIAL_SECRET", default="")
# The reward epoch length deployed; then OPEN holders govern it (ProtocolParameters) and beat checks every tick.
LEDGER_EPOCH_SECONDS = env.int("LEDGER_EPOCH_SECONDS", default=600)
LEDGER_EPOCH_TICK_SECONDS = env.int("LEDGER_EPOCH_TICK_SECONDS", default=60)
LEDGER_CLAIM_WINDOW_DAYS = env.int("LEDGER_CLAIM_WINDOW_DAYS", default=30)
LEDGER_SWEEP_SECONDS = env.int("LEDGER_SWEEP_SECONDS", default=30)
# An accepted contribution's stake stays bonded this long (fixed at deploy, then governed: setBondSeconds):
# a curator may slash it within the bond when its records turn out harmful to a model (docs/datanets.md);
# after it a beat task releases it. An hour with DEBUG (a quick model is trained and indexed in minutes),
# 30 days otherwise; 0 releases at accept.
LEDGER_STAKE_BOND_SECONDS = env.int("LEDGER_STAKE_BOND_SECONDS", default=3600 if DEBUG else 30 * 86400)
LEDGER_STAKE_RELEASE_TICK_SECONDS = env.int("LEDGER_STAKE_RELEASE_TICK_SECONDS", default=300)
# Crash injection for the outbox tests (after_sign | after_record | after_send | after_receipt | mid_epoch);
# honoured only with DEBUG on.
LEDGER_CRASH_AT = env.str("LEDGER_CRASH_AT", default="")
# The sender replaces a transaction not mined within LEDGER_REPLACE_AFTER_BLOCKS blocks: same nonce, both fees
# raised by LEDGER_FEE_BUMP_BPS (at least 1250 = 12.5 %), never above LEDGER_MAX_FEE_PER_GAS (wei per gas).
LEDGER_REPLACE_AFTER_BLOCKS = env.int("LEDGER_REPLACE_AFTER_BLOCKS", default=3)
LEDGER_FEE_BUMP_BPS = env.int("LEDGER_FEE_BUMP_BPS", default=1250)
LEDGER_MAX_FEE_PER_GAS = env.int("LEDGER_MAX_FEE_PER_GAS", default=500 * 10**9)
# Confirmed rows are re-checked (a reorg re-sends them) until this many blocks are on theirs.
LEDGER_FINALITY_DEPTH = env.int("LEDGER_FINALITY_DEPTH", default=12)
CELERY_BEAT_SCHEDULE["ledger-outbox-sweep"] = {
    "task": "ledger.tasks.outbox_sweep_task", "schedule": LEDGER_SWEEP_SECONDS, "options": {"queue": "ledger"},
}
CELERY_BEAT_SCHEDULE["ledger-reward-epoch"] = {
    "task": "ledger.tasks.rewards_epoch_tick_task", "schedule": LEDGER_EPOCH_TICK_SECONDS, "options": {"queue": "ledger"},
}
CELERY_BEAT_SCHEDULE["datanets-stake-release"] = {
    "task": "datanets.tasks.contribution_bonds_release_task", "schedule": LEDGER_STAKE_RELEASE_TICK_SECONDS,
}
CELERY_BEAT_SCHEDULE["ledger-reward-sweep"] = {
    "task": "ledger.tasks.rewards_epochs_sweep_task", "schedule": 3600.0, "options": {"queue": "ledger"},
}
ENV_VARS += (
    "LEDGER_TREASURY_ADDRESS", "LEDGER_GOVERNANCE_DELAY_SECONDS", "LEDGER_CUSTODIAL_SECRET", "LEDGER_EPOCH_SECONDS",
    "LEDGER_GOVERNOR_VOTING_DELAY_BLOCKS", "LEDGER_GOVERNOR_VOTING_PERIOD_BLOCKS", "LEDGER_GOVERNOR_PROPOSAL_THRESHOLD",
    "LEDGER_GOVERNOR_QUORUM_PERCENT", "LEDGER_EPOCH_TICK_SECONDS",
    "LEDGER_CLAIM_WINDOW_DAYS", "LEDGER_SWEEP_SECONDS", "LEDGER_CRASH_AT",
    "LEDGER_REPLACE_AFTER_BLOCKS", "LEDGER_FEE_BUMP_BPS", "LEDGER_MAX_FEE_PER_GAS", "LEDGER_FINALITY_DEPTH",
    "LEDGER_STAKE_BOND_SECONDS", "LEDGER_STAKE_RELEASE_TICK_SECONDS",
)

# --- factory ---
# Training steps between checkpoints; seconds between progress writes; seconds between the gpu workers'
# sweeps for jobs of dead workers; CPU threads for training (0: one per core).
FACTORY_CHECKPOINT_EVERY = env.int("FACTORY_CHECKPOINT_EVERY", default=50)
FACTORY_PROGRESS_SECONDS = env.float("FACTORY_PROGRESS_SECONDS", default=3.0)
FACTORY_RECOVERY_SECONDS = env.float("FACTORY_RECOVERY_SECONDS", default=30.0)
FACTORY_CPU_THREADS = env.int("FACTORY_CPU_THREADS", default=0)
CELERY_BEAT_SCHEDULE["factory-recover-jobs"] = {
    "task": "factory.tasks.finetune_jobs_recover_task", "schedule": 120.0, "options": {"queue": "gpu"},
}
# A queued job whose message is not in the (empty) gpu queue this long after it was sent is sent again.
# On `cpu`: the sweep must run while the gpu worker is busy training.
FACTORY_REDISPATCH_SECONDS = env.float("FACTORY_REDISPATCH_SECONDS", default=300.0)
CELERY_BEAT_SCHEDULE["factory-redispatch-jobs"] = {
    "task": "factory.tasks.finetune_jobs_redispatch_task", "schedule": 60.0, "options": {"queue": "cpu"},
}
ENV_VARS += ("FACTORY_CHECKPOINT_EVERY", "FACTORY_PROGRESS_SECONDS", "FACTORY_RECOVERY_SECONDS", "FACTORY_CPU_THREADS",
             "FACTORY_REDISPATCH_SECONDS")

# --- serving ---
INSTALLED_APPS += ["serving"]
# OpenLoRA serving (serving/openlora): adapters held at once, by count and by bytes of weights; rows per
# forward pass; generation length; "" = CUDA when present. Backend: "inprocess" (the web process runs
# the model), "http" (the inference server at SERVING_URL runs it) or "celery" (the `gpu` queue runs it;
# the web process waits up to SERVING_TIMEOUT_SECONDS).
SERVING_CACHE_ADAPTERS = env.int("SERVING_CACHE_ADAPTERS", default=100)
SERVING_CACHE_BYTES = env.int("SERVING_CACHE_BYTES", default=512 * 1024 * 1024)
SERVING_MAX_BATCH = env.int("SERVING_MAX_BATCH", default=32)
SERVING_MAX_NEW_TOKENS = env.int("SERVING_MAX_NEW_TOKENS", default=40)
SERVING_NUM_BEAMS = env.int("SERVING_NUM_BEAMS", default=4)  # 1 = greedy (the fastest)
# The most new tokens a caller may ask for (`max_tokens` of the OpenAI-compatible API, the playground).
SERVING_MAX_NEW_TOKENS_LIMIT = env.int("SERVING_MAX_NEW_TOKENS_LIMIT", default=512)
SERVING_DEVICE = env.str("SERVING_DEVICE", default="")
# "" = float16 on CUDA, float32 on CPU; on CPUs "bfloat16" (native bf16) or "int8" (a quantized base) serve
# about 1.6x or 2.3x faster than float32, a little less exactly (docs/serving.md).
SERVING_DTYPE = env.str("SERVING_DTYPE", default="")
SERVING_BACKEND = env.str("SERVING_BACKEND", default="inprocess")
SERVING_TIMEOUT_SECONDS = env.float("SERVING_TIMEOUT_SECONDS", default=60.0)
# How long the batcher waits after a request for others to share its forward pass.
SERVING_BATCH_WAIT_MS = env.float("SERVING_BATCH_WAIT_MS", default=5.0)
# Backend "http": the long-lived inference process (python -m serving.openlora.server) at this URL.
SERVING_URL = env.str("SERVING_URL", default="http://127.0.0.1:8765")
# A vLLM server (its own process and environment: requirements-vllm.txt, `make vllm`) for the generators on
# the base it was started with; "" = none. Classifiers and other bases stay on the built-in engine.
SERVING_VLLM_URL = env.str("SERVING_VLLM_URL", default="")
if SERVING_VLLM_URL and not SERVING_VLLM_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"SERVING_VLLM_URL must be an http(s) URL, not {SERVING_VLLM_URL!r}")
# Paid inference: OPEN per call, longest input in characters, top records returned.
SERVING_FEE_PER_CALL = env.str("SERVING_FEE_PER_CALL", default="0.01")  # a decimal string
SERVING_MAX_INPUT_CHARS = env.int("SERVING_MAX_INPUT_CHARS", default=4000)
# Batch inference (a CSV of inputs, a job on the gpu queue): the most rows and bytes one upload may have.
SERVING_BATCH_MAX_ROWS = env.int("SERVING_BATCH_MAX_ROWS", default=10_000)
SERVING_BATCH_MAX_BYTES = env.int("SERVING_BATCH_MAX_BYTES", default=20 * 1024 * 1024)
SERVING_TOP_K = env.int("SERVING_TOP_K", default=5)
# Span attribution: shortest span (tokens) that counts; a new version adding at most this many records to
# an indexed one gets a delta segment instead of a rebuild (compacted later in the background).
SERVING_SPANS_MIN_TOKENS = env.int("SERVING_SPANS_MIN_TOKENS", default=6)
SERVING_SPANS_DELTA_MAX_RECORDS = env.int("SERVING_SPANS_DELTA_MAX_RECORDS", default=10_000)
CELERY_TASK_ROUTES["serving.tasks.inference_run_task"] = {"queue": "gpu"}
CELERY_TASK_ROUTES["serving.tasks.span_index_build_task"] = {"queue": "cpu"}
# Paid answers held until their model's attribution index is ready are settled when it is (a signal);
# this sweep is the safety net (a lost message, a broker that was down).
SERVING_SETTLE_SWEEP_SECONDS = env.float("SERVING_SETTLE_SWEEP_SECONDS", default=300.0)
CELERY_TASK_ROUTES["serving.tasks.inferences_settle_task"] = {"queue": "gpu"}
CELERY_BEAT_SCHEDULE["serving-settle-sweep"] = {
    "task": "serving.tasks.inferences_settle_task", "schedule": SERVING_SETTLE_SWEEP_SECONDS, "options": {"queue": "gpu"},
}
ENV_VARS += (
    "SERVING_CACHE_ADAPTERS", "SERVING_CACHE_BYTES", "SERVING_MAX_BATCH", "SERVING_MAX_NEW_TOKENS", "SERVING_NUM_BEAMS",
    "SERVING_DEVICE",
    "SERVING_BACKEND", "SERVING_VLLM_URL", "SERVING_TIMEOUT_SECONDS", "SERVING_BATCH_WAIT_MS", "SERVING_FEE_PER_CALL",
    "SERVING_MAX_INPUT_CHARS", "SERVING_TOP_K", "SERVING_SPANS_MIN_TOKENS", "SERVING_SPANS_DELTA_MAX_RECORDS",
    "SERVING_URL", "SERVING_DTYPE", "SERVING_SETTLE_SWEEP_SECONDS", "SERVING_MAX_NEW_TOKENS_LIMIT",
    "SERVING_BATCH_MAX_ROWS", "SERVING_BATCH_MAX_BYTES",
)
