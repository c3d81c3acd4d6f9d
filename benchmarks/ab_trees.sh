#!/bin/bash
# A/B of the label and filter benchmarks between an older revision and the working tree, interleaved, so
# both see the same machine:  benchmarks/ab_trees.sh REV [ROUNDS]
# The older tree is a git worktree in $TMPDIR, imported first through PYTHONPATH (the benchmark scripts are
# this tree's, run from outside the checkout so that the current folder does not shadow PYTHONPATH).
set -euo pipefail
REV=${1:?usage: benchmarks/ab_trees.sh REV [ROUNDS]}
ROUNDS=${2:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OLD=${TMPDIR:-/tmp}/gpu_tiler-ab-$(git -C "$HERE" rev-parse --short "$REV")
[ -d "$OLD" ] || git -C "$HERE" worktree add -q "$OLD" "$REV"
PY="$HERE/.venv/bin/python"
cd "${TMPDIR:-/tmp}"
for round in $(seq "$ROUNDS"); do
  for tree in before after; do
    if [ $tree = before ]; then export PYTHONPATH="$OLD"; else unset PYTHONPATH; fi
    echo "=== round $round, $tree ($($PY -c 'import gpu_tiler; print(gpu_tiler.__file__)'))"
    "$PY" "$HERE/benchmarks/label.py" --only 4096^2 --skip-dask-image --skip-mergers --repeats 3 \
        --workdir "${TMPDIR:-/tmp}/gpu_tiler-ab-label-$tree" | grep -v '^\s*$'
    "$PY" "$HERE/benchmarks/filters.py" --repeats 3
  done
done
