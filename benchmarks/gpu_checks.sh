#!/usr/bin/env bash
# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
# The GPU checks and benchmarks of nnabla-lutq, most valuable first, on any machine with an NVIDIA
# GPU and a Python environment that has nnabla, a matching nnabla-ext-cuda and this package with
# its test extras (pip install -e '.[test]'). From the repository root:
#
#   bash benchmarks/gpu_checks.sh
#   PYTHON=.venv/bin/python LOGS=/tmp/lutq-gpu T_TESTS=0 bash benchmarks/gpu_checks.sh
#
# 1. the fused k-means kernels on the device against the numpy model and the host step
#    (tests/test_kmeans_fused.py --context cudnn), and under CUDA's memory checker where the
#    machine has compute-sanitizer;
# 2. the k-means step, the ResNet-20 batch-128 and ResNet-50 224 px batch-64 training steps
#    (float vs LUT-Q, `graph` and `fused` k-means backends): each adds its record to
#    benchmarks/results/ and writes BENCHMARKS.md again;
# 3. every test that takes a context, in its cudnn instances (float and half); T_TESTS=0 skips it.
#
# Each step's output goes to LOGS/<step>.log (default: a folder under /tmp) and one line per step
# to LOGS/summary.txt. A step that runs longer than STEP_TIMEOUT seconds (default 1800) is
# stopped, so a hung kernel cannot block the rest. Exit status: the number of failed steps.
set -uo pipefail
PY=${PYTHON:-python}
LOGS=${LOGS:-${TMPDIR:-/tmp}/nnabla_lutq_gpu_checks}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
T_TESTS=${T_TESTS:-1}
mkdir -p "$LOGS"
cd "$(dirname "$0")/.." || exit 1
failed=0
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvidia-smi | grep -o 'CUDA Version: [0-9.]*'
  $PY -c 'import nnabla, nnabla_ext.cuda; print("nnabla", nnabla.__version__, "ext-cuda", nnabla_ext.cuda.__version__)'
} 2>&1 | tee "$LOGS/summary.txt"
step() {  # step NAME CMD...: run with the step time limit, log to LOGS/NAME.log
  local name=$1; shift
  local t0=$SECONDS rc
  timeout "$STEP_TIMEOUT" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || failed=$((failed + 1))
  echo "$name rc=$rc took $((SECONDS - t0)) s" | tee -a "$LOGS/summary.txt"
  tail -4 "$LOGS/$name.log"
}
# 1. (NNABLA_LUTQ_FUSED_SYNC=1: synchronize after each launch, so a fault names its kernel)
NNABLA_LUTQ_FUSED_SYNC=1 step pytest_fused $PY -m pytest -q -p no:cacheprovider \
  tests/test_kmeans_fused.py --context cudnn
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
  step sanitizer "$SAN" --tool memcheck --error-exitcode 9 $PY -m pytest -q -p no:cacheprovider \
    tests/test_kmeans_fused.py -k device --context cudnn
fi
# 2.
step bench_kmeans $PY benchmarks/bench_kmeans.py --context cudnn --repeat 5
step bench_train $PY benchmarks/bench_train_step.py --context cudnn --batch-sizes 128 --steps 20 \
  --backends graph fused
step bench_resnet50 $PY benchmarks/bench_imagenet_step.py --context cudnn --archs resnet50 \
  --batch-size 64 --image-size 224 --steps 5 --configs lutq4 --backends graph fused
# 3.
if [ "$T_TESTS" != 0 ]; then
  step pytest_cudnn $PY -m pytest -q -p no:cacheprovider tests -k cudnn --context cudnn \
    --context cudnn:half
fi
echo "failed steps: $failed; logs in $LOGS" | tee -a "$LOGS/summary.txt"
exit "$failed"
