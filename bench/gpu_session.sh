#!/usr/bin/env bash
# One GPU session, prepared on a CPU machine and run on the GPU machine in one or two calls
# (issue 14). The GPU machine has no package registry: the pinned pure-Python wheels (and the
# few binary ones for its Python) travel in .whl/, with causal-conv1d's source, patched to build
# for sm_90 only, in .whl/causal-conv1d-src: `bash bench/gpu_wheels.sh` makes .whl/.
#
#   bash bench/gpu_session.sh setup job kernel tests bench350 bench1b   # any subset, in that order
#
#   setup     install the wheels into var/gpu/site, start the kernel build in the background
#   job       the one GPU job command (bench/gpu_job.py) on a random-weight LFM2-350M
#   kernel    wait for the kernel build (every later phase imports it)
#   tests     pytest -m gpu tests/recipes/test_speed_gpu.py
#   bench350  trl vs now: LoRA and DPO on the 350M shape
#   bench1b   trl vs before vs now: full and LoRA on the 1.2B shape
#
# Outputs go to $OUT (the device tool brings them back); var/gpu keeps the wheels, the kernel and
# the logs between calls on a warm machine.
set -uo pipefail
OUT=${OUT:-var/gpu/out}
STATE=$PWD/var/gpu
mkdir -p "$OUT" "$STATE"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTHONPATH=$STATE/kernel:$STATE/site:$PWD

setup() {
  if [ ! -f "$STATE/site/.done" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$STATE/site" .whl/*.whl && touch "$STATE/site/.done" || { echo "wheel install failed"; exit 1; }
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
  python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
  if [ ! -f "$STATE/kernel/.done" ] && [ ! -f "$STATE/kernel.pid" ]; then
    # causal-conv1d: FORCE_BUILD skips its attempt to download a prebuilt wheel (no internet);
    # --no-build-isolation builds against the machine's own torch. Half the cores: the bench runs beside it.
    ( cd .whl/causal-conv1d-src && CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=8 \
        python3 -m pip install -v --no-index --no-deps --no-build-isolation --target "$STATE/kernel" . \
        > "$STATE/kernel_build.log" 2>&1 && touch "$STATE/kernel/.done"; rm -f "$STATE/kernel.pid" ) &
    echo $! > "$STATE/kernel.pid"
    echo "kernel build started at $(date +%T)"
  fi
}

bench() {  # bench <name> <args...>: one bench run, its table and JSON into $OUT
  local name=$1; shift
  timeout "${BENCH_TIMEOUT:-400}" python3 -m bench.recipes_throughput --device cuda --lengths chat \
    --steps 8 --warmup 3 --batch-size 16 --seq-len 2048 --case-timeout 120 \
    --out "$OUT/$name.md" --json "$OUT/$name.json" --logs-dir "$STATE/logs-$name" "$@" > "$STATE/$name.log" 2>&1
  echo "bench $name rc=$?"; tail -n 25 "$STATE/$name.log"
}

job() {
  # The whole job path on the GPU (API + worker on embedded defaults, random-weight LFM2-350M).
  timeout "${JOB_TIMEOUT:-200}" python3 -m bench.gpu_job --device cuda --shape 350m --rows 400 \
    --targets gpu-server --out "$OUT/gpu_job.json" > "$STATE/gpu_job.log" 2>&1
  echo "gpu_job rc=$?"; tail -n 30 "$STATE/gpu_job.log"
}

kernel() {
  for _ in $(seq 1 "${KERNEL_WAIT_S:-240}"); do
    [ -f "$STATE/kernel/.done" ] && break; [ -f "$STATE/kernel.pid" ] || break; sleep 1
  done
  tail -n 3 "$STATE/kernel_build.log"
  python3 -c "import causal_conv1d; print('causal_conv1d', causal_conv1d.__version__)" || echo "no kernel"
}

tests() {
  timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/recipes/test_speed_gpu.py 2>&1 \
    | tee "$OUT/gpu_tests.txt" | tail -n 15
}

bench350() { bench bench350 --shapes 350m --recipes lora_sft,dpo --variants trl,now --budget-s 150; }

bench1b() { bench bench1b --shapes 1.2b --recipes full_sft,lora_sft --variants trl,before,now --budget-s 220; }

for phase in "${@:-setup}"; do
  echo "== $phase $(date +%T)"; "$phase"
done
# The device tool brings back at most 8 files: every log travels in one archive.
tar czf "$OUT/logs.tgz" -C "$STATE" --exclude site --exclude kernel --exclude out . 2>/dev/null
echo "== done $(date +%T)"
