"""Benchmark (issue 11): the same tests, before and after the architecture work, side by side in one run.

Clones the repository at ``--old`` (default 786ef8f, the head when issue 11 was filed: 313 tests, "6 minutes"),
collects its test ids, finds each in this checkout (the same id, or the same test name moved to another file;
tests were kept, so they must be there), then runs, in alternating rounds on the same machine:

- old: the old checkout's whole suite, with the old sources first on PYTHONPATH;
- new: this checkout's suite restricted to exactly those tests, run as the README's test command runs it
  (scripts/test.sh: two pytest-xdist workers, ``--dist loadfile``; ``--workers``);
- new-serial: the same tests in one process, as the old suite ran (what the code changes alone did);
- (with ``--full``) this checkout's whole suite, for the record.

Both use this checkout's virtualenv (the same tritonserver, perf_analyzer and packages). Prints the wall time
of each run, the load average around it, and new/old. The old tree gets an empty ``tritonops/__init__.py``:
it was a namespace package, and without the file this checkout's installed package would shadow it.

    PYTHONPATH=src .venv/bin/python perf/bench_suite.py [--rounds 1] [--old 786ef8f] [--full]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"


def _pytest(cwd: Path, src: Path, args: list[str], log: Path, timeout_s: int = 3600) -> tuple[float, int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    t0 = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.call([str(PY), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                             stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s)
    wall = time.monotonic() - t0
    tail = [line for line in log.read_text().splitlines() if line.strip()][-1:]
    return wall, rc, tail[0] if tail else ""


def _collect(cwd: Path, src: Path) -> list[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    out = subprocess.run([str(PY), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=600, check=False).stdout
    return [line.strip() for line in out.splitlines() if "::" in line]


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--old", default="786ef8f", help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=1, help="alternating old/new rounds")
    ap.add_argument("--full", action="store_true", help="also time this checkout's whole suite once")
    ap.add_argument("--workers", type=int, default=2, help="xdist workers of the new side (scripts/test.sh: 2)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tritonops-suite-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(old)], check=True)
        subprocess.run(["git", "checkout", "-q", a.old], cwd=old, check=True)
        (old / "src" / "tritonops" / "__init__.py").touch(exist_ok=True)
        old_ids = _collect(old, old / "src")
        new_ids = set(_collect(ROOT, ROOT / "src"))
        by_name: dict[str, list[str]] = {}
        for i in new_ids:
            by_name.setdefault(i.split("::", 1)[1], []).append(i)
        chosen, moved, missing = [], [], []
        for i in old_ids:
            if i in new_ids:
                chosen.append(i)
            elif len(by_name.get(i.split("::", 1)[1], [])) == 1:  # the same test, moved to another file
                chosen.append(by_name[i.split("::", 1)[1]][0])
                moved.append(f"{i} -> {chosen[-1]}")
            else:
                missing.append(i)
        print(f"old suite at {a.old}: {len(old_ids)} tests; this checkout: {len(new_ids)} tests; "
              f"moved: {len(moved)}, missing here: {len(missing)}", flush=True)
        for line in moved[:20]:
            print(f"  moved: {line}")
        for i in missing[:20]:
            print(f"  missing: {i}")
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(chosen) + "\n")
        times: dict[str, list[float]] = {"old": [], "new": [], "new-serial": []}
        workers = ["-n", str(a.workers), "--dist", "loadfile"]
        for rnd in range(1, a.rounds + 1):
            for name in ("old", "new", "new-serial"):
                before = _load()
                if name == "old":
                    wall, rc, tail = _pytest(old, old / "src", [], Path(tmp) / f"old{rnd}.log")
                else:
                    args = ["@" + str(ids_file), *(workers if name == "new" else ["-n", "0"])]
                    wall, rc, tail = _pytest(ROOT, ROOT / "src", args, Path(tmp) / f"{name}{rnd}.log")
                times[name].append(wall)
                print(f"round {rnd} {name}: {wall:7.1f} s  rc={rc}  load {before} -> {_load()}  | {tail}", flush=True)
        if a.full:
            before = _load()
            wall, rc, tail = _pytest(ROOT, ROOT / "src", workers, Path(tmp) / "full.log")
            print(f"full suite of this checkout: {wall:7.1f} s  rc={rc}  load {before} -> {_load()}  | {tail}")
        o, n, ns = (statistics.median(times[k]) for k in ("old", "new", "new-serial"))
        print(f"RESULT the {len(old_ids)} tests of {a.old}: old {o:.0f} s, new {n:.0f} s with {a.workers} workers, "
              f"new-serial {ns:.0f} s (median of {a.rounds}); new/old {n / o:.2f} ({1 - n / o:.0%} faster), "
              f"new-serial/old {ns / o:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
