"""tritonops.compare: the one comparison of model outputs (verify, validate, the deploy canary)."""

from __future__ import annotations

import numpy as np
import pytest

from tritonops.compare import compare_arrays, compare_outputs, error_table, format_error, format_tolerance


def test_floats_within_and_outside_tolerance():
    want = np.array([1.0, 2.0, 1000.0], np.float32)
    close = compare_arrays(want * np.float32(1.0005), want, atol=1e-6, rtol=1e-3, name="y")
    assert close.ok and close.kind == "match" and close.mode == "float"
    assert close.max_abs == pytest.approx(0.5, rel=1e-3) and close.max_rel == pytest.approx(5e-4, rel=1e-2)
    far = compare_arrays(want + np.float32(0.031), want, atol=1e-4, rtol=0.0, name="y")
    assert not far.ok and far.kind == "tolerance" and far.n_bad == 3 and far.size == 3
    assert far.problem == "output 'y': 3 of 3 values outside tolerance"
    assert format_error(far.max_abs) == "3.1e-02"


def test_atol_plus_rtol_times_expected():
    want = np.array([100.0])
    assert compare_arrays(np.array([100.19]), want, atol=0.1, rtol=1e-3).ok  # 0.19 <= 0.1 + 0.1
    assert not compare_arrays(np.array([100.25]), want, atol=0.1, rtol=1e-3).ok


def test_nonfinite_values_must_sit_at_the_same_positions():
    a = np.array([np.nan, np.inf, -np.inf, 1.0])
    same = compare_arrays(a.copy(), a, 0, 0)
    assert same.ok and same.max_abs == 0.0
    moved = compare_arrays(a[::-1].copy(), a, 1e9, 1e9, name="o")
    assert not moved.ok and moved.kind == "nonfinite" and moved.n_bad == 4
    assert "non-finite" in moved.problem
    signs = compare_arrays(-a, a, 1e9, 0)
    assert not signs.ok and signs.kind == "nonfinite" and signs.n_bad == 2  # +inf/-inf swapped; nan stays nan
    inf_vs_finite = compare_arrays(np.array([1.0]), np.array([np.inf]), 0, 1.0)
    assert not inf_vs_finite.ok and inf_vs_finite.kind == "nonfinite"


def test_shapes_and_types():
    d = compare_arrays(np.zeros((3, 2), np.float32), np.zeros((3, 3), np.float32), 1, 1, name="y")
    assert not d.ok and d.kind == "shape" and d.max_abs is None and d.max_error is None
    assert d.problem == "output 'y' has shape [3, 2], expected [3, 3]"
    t = compare_arrays(np.zeros(3, np.float16), np.zeros(3, np.float32), 1, 1, name="y", check_dtype=True)
    assert not t.ok and t.kind == "dtype" and t.problem == "output 'y' has type FP16, expected FP32"
    assert compare_arrays(np.zeros(3, np.float16), np.zeros(3, np.float32), 1, 1).ok  # types only on request


def test_integers_and_bool_compare_exactly():
    want = np.array([1000, 5, 7], np.int64)
    assert compare_arrays(want.astype(np.int32), want, 0, 0).ok
    off = compare_arrays(np.array([1001, 5, 9], np.int64), want, atol=1e-4, rtol=1e-2)
    assert not off.ok and off.mode == "exact" and off.n_bad == 2 and off.max_abs == 2.0
    flags = compare_arrays(np.array([True, False]), np.array([True, True]), 0, 0, name="f")
    assert not flags.ok and flags.kind == "unequal" and flags.problem == "output 'f' differs in 1 of 2 values"


def test_strings_and_bytes():
    want = np.array([b"ab", b"c"], dtype=np.object_)
    same = compare_arrays(want.copy(), want, 0, 0)
    assert same.ok and same.mode == "strings" and same.max_error == 0.0
    other = compare_arrays(np.array([b"ab", b"x"], dtype=np.object_), want, 0, 0, name="s")
    assert not other.ok and other.n_bad == 1 and other.max_abs is None and other.max_error == 1.0
    assert other.problem == "output 's' differs in 1 of 2 values"
    assert not compare_arrays(np.array(["ab", "c"], dtype=np.object_), want, 0, 0).ok  # str is not bytes
    empty = compare_arrays(np.empty((0, 2), np.object_), np.empty((0, 2), np.object_), 0, 0)
    assert empty.ok and empty.size == 0


def test_empty_numeric_arrays_match():
    d = compare_arrays(np.empty((0, 3), np.float32), np.empty((0, 3), np.float32), 0, 0)
    assert d.ok and d.max_abs == 0.0


def test_compare_outputs_is_the_per_output_table():
    want = {"a": np.array([1.0, 2.0]), "b": np.array([b"x"], dtype=np.object_), "c": np.zeros(2)}
    got = {"a": np.array([1.0, 2.5]), "b": want["b"].copy()}
    diffs = compare_outputs(got, want, atol=1e-3, rtol=0)
    assert [(d.name, d.ok, d.kind) for d in diffs] == [("a", False, "tolerance"), ("b", True, "match"),
                                                       ("c", False, "missing")]
    assert diffs[2].problem == "output 'c' is missing"
    lines = error_table(diffs).splitlines()
    assert lines[0].split() == ["output", "max_abs", "max_rel", "status"]
    assert lines[1].split()[:4] == ["a", "5.0e-01", "2.5e-01", "FAIL:"]
    assert lines[2].split() == ["b", "0.0e+00", "0.0e+00", "ok"]
    assert lines[3].split()[:3] == ["c", "-", "-"]
    assert diffs[0].to_dict()["max_abs"] == 0.5


def test_tolerance_text():
    assert format_tolerance(1e-4) == "1e-04" and format_tolerance(2.5e-4) == "2.5e-04"
    assert format_error(None) == "-" and format_error(float("nan")) == "nan"
