#!/usr/bin/env bash
# Idempotent set-up used by both README commands: system packages, the virtual environment, the
# project with its extras, and the real tritonserver (shipped inside the nvidia-pytriton wheel).
# Re-runs are cheap: the pip step is skipped while pyproject.toml is unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITONOPS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
# perf_analyzer (from tritonclient 2.50) links libb64.so.0d.
ldconfig -p 2>/dev/null | grep -q 'libb64.so.0d' || need_apt+=(libb64-0d)
# The Python backend stub needs the running Python's shared libpython.
libdir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
ldlib="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY"))')"
if [ ! -e "$libdir/$ldlib" ] && ! ldconfig -p 2>/dev/null | grep -q "libpython3\.[0-9]*\.so"; then
  need_apt+=("lib$("$PYTHON" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')")
fi
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# The test suite opens generated HTML reports in headless Chromium (scripts/test.sh passes --tests).
if [ "${1:-}" = "--tests" ] && ! command -v chromium >/dev/null 2>&1; then need_apt+=(chromium); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tritonops setup: installing system packages: ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "tritonops setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

stamp="$VENV/.tritonops-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "tritonops setup: installing Python packages (first run takes a few minutes)"
  # torch first and pinned: anything that pulls an unpinned torch would download GBs of CUDA builds.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e "$ROOT[torch,perf,examples,dev]"
  echo "$want" > "$stamp"
fi
"$VENV/bin/tritonops" doctor --quiet
