#!/usr/bin/env bash
# The GPU checks of a session that is lent a device (issues "GPU: the cudnn path verified" and
# "CIFAR-10 on a GPU"), as one logged command. Prepare the kit on the CPU machine first:
#
#   KIT_EXTRA_PKGS="pytest==8.3.3 pluggy==1.5.0 iniconfig==2.0.0 packaging==24.1 exceptiongroup==1.2.2 \
#     tomli==2.0.1 hypothesis==6.112.0 attrs==24.2.0 sortedcontainers==2.4.0" bash ../shared/gpu/make-kit.sh
#
# then device runs: (1) carry .gpu/s1: bash .gpu/s1/stage1.sh; (2) carry .gpu/s2:
# bash .gpu/s2/stage2.sh && bash benchmarks/gpu_checks.sh. Logs and BENCHMARKS.md come back in $OUT.
set -uo pipefail
source /tmp/k/env.sh
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c 'import nnabla, nnabla_ext.cuda; print("nnabla", nnabla.__version__, "ext-cuda", nnabla_ext.cuda.__version__)' \
  | tee -a "$OUT/gpu.txt"
# 1. every test that takes a context (ctx), in its cudnn instances (float and half type configs)
$PY -m pytest -q -p no:cacheprovider tests -k cudnn --context cudnn --context cudnn:half \
  > "$OUT/pytest_cudnn.log" 2>&1; echo "pytest rc=$?" | tee -a "$OUT/gpu.txt"
tail -5 "$OUT/pytest_cudnn.log"
# 2. benchmarks (they append to BENCHMARKS.md, copied back)
$PY benchmarks/bench_train_step.py --context cudnn --batch-sizes 128 --steps 20 > "$OUT/bench_train.log" 2>&1
$PY benchmarks/bench_kmeans.py --context cudnn > "$OUT/bench_kmeans.log" 2>&1
tail -8 "$OUT/bench_train.log" "$OUT/bench_kmeans.log"
cp BENCHMARKS.md "$OUT/"
