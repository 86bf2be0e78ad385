#!/usr/bin/env bash
# The GPU checks in one call of the device machine (about 9.5 minutes).
#
#   bash benchmarks/gpu_session.sh          # on a machine with one GPU, repo root
#   TINY=1 bash benchmarks/gpu_session.sh   # the same steps on a CPU, in a minute
#
# 1. The GPU cost table: benchmarks.gpu_step_time (ResNet-18, batch 256);
#    STEP_DEADLINE (default 150) counts from its start, tracing and compiling
#    included (about 70 s on an H200), so 60 leaves no time for a repetition.
# 2. The GPU study preset: experiments.study gpu_resnet18 (ResNet-18 4-bit,
#    full CIFAR-10) with as many epochs as the time left fits. The epoch count
#    is sized from step 1's AdamW step and forward pass (a QAT step at batch
#    128 assumed to cost a float step at batch 256; 8 forward passes for the
#    paper's preset; a 1.2x margin); the study stops cleanly between epochs
#    before the budget, and its results are tarred.
#
# Environment: BUDGET_S (seconds for both steps, default 560), OUT (where the
# log, the cost table and study.tar.gz go), STUDY_DIR (the study's results
# and checkpoints, default /tmp/gpu_session_study), SADAM_CIFAR10 (the
# CIFAR-10 JPEG archive; default .gpu_data/cifar10-jpg.tar.xz, a git-ignored
# copy carried to the device machine), TINY=1 (tiny settings on a CPU),
# EPOCHS (the study's epochs instead of the sized count) and REUSE=1 (start
# the study from the committed runs in experiments/results/study/gpu_resnet18,
# so that only runs missing there train; with EPOCHS=7 that is the 0.3
# default's arm and its control, 4 runs):
#
#   EPOCHS=7 REUSE=1 bash benchmarks/gpu_session.sh
#
# Results come back in $OUT: unpack study.tar.gz into experiments/results/study/
# and copy step_time_resnet18_gpu.* into benchmarks/results/.
set -uo pipefail
start=$(date +%s)
budget=${BUDGET_S:-560}
out=${OUT:-/tmp/gpu_session}
study_dir=${STUDY_DIR:-/tmp/gpu_session_study}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export SADAM_CACHE=${SADAM_CACHE:-/tmp/sadam_cache}
export SADAM_CIFAR10=${SADAM_CIFAR10:-$PWD/.gpu_data/cifar10-jpg.tar.xz}
tiny=()
if [[ -n ${TINY:-} ]]; then
  tiny=(--tiny)
  export SADAM_STEP_LOOP=scan # The accelerator's code path.
fi
log=$out/session.log
left() { echo $((budget - $(date +%s) + start)); }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__,
    "optax", optax.__version__, jax.devices())'
} 2>&1 | tee "$log"

echo "== step 1: cost table ($(left) s left)" | tee -a "$log"
timeout $(($(left) / 2)) python3 -m benchmarks.gpu_step_time "${tiny[@]}" \
  --deadline "${STEP_DEADLINE:-150}" --out-dir "$out" 2>&1 | tee -a "$log"

echo "== step 2: study gpu_resnet18 ($(left) s left)" | tee -a "$log"
epochs=$(
  python3 - "$out" "$(left)" "${TINY:-}" <<'EOF'
import glob, json, sys
out, left, tiny = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if tiny:
  print(1)
  sys.exit()
rows = {r['name']: r for r in json.load(open(glob.glob(f'{out}/step_time_*.json')[0]))['rows']}
adamw = rows['adamw']['ms_per_step'] / 1e3
forward = max(rows['adamw+forward']['ms_per_step'] / 1e3 - adamw, 0.25 * adamw)
compile_s = max(r['compile_s'] or 0 for r in rows.values())
steps, evals = 351, 15000 / 256  # 45,000 / 128 steps; validation + test forwards.
# Two seeds of: AdamW and the three effective-lr controls, the default and
# the 0.2 default (one forward each), the paper's preset (8 forwards).
epoch = 2 * (steps * (7 * adamw + 10 * forward) + 7 * evals * forward)
fit = int((left - 4 * compile_s - 60) / (1.2 * epoch))
print(f'epoch of all 14 runs ~{epoch:.0f} s, compile ~{compile_s:.0f} s: {fit} epochs fit',
      file=sys.stderr)
print(max(1, min(10, fit)))
EOF
)
epochs=${EPOCHS:-$epochs}
echo "epochs: $epochs" | tee -a "$log"
if [[ -n ${REUSE:-} ]]; then
  mkdir -p "$study_dir/results"
  cp -r experiments/results/study/gpu_resnet18 "$study_dir/results/"
fi
rem=$(left)
timeout $((rem - 10)) python3 -m experiments.study gpu_resnet18 "${tiny[@]}" --epochs "$epochs" \
  --max-minutes "$(python3 -c "print(max(($rem - 40) / 60, 0.5))")" \
  --results-root "$study_dir/results" --ckpt-root "$study_dir/ckpt" 2>&1 | tee -a "$log"
tar czf "$out/study.tar.gz" -C "$study_dir/results" .
echo "== done in $(($(date +%s) - start)) s" | tee -a "$log"
