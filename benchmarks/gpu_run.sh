#!/bin/bash
# The GPU tables of issues 5 and 7 (attribution_speed_cuda.md, serving_cuda.md) and issue 15's QLoRA check
# (qlora_cuda.md: the estimate's peak GPU memory and time per epoch against measurement; it also needs
# bitsandbytes, which `pip install --no-deps bitsandbytes==0.50.2` adds when the machine lacks it), on a machine that has
# torch, transformers, peft and safetensors but no package index and no MiniLM package. Prepare, here:
#   mkdir -p .devcarry/minilm && cp ../shared/data/financial_phrasebank.csv .devcarry/
#   copy MiniLM's *.json and vocab.txt into .devcarry/minilm/ and its model.safetensors, cast to fp16
#   (to stay under the 64 MiB a device call carries), as .devcarry/minilm/model.f16.safetensors;
#   echo /.devcarry/ >> .git/info/exclude; cp benchmarks/gpu_run.sh .devcarry/run.sh
# then run `bash .devcarry/run.sh` there with .devcarry carried. The weights are cast back to fp32 first.
set -u
# Each benchmark runs its cases on the harness (own process per case, interleaved); REPEATS (default 2) keeps
# the whole script inside a short device lease.
PY=${PY:-python3}
OUT=${OUT:-/tmp/devout}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD BENCH_RESULTS_DIR=$OUT PHRASEBANK=$PWD/.devcarry/financial_phrasebank.csv
export MINILM_PATH=/tmp/minilm BENCH_TMP=/tmp HF_HUB_OFFLINE=1
mkdir -p /tmp/minilm && cp .devcarry/minilm/*.json .devcarry/minilm/*.txt /tmp/minilm/
$PY - <<'P'
from safetensors.torch import load_file, save_file
sd = load_file(".devcarry/minilm/model.f16.safetensors")
save_file({k: v.float().contiguous() for k, v in sd.items()}, "/tmp/minilm/model.safetensors")
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
P
nvidia-smi -L 2>/dev/null
timeout ${T1:-200} $PY benchmarks/attribution_speed.py ${QUICK:-} --repeats ${REPEATS:-2} 2>&1 | tee $OUT/attribution_speed.log | grep -v "Warning\|Some weights\|TRAIN this"
timeout ${T2:-300} $PY benchmarks/serving.py ${QUICK:-} --repeats ${REPEATS:-2} 2>&1 | tee $OUT/serving.log | grep -v "Warning\|Some weights\|TRAIN this"
$PY -c "import bitsandbytes" 2>/dev/null || echo "no bitsandbytes here: the QLoRA rows will say so"
timeout ${T3:-420} $PY benchmarks/qlora.py ${QUICK:-} 2>&1 | tee $OUT/qlora.log | grep -v "Warning\|Some weights"
ls -la $OUT
