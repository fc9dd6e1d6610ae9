#!/usr/bin/env bash
# A vLLM server for the causal-LM adapters of one base, on a GPU machine (docs/serving.md, "vLLM on a GPU").
#   VLLM_BASE="shakespeare-chat (Llama)" make vllm      # a catalog name or id; or VLLM_BASE_PATH=/path/to/folder
# then run the app with SERVING_VLLM_URL=http://127.0.0.1:${VLLM_PORT:-8100}. Adapters are loaded on demand
# by the app, from the same paths, so vLLM must run where MODELS_DIR is readable.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${VLLM_PORT:-8100}
if [[ -z "${VLLM_BASE_PATH:-}" ]]; then
  : "${VLLM_BASE:?set VLLM_BASE to a catalog base model (name or id), or VLLM_BASE_PATH to its folder}"
  VLLM_BASE_PATH=$(.venv/bin/python manage.py base_model_path "$VLLM_BASE")
fi
command -v nvidia-smi >/dev/null || { echo "vllm: no NVIDIA GPU here; the built-in engine serves (CPU)"; exit 1; }
test -x .venv-vllm/bin/vllm || { python3 -m venv .venv-vllm && .venv-vllm/bin/pip install -q -r requirements-vllm.txt; }
export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True  # the app loads adapters through /v1/load_lora_adapter
echo "vllm: serving $VLLM_BASE_PATH on :$PORT; start the app with SERVING_VLLM_URL=http://127.0.0.1:$PORT"
exec .venv-vllm/bin/vllm serve "$VLLM_BASE_PATH" --host 127.0.0.1 --port "$PORT" --enable-lora \
  --max-loras "${VLLM_MAX_LORAS:-8}" --max-lora-rank "${VLLM_MAX_LORA_RANK:-64}" --max-cpu-loras "${VLLM_MAX_CPU_LORAS:-100}"
