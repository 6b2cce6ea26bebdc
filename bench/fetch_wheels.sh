#!/usr/bin/env bash
# Wheels for bench/gpu_check.sh on a GPU machine without network: the packages an image with torch and Lightning
# usually lacks. Run here (registry reachable) with the venv that has deepspeed's build needs (torch):
#   bash bench/fetch_wheels.sh [python-version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
mkdir -p .whl
plat=(--python-version "$PYV" --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: "${plat[@]}" -d .whl hydra-core==1.3.8 omegaconf==2.3.1 \
  submitit==1.5.4 hjson pydantic pydantic-core annotated-types typing-inspection typing_extensions
# antlr4 4.9.3 and deepspeed publish source only: build pure-Python wheels (deepspeed compiles its ops on first use)
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary=:all: -d "$tmp" antlr4-python3-runtime==4.9.3 deepspeed==0.19.8
DS_BUILD_OPS=0 .venv/bin/pip wheel -q --no-deps --no-build-isolation -w .whl "$tmp"/*.tar.gz
rm -rf "$tmp"
ls .whl
