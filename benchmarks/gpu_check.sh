#!/usr/bin/env bash
# The prepared GPU check: run on a GPU machine that has no network, from the repository root.
#   benchmarks/gpu_check.sh OUTDIR
# 1. installs the wheels `make gpu-wheels` put in .gpu-wheels/ (offline) into a venv that sees the
#    machine's own CuPy/NumPy/SciPy; 2. runs the `gpu`-marked tests; 3. runs the GPU benchmarks.
# Logs and figures go to OUTDIR. Each step has its own time limit (install 3 min at most, tests 200 s,
# each benchmark 80 s: 3 benchmarks), so the whole stays under 8 minutes.
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-/tmp/gpu_tiler-gpu-venv}
status=0

echo "==> GPU check starting $(date -u +%FT%TZ)" | tee "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$OUT/summary.txt"

echo "==> venv $VENV (system site packages visible) + offline wheels from .gpu-wheels" | tee -a "$OUT/summary.txt"
"$PY" -m venv --system-site-packages "$VENV" >"$OUT/install.log" 2>&1
timeout 120 "$VENV/bin/python" -m pip install --no-index --find-links .gpu-wheels \
    "dask[array]" zarr psutil tqdm hypothesis >>"$OUT/install.log" 2>&1 || { echo "install failed (see install.log)" | tee -a "$OUT/summary.txt"; status=1; }
timeout 60 "$VENV/bin/python" -m pip install --no-index --no-deps --find-links .gpu-wheels cucim-cu13 \
    >>"$OUT/install.log" 2>&1 || echo "(cuCIM not installed: no cucim-cu13 wheel carried)" | tee -a "$OUT/summary.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$VENV/bin/python" - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import gpu_tiler as gt
from gpu_tiler._backends import cupy_problem
print("cupy problem:", cupy_problem())
for d in gt.devices():
    print("device:", d)
PY

echo "==> gpu-marked tests" | tee -a "$OUT/summary.txt"
timeout 200 "$VENV/bin/python" -m pytest -m gpu -p no:cacheprovider -q -rs \
    --junitxml="$OUT/gpu-tests.xml" >"$OUT/gpu-tests.log" 2>&1
rc=$?
tail -n 5 "$OUT/gpu-tests.log" | tee -a "$OUT/summary.txt"
[ $rc -eq 0 ] || status=1

for bench in benchmarks/gpu_*.py; do
    echo "==> $bench" | tee -a "$OUT/summary.txt"
    timeout 80 "$VENV/bin/python" "$bench" --out "$OUT" >"$OUT/$(basename "$bench" .py).log" 2>&1 || status=1
    cat "$OUT/$(basename "$bench" .py).log" | tee -a "$OUT/summary.txt"
done
echo "==> GPU check finished $(date -u +%FT%TZ), status $status" | tee -a "$OUT/summary.txt"
exit $status
