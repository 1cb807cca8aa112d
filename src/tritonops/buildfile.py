"""``tritonops build -f tritonops.yaml``: several models from one declarative file.

Every key maps to a ``BuildOptions`` field; unknown keys, wrong types and bad values are reported
with the file and the field, before anything is converted or written."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from tritonops.build import BuildOptions
from tritonops.dtypes import parse_dtype
from tritonops.errors import TritonOpsError, UsageError
from tritonops.spec import TensorSpec, VersionPolicy

_FIELDS = {f.name: f for f in dataclasses.fields(BuildOptions)}
_TOP = {"repository", "defaults", "models"}
_TENSOR_KEYS = {"name", "dtype", "dims", "range", "optional", "allow_ragged_batch", "reshape"}


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently,
    so a second ``inputs:`` in a step would quietly replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor': its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first given on line {first})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """YAML for tritonops' spec files: safe types only, duplicate keys refused."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: Path, what: str) -> Any:
    """A spec file (``what``: "build file", "ensemble file") parsed by ``load_yaml``; a missing
    file or bad YAML is a UsageError naming the file and line."""
    if not path.exists():
        raise UsageError(f"{what} '{path}' does not exist", "check the path given with -f")
    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{where}: invalid YAML: {problem}",
                         "fix the YAML syntax (indentation, colons, quotes)") from None


def _unknown(where: str, key: str, known: typing.Iterable[str]) -> UsageError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(sorted(known))}"
    return UsageError(f"{where}: unknown field '{key}'", hint)


def _tensor(where: str, value: Any) -> TensorSpec:
    if isinstance(value, str):
        return TensorSpec.parse(value)
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected NAME:DTYPE:DIMS or a mapping", "see the README's build file example")
    for k in value:
        if k not in _TENSOR_KEYS:
            raise _unknown(where, k, _TENSOR_KEYS)
    for req in ("name", "dtype"):
        if req not in value:
            raise UsageError(f"{where}: missing '{req}'", "each tensor needs name, dtype and dims")
    rng = value.get("range")
    if rng is not None and (not isinstance(rng, list) or len(rng) != 2):
        raise UsageError(f"{where}.range: expected [low, high]", "e.g. range: [0, 30521]")
    reshape = value.get("reshape")
    return TensorSpec(
        name=str(value["name"]),
        dtype=parse_dtype(str(value["dtype"])),
        dims=tuple(int(d) for d in value.get("dims", [])),
        reshape=tuple(int(d) for d in reshape) if reshape is not None else None,
        optional=bool(value.get("optional", False)),
        allow_ragged_batch=bool(value.get("allow_ragged_batch", False)),
        value_range=(float(rng[0]), float(rng[1])) if rng else None,
    )


def _convert(where: str, key: str, value: Any, base: Path) -> Any:
    if key == "inputs":
        if not isinstance(value, list):
            raise UsageError(f"{where}.inputs: expected a list", "list one tensor per input")
        return tuple(_tensor(f"{where}.inputs[{i}]", v) for i, v in enumerate(value))
    if key == "outputs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}.outputs: expected a list of output names", "e.g. outputs: [logits]")
        return tuple(value)
    if key in ("preferred_batch_sizes", "gpus"):
        if not isinstance(value, list):
            raise UsageError(f"{where}.{key}: expected a list of integers", f"e.g. {key}: [4, 8]")
        return tuple(int(v) for v in value)
    if key == "parameters":
        if not isinstance(value, dict):
            raise UsageError(f"{where}.parameters: expected a mapping", "e.g. parameters: {intra_op_thread_count: '1'}")
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    if key == "version_policy":
        if value in ("latest", "all"):
            return VersionPolicy(kind=value)
        if isinstance(value, dict) and set(value) <= {"latest", "all", "specific"} and len(value) == 1:
            (k, v), = value.items()
            if k == "latest":
                return VersionPolicy("latest", num_versions=int(v))
            if k == "specific":
                return VersionPolicy("specific", versions=tuple(int(x) for x in v))
            return VersionPolicy("all")
        raise UsageError(f"{where}.version_policy: expected latest, all, {{latest: N}} or {{specific: [..]}}",
                         "e.g. version_policy: {latest: 2}")
    if key == "source":
        src = str(value)
        p = base / src
        if p.exists() or src.endswith((".onnx", ".pt", ".pth")):
            return str(p)
        module, sep, func = src.rpartition(":")
        if sep and module.endswith(".py"):
            return f"{base / module}:{func}"
        return src
    if key == "repository":
        return base / str(value)
    expected = _FIELDS[key].type
    text = str(expected)
    try:
        if "bool" in text and "int" not in text:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if "float" in text:
            return float(value)
        if "int" in text:
            if isinstance(value, bool) or (value is None and "None" not in text):
                raise TypeError
            return None if value is None else int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}.{key}: invalid value {value!r}", f"expected {text}") from None
    return value


def load_build_file(path: Path) -> list[BuildOptions]:
    data = read_yaml_file(path, "build file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with a 'models' list", "see the README's build file example")
    for k in data:
        if k not in _TOP:
            raise _unknown(str(path), k, _TOP)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise UsageError(f"{path}: 'models' must be a non-empty list", "add at least one model under models:")
    base = path.parent
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: defaults: expected a mapping", "put shared fields under defaults:")
    result = []
    for i, entry in enumerate(models):
        where = f"{path}: models[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected a mapping", "each model is a mapping with at least 'source'")
        merged = {**defaults, **entry}
        if "repository" in data and "repository" not in merged:
            merged["repository"] = data["repository"]
        kwargs: dict[str, Any] = {}
        for key, value in merged.items():
            if key not in _FIELDS:
                raise _unknown(where, key, _FIELDS)
            kwargs[key] = _convert(where, key, value, base)
        if "source" not in kwargs:
            raise UsageError(f"{where}: missing 'source'", "give the model file or module:factory as source:")
        try:
            result.append(BuildOptions(**kwargs))
        except TritonOpsError as e:
            raise UsageError(f"{where}: {e.message}", e.hint) from None
    return result
