#!/usr/bin/env bash
# The test command: set-up (idempotent), then the whole suite against real tritonserver processes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --tests
# Two workers, each test file in one of them (--dist loadfile: a module's fixtures, its server among
# them, are not duplicated). A suite run spends about half its time waiting on servers and load tools,
# so two workers on two cores take about 0.6 of a serial run's time (perf/RESULTS.md). A worker count
# given here (-n 0 for a serial run) wins over TRITONOPS_TEST_WORKERS (default 2).
workers=(-n "${TRITONOPS_TEST_WORKERS:-2}" --dist loadfile)
for arg in "$@"; do case "$arg" in -n*|--numprocesses*) workers=() ;; esac; done
exec "$ROOT/.venv/bin/python" -m pytest "${workers[@]}" "$@"
