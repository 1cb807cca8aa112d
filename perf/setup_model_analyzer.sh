#!/usr/bin/env bash
# Model Analyzer 1.58 in its own virtualenv (it pulls tritonclient 2.73 and numpy 2, which must not
# enter the project's venv). perf/bench_tune.py runs this when the venv is missing.
#   bash perf/setup_model_analyzer.sh [VENV]      # default: $MA_VENV or /work/ma-venv
set -euo pipefail
venv="${1:-${MA_VENV:-/work/ma-venv}}"
if [ -x "$venv/bin/model-analyzer" ]; then
  echo "Model Analyzer already installed in $venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "triton-model-analyzer==1.58.0"
"$venv/bin/model-analyzer" --help >/dev/null
echo "Model Analyzer 1.58.0 installed in $venv"
