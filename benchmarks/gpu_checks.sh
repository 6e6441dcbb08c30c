#!/usr/bin/env bash
# The GPU checks of a session that is lent a device (issue "GPU: the cudnn path verified"), as one
# logged command, most valuable first (the whole plan: docs/gpu-session.md). Prepare the kit on the
# CPU machine first:
#
#   KIT_EXTRA_PKGS="pytest==8.3.3 pluggy==1.5.0 iniconfig==2.0.0 packaging==24.1 exceptiongroup==1.2.2 \
#     tomli==2.0.1 hypothesis==6.112.0 attrs==24.2.0 sortedcontainers==2.4.0" bash ../shared/gpu/make-kit.sh
#
# then device runs: (1) carry .gpu/s1: bash .gpu/s1/stage1.sh; (2) carry .gpu/s2:
# bash .gpu/s2/stage2.sh && bash benchmarks/gpu_checks.sh. Logs and BENCHMARKS.md come back in $OUT.
# Each stage has its own time limit, so a slow one cannot take the others' time; together they stay
# under the device's 600 s per command (stage2 included). T_TESTS=0 skips the broad cudnn test lane.
set -uo pipefail
source /tmp/k/env.sh
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
T_TESTS=${T_TESTS:-90}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvidia-smi | grep -o 'CUDA Version: [0-9.]*'
  $PY -c 'import nnabla, nnabla_ext.cuda; print("nnabla", nnabla.__version__, "ext-cuda", nnabla_ext.cuda.__version__)'
} 2>&1 | tee "$OUT/gpu.txt"
stage() {  # stage NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? ${limit}s-limit took $((SECONDS - t0))s" | tee -a "$OUT/gpu.txt"
  tail -4 "$OUT/$name.log"
}
# 1. the fused kernels on the device against the numpy model and the host step
# (NNABLA_LUTQ_FUSED_SYNC=1: synchronize after each launch, so a fault names its kernel)
NNABLA_LUTQ_FUSED_SYNC=1 stage pytest_fused 90 $PY -m pytest -q -p no:cacheprovider \
  tests/test_kmeans_fused.py --context cudnn
# 2. k-means step alone, then training steps (float vs LUT-Q with each device backend)
stage bench_kmeans 80 $PY benchmarks/bench_kmeans.py --context cudnn --repeat 5
stage bench_train 100 $PY benchmarks/bench_train_step.py --context cudnn --batch-sizes 128 --steps 20 \
  --backends graph fused
stage bench_resnet50 120 $PY benchmarks/bench_imagenet_step.py --context cudnn --archs resnet50 \
  --batch-size 64 --image-size 224 --steps 5 --configs lutq4 --backends graph fused
cp BENCHMARKS.md "$OUT/"
# the kernels under CUDA's memory checker, where the machine has it
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
[ -n "$SAN" ] && stage sanitizer 60 "$SAN" --tool memcheck --error-exitcode 9 $PY -m pytest -q \
  -p no:cacheprovider tests/test_kmeans_fused.py -k device --context cudnn
# 3. every test that takes a context (ctx), in its cudnn instances (float and half type configs)
[ "$T_TESTS" -gt 0 ] && stage pytest_cudnn "$T_TESTS" $PY -m pytest -q -p no:cacheprovider tests -k cudnn --context cudnn \
  --context cudnn:half
