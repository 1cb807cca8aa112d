#!/usr/bin/env bash
# The main job on the shipped example: set-up (idempotent), then build -> check -> serve + validate
# over HTTP and gRPC -> a short perf run, printing results as it goes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
T="$ROOT/.venv/bin/tritonops"
REPO="${TRITONOPS_DEMO_REPO:-$ROOT/model_repository}"

echo "== 1. build: export the real all-MiniLM-L6-v2 encoder to ONNX, verify it against PyTorch"
"$T" build -f examples/minilm/tritonops.yaml
echo "== 2. check: static checks of the repository, as Triton would apply them"
"$T" check "$REPO"
if "$T" validate --help >/dev/null 2>&1; then
  echo "== 3. serve + validate: a real tritonserver on 127.0.0.1, HTTP JSON / HTTP binary / gRPC vs a local reference"
  "$T" validate "$REPO" --serve
fi
if "$T" perf --help >/dev/null 2>&1; then
  echo "== 4. perf: a short perf_analyzer concurrency sweep over gRPC"
  "$T" perf minilm --serve "$REPO" --concurrency 1:4:3 --measurement-interval 2000 --out "$ROOT/out/perf"
fi
