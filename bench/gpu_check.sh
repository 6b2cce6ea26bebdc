#!/usr/bin/env bash
# The GPU check of issue 5, one command, no network: throughput vs a hand-written loop and a smoke member per
# strategy. Run from the repo root on a GPU machine:   bash bench/gpu_check.sh [args of bench/gpu_check.py]
#
# Issue 14 added an end-to-end case: SimCLR ResNet-50 224 px from a folder of 2,048 generated 256-px JPEGs with
# data.pipeline=gpu (workers decode, views built on the GPU) against the device-resident ceiling, with the machine's
# CPU utilisation and peak GPU memory (--folder-images 0 skips it). No GPU was lent to the session that wrote it, so
# it has not been run yet.
#
# It uses the machine's own torch and Lightning. Packages the machine lacks (hydra-core, omegaconf, submitit,
# deepspeed, ...) are installed from wheels in .whl/ (fetch them beforehand with bench/fetch_wheels.sh on a machine
# that has the package registry) into a private folder, never into the system site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
missing=$($PY - <<'PY'
import importlib.util
need = ["hydra", "omegaconf", "submitit", "lightning", "deepspeed", "rich"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "error: this machine lacks: $missing; put their wheels in .whl/ (bash bench/fetch_wheels.sh) and rerun" >&2
    exit 2
  fi
  echo "installing from .whl/ for: $missing"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/orchestra-site .whl/*.whl
  export PYTHONPATH=/tmp/orchestra-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec $PY bench/gpu_check.py "$@"
