#!/usr/bin/env bash
# One CIFAR-10 training slice on the GPU machine (issue "CIFAR-10 on a GPU"), as one logged
# command; the whole loop is in examples/cifar10/README.md ("Training in GPU slices"). On a fresh
# machine, after the kit (see gpu_checks.sh): (1) carry .gpu/s1: bash .gpu/s1/stage1.sh;
# (2) carry .gpu/s2: bash .gpu/s2/stage2.sh; (3) carry .gpu/data and the runs folder:
#
#   RECIPE=cosine30 CONFIGS=float,lutq4-pow2,lutq2-pow2 PARALLEL=3 DEADLINE_S=420 \
#     bash benchmarks/gpu_cifar_slice.sh                      # timeout_s: DEADLINE_S + 120
#
# It starts or resumes the runs of RUNS/RECIPE, stops them at DEADLINE_S (checkpoints), and
# writes to $OUT: slice.log (GPU, slice, status, pack), gpu_util.csv (nvidia-smi every 5 s) and
# runs.tar.gz.part-NN (the runs this slice changed + slices.jsonl; no caches). Back home:
#   python -m examples.cifar10.slices unpack --runs examples/cifar10/runs/gpu FILES_AT
# Exit status: 0, 1 (a run failed; see slice.log), 2 (no data), 3 (pack failed: nothing comes back).
set -uo pipefail
source "${KIT_ENV:-/tmp/k/env.sh}"
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
RUNS=${RUNS:-examples/cifar10/runs/gpu}; RECIPE=${RECIPE:-cosine30}
CONFIGS=${CONFIGS:-float,lutq4-pow2,lutq2-pow2}; PARALLEL=${PARALLEL:-3}
DEADLINE_S=${DEADLINE_S:-420}; DATA=${DATA:-.gpu/data/cifar10-jpeg.tar.gz}
CONTEXT=${CONTEXT:-cudnn}; EXTRA=${EXTRA:-}
export NNABLA_LUTQ_CACHE=${NNABLA_LUTQ_CACHE:-/tmp/nnabla_lutq_cache}  # outside the repo
LOG="$OUT/slice.log"
if [ ! -f "$DATA" ]; then
  echo "no $DATA: carry .gpu/data (make-kit.sh --with-cifar10)" | tee "$LOG"; exit 2
fi
mkdir -p "$RUNS"
{ echo "== $(date -Is) $(hostname); runs $RUNS ($(du -sh "$RUNS" | cut -f1)), recipe $RECIPE," \
    "configs $CONFIGS, parallel $PARALLEL, deadline $DEADLINE_S s, extra '$EXTRA'"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; fi
} 2>&1 | tee "$LOG"
SMI=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
    > "$OUT/gpu_util.csv" 2>&1 & SMI=$!
fi
# shellcheck disable=SC2086  # EXTRA holds several train.py flags
$PY -m examples.cifar10.slices run --runs "$RUNS" --recipe "$RECIPE" --configs "$CONFIGS" \
  --parallel "$PARALLEL" --deadline-s "$DEADLINE_S" --context "$CONTEXT" --data-dir "$DATA" \
  $EXTRA 2>&1 | grep -v '\[nnabla\]\[INFO\]' | tee -a "$LOG"
rc=${PIPESTATUS[0]}
[ -n "$SMI" ] && kill "$SMI" 2>/dev/null
{ echo "== status"; $PY -m examples.cifar10.slices status --runs "$RUNS"; echo "== pack"; } 2>&1 \
  | grep -v '\[nnabla\]\[INFO\]' | tee -a "$LOG"
$PY -m examples.cifar10.slices pack --runs "$RUNS" --output "$OUT" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || rc=3  # nothing of the runs comes back: see the log
echo "slice rc=$rc (0 ok, 1 a run failed, 3 pack failed)" | tee -a "$LOG"
exit "$rc"
