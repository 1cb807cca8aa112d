"""The one spec loader (tritonops.specfile) behind build files and ensemble files: strict YAML with
lines, type-driven coercion, errors naming file:line and field. Messages are asserted exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tritonops.buildfile import load_build_file
from tritonops.ensemblefile import load_ensemble_file
from tritonops.errors import UsageError
from tritonops.spec import TensorSpec, VersionPolicy
from tritonops.specfile import Where, coerce, from_mapping, load_yaml

PIPE = Path(__file__).parent / "fixtures" / "ensembles" / "pipe"


@dataclass(frozen=True)
class Sample:
    name: str
    count: int = field(default=1, metadata={"minimum": 1})
    ratio: float = 0.5
    enabled: bool = False
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = ()
    pair: tuple[float, float] | None = field(default=None, metadata={"key": "range"})
    where: Path = Path()
    tensors: tuple[TensorSpec, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    policy: VersionPolicy | None = None


def load(text: str, tmp_path: Path) -> Sample:
    f = tmp_path / "spec.yaml"
    f.write_text(text)
    data = load_yaml(text)
    return from_mapping(Sample, data, Where(f, data.line))


def error(text: str, tmp_path: Path) -> tuple[str, str | None]:
    with pytest.raises(UsageError) as e:
        load(text, tmp_path)
    return e.value.message.replace(str(tmp_path / "spec.yaml"), "F"), e.value.hint


def test_mappings_and_lists_remember_lines_and_compare_as_plain_values():
    data = load_yaml("a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert data == {"a": 1, "b": ["x", {"c": 2}]}
    assert data.key_lines == {"a": 1, "b": 2} and data["b"].item_lines == [3, 4]
    assert data["b"][1].key_lines == {"c": 4}


def test_values_are_coerced_by_field_type(tmp_path):
    s = load("name: m\ncount: 3\nratio: 1e-4\nenabled: true\nmode: b\nsizes: [4, 8]\nrange: [0, 9]\nwhere: sub\n"
             "tensors:\n  - x:FP32:3\n  - {name: ids, dtype: INT64, dims: [-1], range: [1, 5]}\n"
             "params: {k: 1}\npolicy: {latest: 2}\n", tmp_path)
    assert (s.name, s.count, s.ratio, s.enabled, s.mode) == ("m", 3, 1e-4, True, "b")
    assert (s.sizes, s.pair) == ((4, 8), (0.0, 9.0))
    assert s.where == tmp_path / "sub"
    assert [t.describe() for t in s.tensors] == ["x:FP32:[3]", "ids:INT64:[-1]"]
    assert s.tensors[1].value_range == (1.0, 5.0)
    assert s.params == (("k", "1"),) and s.policy == VersionPolicy("latest", 2)


@pytest.mark.parametrize(("text", "message"), [
    ("name: m\ncount: many\n", "F:2: count: expected an integer, got 'many'"),
    ("name: m\ncount: 0\n", "F:2: count: expected an integer >= 1, got 0"),
    ("name: m\nenabled: 1\n", "F:2: enabled: expected true or false, got 1"),
    ("name: m\n\nmode: c\n", "F:3: mode: 'c' is not one of: a, b"),
    ("name: m\nsizes: 4\n", "F:2: sizes: expected a list of an integer, got 4"),
    ("name: m\nsizes: [4, x]\n", "F:2: sizes[1]: expected an integer, got 'x'"),
    ("name: m\nrange: [1]\n", "F:2: range: expected a list of 2 (a number, a number), got [1]"),
    ("name: m\ntensors:\n  - {name: x}\n", "F:3: tensors[0]: missing 'dtype'"),
    ("name: m\ntensors:\n  - x:FP32\n", "F:3: tensors[0]: cannot parse tensor spec 'x:FP32'"),
    ("name: m\ntensors:\n  - {name: x, dtype: FP128}\n", "F:3: tensors[0].dtype: unknown data type 'FP128'"),
    ("name: m\ntensors:\n  - {name: x, dtype: FP32, dims: [0]}\n", "F:3: tensors[0]: tensor 'x' has dimension 0"),
    ("name: m\npolicy: newest\n", "F:2: policy: expected latest, all, {latest: N} or {specific: [..]}"),
    ("count: 2\n", "F:1: missing 'name'"),
])
def test_errors_name_file_line_and_field(tmp_path, text, message):
    assert error(text, tmp_path)[0] == message


def test_unknown_field_lists_the_close_one_and_the_line(tmp_path):
    assert error("name: m\n\ncuont: 2\n", tmp_path) == ("F: unknown field 'cuont'", "did you mean 'count'? (line 3)")
    message, hint = error("name: m\nzzz: 2\n", tmp_path)
    assert message == "F: unknown field 'zzz'"
    # the YAML keys ('range', not the field name 'pair'), and the line
    assert hint == "known fields: count, enabled, mode, name, params, policy, range, ratio, sizes, tensors, where " \
                   "(line 2)"


def test_float_from_int_and_str_field_from_number():
    w = Where(Path("f.yaml"), 1, "x")
    assert coerce(3, float, w) == 3.0 and coerce(7, str, w) == "7"
    with pytest.raises(UsageError, match=r"^f.yaml:1: x: expected a number, got True$"):
        coerce(True, float, w)


def test_build_file_errors_carry_lines(tmp_path):
    f = tmp_path / "tritonops.yaml"
    f.write_text("models:\n  - source: m.onnx\n    kind: tpu\n")
    with pytest.raises(UsageError) as e:
        load_build_file(f)
    assert e.value.message == f"{f}:3: models[0].kind: 'tpu' is not one of: cpu, gpu, auto"
    f.write_text("defaults:\n  instances: 2\nmodels:\n  - source: m.onnx\n    instances: two\n")
    with pytest.raises(UsageError) as e:
        load_build_file(f)
    assert e.value.message == f"{f}:5: models[0].instances: expected an integer, got 'two'"
    f.write_text("defaults:\n  threads: 0\nmodels:\n  - source: m.onnx\n")  # refused by BuildOptions itself
    with pytest.raises(UsageError) as e:
        load_build_file(f)
    assert e.value.message == f"{f}:4: models[0]: --threads 0 is not positive"


def test_build_file_defaults_repository_and_sources(tmp_path):
    f = tmp_path / "tritonops.yaml"
    f.write_text("repository: repo\ndefaults: &d {threads: 2, atol: 1.0e-3}\nmodels:\n"
                 "  - {source: a.onnx, name: a}\n  - {<<: *d, source: 'f.py:make', threads: 1, repository: other}\n")
    a, b = load_build_file(f)
    assert (a.source, a.repository, a.threads, a.atol) == (str(tmp_path / "a.onnx"), tmp_path / "repo", 2, 1e-3)
    assert (b.source, b.repository, b.threads) == (f"{tmp_path / 'f.py'}:make", tmp_path / "other", 1)


def test_ensemble_file_errors_carry_lines(tmp_path):
    (tmp_path / "steps.py").write_text((PIPE / "steps.py").read_text())
    text = (PIPE / "ensemble.yaml").read_text()
    f = tmp_path / "ensemble.yaml"
    line = text.splitlines().index("    python: steps.py:double") + 1
    f.write_text(text.replace("    python: steps.py:double\n", "    python: steps.py:double\n    instances: 0\n"))
    with pytest.raises(UsageError) as e:
        load_ensemble_file(f)
    assert e.value.message == f"{f}:{line + 1}: steps[0] 'double'.instances: expected an integer >= 1, got 0"
    f.write_text(text.replace("    python: steps.py:total\n", "    python: steps.py:total\n    ragged: wide\n"))
    with pytest.raises(UsageError) as e:
        load_ensemble_file(f)
    assert e.value.message.startswith(f"{f}:") and "steps[1] 'total'.ragged: 'wide' is not one of: group, pad" \
        in e.value.message
    f.write_text(text.replace("python: steps.py:double", "python: steps.py:dbl!"))
    with pytest.raises(UsageError) as e:
        load_ensemble_file(f)
    assert e.value.message == f"{f}:{line}: steps[0] 'double'.python: 'dbl!' is not a function name"


def test_ensemble_model_step_is_a_build_entry(tmp_path):
    (tmp_path / "steps.py").write_text((PIPE / "steps.py").read_text())
    f = tmp_path / "ensemble.yaml"
    f.write_text("ensemble: e\nmax_batch_size: 4\ninputs: [x:FP32:4]\noutputs: [y]\nsteps:\n"
                 "  - name: m\n    model: {source: m.onnx, threads: 1}\n    inputs: [x]\n    outputs: [y]\n")
    (step,) = load_ensemble_file(f).steps
    opts = step.options
    assert (opts.name, opts.max_batch_size, opts.threads, opts.source) == ("e_m", 4, 1, str(tmp_path / "m.onnx"))
    assert step.input_map == (("x", "x"),)
    f.write_text(f.read_text().replace("threads: 1", "name: other"))
    with pytest.raises(UsageError) as e:
        load_ensemble_file(f)
    assert e.value.message == f"{f}: steps[0] 'm'.model: unknown field 'name'"


def test_sequence_fields_of_a_build_entry_coerce_by_type(tmp_path):
    """controls/states are pairs: a mapping or a list of [a, b]; strategy a Literal; samples a path
    relative to the file. Wrong values name file, line and field."""
    f = tmp_path / "tritonops.yaml"
    f.write_text("models:\n"
                 "  - source: acc.onnx\n"
                 "    sequence: oldest\n"
                 "    controls: [[START, START], [CORRID, CORRID]]\n"
                 "    states: {STATE_IN: STATE_OUT}\n"
                 "    max_candidate_sequences: 4\n"
                 "    samples: data/steps.npz\n")
    (opts,) = load_build_file(f)
    assert opts.sequence == "oldest" and opts.max_candidate_sequences == 4
    assert opts.controls == (("START", "START"), ("CORRID", "CORRID"))
    assert opts.states == (("STATE_IN", "STATE_OUT"),)
    assert opts.samples == tmp_path / "data" / "steps.npz"
    for body, message in [
        ("    sequence: sideways\n",
         r"tritonops.yaml:3: models\[0\].sequence: 'sideways' is not one of: direct, oldest"),
        ("    sequence: direct\n    controls: [START]\n", r"tritonops.yaml:4: models\[0\].controls\[0\]: expected"),
        ("    states: {STATE_IN: STATE_OUT}\n", r"tritonops.yaml:2: models\[0\]: control, state and sequence options "
                                               "need sequence batching"),
    ]:
        f.write_text("models:\n  - source: acc.onnx\n" + body)
        with pytest.raises(UsageError, match=message):
            load_build_file(f)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_batch_size", "4.7", "models[0].max_batch_size: expected an integer, got 4.7"),
    ("instances", '"8"', "models[0].instances: expected an integer, got '8'"),
])
def test_build_file_numbers_are_not_coerced_silently(tmp_path, field, value, message):
    """Issue 14 item 11: 4.7 used to become 4 and "8" to become 8."""
    from tritonops.buildfile import load_build_file

    path = tmp_path / "tritonops.yaml"
    path.write_text(f"models:\n  - source: model.onnx\n    {field}: {value}\n")
    with pytest.raises(UsageError) as e:
        load_build_file(path)
    assert e.value.message == f"{path}:3: {message}"
