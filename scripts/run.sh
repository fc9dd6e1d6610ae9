#!/usr/bin/env bash
# Start the whole app on one machine: the chain (anvil, state in var/), a Celery worker per queue, beat, the web server.
# Embedded defaults: SQLite and a file-system broker under var/, unless DATABASE_URL / CELERY_BROKER_URL are set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VAR=${VAR_DIR:-var}  # chain state and logs beside the database (VAR_DIR, as the settings read it)
mkdir -p "$VAR/chain" "$VAR/log"
PORT=${PORT:-8000}
CHAIN_PORT=${CHAIN_PORT:-8545}
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # npm's anvil wrapper exits before anvil itself has written its state: wait until the port closes.
  if [ -n "${started_anvil:-}" ]; then
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$CHAIN_PORT") 2>/dev/null || break; sleep 0.2; done
  fi
}
trap cleanup EXIT INT TERM

if [ -z "${WEB3_PROVIDER_URI:-}" ]; then
  export WEB3_PROVIDER_URI="http://127.0.0.1:${CHAIN_PORT}"
  if ! (exec 3<>/dev/tcp/127.0.0.1/"$CHAIN_PORT") 2>/dev/null; then
    echo "chain: anvil on :$CHAIN_PORT, state in $VAR/chain/state.json"
    # --state loads and saves the chain so contracts and balances survive restarts; --state-interval
    # also saves it every 10 s, so a hard kill loses at most that much (the outbox replays the rest).
    # --block-time 2 --mixed-mining: transactions are mined at once, and a block comes every 2 s as on an L2,
    # so governance's voting delay and period (counted in blocks) pass while the app is idle.
    node_modules/.bin/anvil --port "$CHAIN_PORT" --host 127.0.0.1 --state "$VAR/chain/state.json" --state-interval 10 \
      --block-time 2 --mixed-mining --silent >"$VAR"/log/anvil.log 2>&1 &
    pids+=($!)
    started_anvil=1
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$CHAIN_PORT") 2>/dev/null && break; sleep 0.2; done
  fi
fi

$PY manage.py migrate --noinput
$PY manage.py bootstrap   # contracts deployed and demo seeded, each once

# One worker process per queue, so an upload's ingest (cpu) never waits behind a fine-tune (gpu) and the
# ledger keeps its nonces in order (one at a time). Concurrency 1 each suits a 2-core machine; raise
# CPU_CONCURRENCY / GPU_CONCURRENCY on a bigger one.
CPU_CONCURRENCY=${CPU_CONCURRENCY:-1}
GPU_CONCURRENCY=${GPU_CONCURRENCY:-1}
echo "workers: cpu (concurrency $CPU_CONCURRENCY), gpu (concurrency $GPU_CONCURRENCY), ledger (1); logs in $VAR/log/"
$PY -m celery -A config worker -Q cpu -c "$CPU_CONCURRENCY" -n cpu@%h --loglevel=INFO >"$VAR"/log/worker-cpu.log 2>&1 &
pids+=($!)
$PY -m celery -A config worker -Q gpu -c "$GPU_CONCURRENCY" -n gpu@%h --loglevel=INFO >"$VAR"/log/worker-gpu.log 2>&1 &
pids+=($!)
$PY -m celery -A config worker -Q ledger -c 1 -n ledger@%h --loglevel=INFO >"$VAR"/log/worker-ledger.log 2>&1 &
pids+=($!)
$PY -m celery -A config beat --loglevel=INFO -s "$VAR/celerybeat-schedule" >"$VAR"/log/beat.log 2>&1 &
pids+=($!)

echo "web: http://127.0.0.1:${PORT}/"
$PY manage.py runserver "127.0.0.1:${PORT}" &
pids+=($!)
wait -n "${pids[@]}"
