"""Report pieces without a server: findings derived from numbers, SVG charts, rendering in Chromium."""

from __future__ import annotations

from pathlib import Path

from report_check import render_check
from tritonops.perf.analyzer import PerfRow
from tritonops.perf.findings import Cell, derive_findings
from tritonops.perf.report import Section, Table, render_report, write_report
from tritonops.perf.svg import Series, bar_chart, line_chart, nice_ticks


def cell(protocol, rate, p99, rng, achieved_vs_scheduled=1.0, errors=0, req=100, resp=80):
    outcome = "kept-up" if errors == 0 and achieved_vs_scheduled >= 0.97 else "fell-behind"
    return Cell(protocol=protocol, rate=rate, runs=3, achieved_rate=rate * achieved_vs_scheduled,
                achieved_ratio=achieved_vs_scheduled, achieved_vs_scheduled=achieved_vs_scheduled, errors=errors,
                p50_ms=p99 / 2, p90_ms=p99 * 0.8, p99_ms=p99, p50_range=(rng[0] / 2, rng[1] / 2), p99_range=rng,
                achieved_range=(rate, rate), request_bytes=req, response_bytes=resp, model="m", outcome=outcome,
                outcomes={outcome: 3})


def test_findings_follow_the_numbers():
    cells = [
        cell("http-json", 25, 3.0, (2.8, 3.3)), cell("http-binary", 25, 2.5, (2.3, 2.7)),
        cell("grpc", 25, 1.5, (1.4, 1.6)),
        cell("http-json", 50, 3.2, (3.0, 3.5)), cell("http-binary", 50, 2.6, (2.4, 2.8)),
        cell("grpc", 50, 1.7, (1.5, 1.9)),
        cell("http-json", 100, 4.0, (3.0, 6.0)), cell("http-binary", 100, 3.5, (2.0, 5.0)),
        cell("grpc", 100, 3.0, (2.2, 4.4)),
        cell("http-json", 200, 7.0, (6.5, 7.5)), cell("http-binary", 200, 5.0, (4.0, 6.0)),
        cell("grpc", 200, 90.0, (80.0, 99.0), achieved_vs_scheduled=0.8, errors=12),
    ]
    payloads = {"http-json": (205, 163), "http-binary": (169, 146), "grpc": (43, 37)}
    conc = {"grpc": (PerfRow("concurrency", 4, 1, "grpc", "ok", throughput=1100.0),),
            "http-binary": (PerfRow("concurrency", 4, 1, "http", "ok", throughput=1000.0),
                            PerfRow("concurrency", 8, 1, "http", "unstable")),
            "http-json": (PerfRow("concurrency", 4, 1, "http", "failed", note="perf_analyzer exited with code 99"),)}
    f = derive_findings(cells, {"m": conc}, {"m": payloads}, repeats=3)
    assert f == [
        "At 25–50 req/s, gRPC has the lowest p99 latency, and its range over 3 repeats does not overlap the others' "
        "(p99 ms — 25/s: gRPC 1.50, HTTP binary 2.50, HTTP JSON 3.00; 50/s: gRPC 1.70, HTTP binary 2.60, "
        "HTTP JSON 3.20).",
        "At 100 req/s, gRPC has the lowest median p99, but the ranges over 3 repeat(s) overlap: no clear winner "
        "(p99 ms — 100/s: gRPC 3.00, HTTP binary 3.50, HTTP JSON 4.00).",
        "At 200 req/s, HTTP binary has the lowest p99 latency, and its range over 3 repeats does not overlap the "
        "others' (p99 ms — 200/s: HTTP binary 5.00, HTTP JSON 7.00).",
        "gRPC fell behind from 200 req/s: it achieved 160/s (80% of the schedule, 12 errors).",
        "Highest offered rate kept up (open loop): HTTP JSON 200 req/s, HTTP binary 200 req/s, gRPC 100 req/s.",
        "Request size on the wire: HTTP JSON 205 B, HTTP binary 169 B, gRPC 43 B; responses: HTTP JSON 163 B, "
        "HTTP binary 146 B, gRPC 37 B. gRPC is the most compact.",
        "JSON tensors make HTTP requests 1.21× the size of the binary tensor extension.",
        "perf_analyzer could not measure HTTP JSON at concurrency 4: perf_analyzer exited with code 99.",
        "Closed-loop peak throughput with perf_analyzer's C++ client: gRPC 1100/s (concurrency 4), "
        "HTTP binary 1000/s (concurrency 4).",
        "gRPC leads the next protocol by 10% at peak; client and server share the cores, so this includes the "
        "client's cost of each protocol.",
    ]


def test_nice_ticks():
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.3, 1.7) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def _report(tmp_path: Path, figures: tuple[str, ...]) -> Path:
    html = render_report("t <escaped>", "sub", ["a finding & more"], [
        Section("s", ("text",), figures, (Table(("a", "b"), (("1", "2"),), "cap"),))], {"k": "v"})
    assert "t &lt;escaped&gt;" in html and "a finding &amp; more" in html
    return write_report(tmp_path / "r.html", html)


def test_plots_render_in_headless_chromium(tmp_path):
    lines = line_chart("latency", "λ", "ms", [Series("a", [1, 2, 3], [1.0, 2.0, 4.0], lo=[0.5, 1.5, 3.0],
                                                     hi=[1.5, 2.5, 5.0]), Series("b", [1, 2, 3], [2.0, None, 3.0])],
                       log_y=True)
    bars = bar_chart("bytes", "B", ["x", "y"], [("req", [10, 20]), ("resp", [5, 8])])
    plots = render_check(_report(tmp_path, (lines, bars)), tmp_path)
    assert [p["label"] for p in plots] == ["latency", "bytes"]
    for p in plots:
        assert p["width"] >= 600 and p["height"] >= 300
        assert p["marks"] > 0 and p["drawn"] == p["marks"]
        assert p["colored"] > 1000, p  # lines, points and bars, not just the legend
    assert plots[0]["marks"] == 2 + 5  # two paths, five points (the None is skipped)


def test_render_check_sees_a_blank_plot(tmp_path):
    # The check has teeth: a plot whose series have no values draws axes but no coloured marks.
    blank = line_chart("empty", "x", "y", [Series("a", [1, 2], [None, None])])
    (plot,) = render_check(_report(tmp_path, (blank,)), tmp_path)
    assert plot["marks"] == 0 and plot["colored"] < 200 and plot["ink"] > 1000  # legend swatch, black axes
