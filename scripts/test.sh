#!/usr/bin/env bash
# The test command: set-up (idempotent), then the whole suite against real tritonserver processes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --tests
exec "$ROOT/.venv/bin/python" -m pytest "$@"
