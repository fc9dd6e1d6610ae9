# Model Factory. `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
# Tests use the real PostgreSQL and Redis on this machine unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/modelfactory
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0
PYTEST_ARGS ?=

.PHONY: run test test-sqlite forge lint bench deps browser clean-var help vllm

help:
	@echo "make run    - install, migrate, seed the demo once, start web + one worker per queue + beat + chain on http://127.0.0.1:8000"
	@echo "make test   - the test suite on PostgreSQL + Redis (127.0.0.1), then the money path on SQLite"
	@echo "make forge  - fuzz and invariant tests of the contracts (forge, offline)"
	@echo "make lint   - ruff, the import contracts (import-linter) and the architecture doc check"
	@echo "make bench  - benchmarks; tables printed and written to benchmarks/results/"
	@echo "make vllm   - (GPU machines) a vLLM server for one base's chat adapters: VLLM_BASE=<catalog name> make vllm"

.venv/.stamp-deps: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

node_modules/.stamp-npm: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

deps: .venv/.stamp-deps node_modules/.stamp-npm

# Playwright drives Debian's chromium: its own browser download cannot work without internet.
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser tests"; \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	  || { echo "could not install chromium: run 'sudo apt-get install chromium'"; exit 1; }; }

run: deps
	./scripts/run.sh

# vLLM in its own environment (.venv-vllm from requirements-vllm.txt): GPU machines only, docs/serving.md.
vllm: .venv/.stamp-deps
	./scripts/vllm.sh

test: deps browser
	@echo "database: $(TEST_DATABASE_URL)   broker: $(TEST_BROKER_URL)"
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) manage.py makemigrations --check --dry-run >/dev/null
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory forge
	$(MAKE) --no-print-directory test-sqlite

# Fuzz and invariant tests of RewardDistributor and DatanetRegistry (ledger/contracts/foundry.toml: runs, depth,
# seed); npm's forge with the npm solc, no network. About 30-45 s on 2 cores.
forge: node_modules/.stamp-npm
	cd ledger/contracts && ../../node_modules/.bin/forge test

# The money path again on the embedded default (SQLite, the file-system broker), where a DecimalField once
# came back through a float: exact amounts, wallets, the ledger (accrue -> epoch -> publish -> claim on anvil),
# the end-to-end test (upload -> ... -> claim, real workers and anvil; about 90 s), and which records a
# fine-tune trains on (and so who can be paid) when near-duplicate copies are in the version, and what a
# stopped chat answer is charged (the partial answer) or not (a client gone before the first token).
SQLITE_TESTS ?= core/tests/test_fields.py core/tests/test_concurrent_writes.py accounts/tests/test_wallets.py ledger \
  tests/test_end_to_end.py \
  datanets/tests/test_neardup.py::test_later_same_label_copies_are_not_trained_on_and_a_copy_of_a_record_outside_the_version_is \
  serving/tests/test_chat.py::test_stop_ends_the_answer_and_it_is_charged_and_shown \
  serving/tests/test_chat.py::test_a_client_gone_before_the_first_token_leaves_no_pending_row
test-sqlite: deps
	@d=$$(mktemp -d /tmp/mf-sqlite-XXXXXX); echo "database: sqlite ($$d)   broker: filesystem"; \
	MF_ALLOW_SQLITE_TESTS=1 VAR_DIR=$$d DATABASE_URL=sqlite:///$$d/db.sqlite3 CELERY_BROKER_URL=filesystem:// \
	  $(PY) -m pytest -m "not browser" -p no:cacheprovider $(SQLITE_TESTS); rc=$$?; rm -rf $$d; exit $$rc

# ruff, then the import contracts (pyproject.toml [tool.importlinter]: layers, the ledger as a sink, engines
# without Django), then that the apps' import graph has no cycle and docs/architecture.md matches the contracts.
lint: .venv/.stamp-deps
	.venv/bin/ruff check .
	.venv/bin/lint-imports --no-logo
	$(PY) scripts/architecture.py --check

bench: deps
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) benchmarks/run_all.py
