"""Response-cache checks: the statistics extension and Prometheus metrics of a model."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from tritonops.reference import (
    ModelUnderTest,
)
from tritonops.validate.run import ValidationRun


def cache_counts(run: ValidationRun, name: str) -> tuple[int, int, int] | None:
    """(inference successes, cache hits, cache misses) from the statistics extension; None if unavailable."""
    try:
        return run.clients.inference_counts(name)
    except Exception:
        return None


def _metric_hits(run: ValidationRun, name: str) -> int | None:
    url = run.options.metrics_url
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    total = None
    pattern = re.compile(r'^nv_cache_num_hits_per_model\{([^}]*)\}\s+([0-9.eE+]+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if m and f'model="{name}"' in m.group(1):
            total = (total or 0) + int(float(m.group(2)))
    return total


def cache_check(run: ValidationRun, model: ModelUnderTest, before: tuple[int, int, int] | None) -> None:
    if not model.config.response_cache.enable:
        return
    name = model.name
    after = cache_counts(run, name)
    if before is None or after is None:
        run.add(name, "response cache", "-", "skip", "the server's statistics are unavailable")
        return
    hits, misses = after[1] - before[1], after[2] - before[2]
    metric = _metric_hits(run, name)
    from_metrics = f"; metrics: nv_cache_num_hits_per_model {metric}" if metric is not None else ""
    if hits > 0:
        run.add(name, "response cache", "-", "pass",
                f"{hits} hits, {misses} misses for repeated identical requests{from_metrics}")
    elif misses == 0:
        run.add(name, "response cache", "-", "skip",
                "the model enables response_cache but the server has no cache (no hits or misses recorded)",
                hint="start the server with a cache: tritonops serve --cache-size 64MB (--cache-config local,size=N)")
    else:
        run.add(name, "response cache", "-", "fail",
                f"identical requests were never served from the cache ({misses} misses, 0 hits){from_metrics}",
                hint="check the cache size (entries larger than the cache are not stored) and the server log")
