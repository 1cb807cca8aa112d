"""``tritonops build -f tritonops.yaml``: several models from one declarative file.

Every key of a model entry is a ``BuildOptions`` field, coerced by its type through the shared spec
loader (``tritonops.specfile``); unknown keys, wrong types and bad values are reported with the
file, line and field, before anything is converted or written."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tritonops.build import BuildOptions
from tritonops.errors import UsageError
from tritonops.specfile import (
    Converter,
    Where,
    check_keys,
    coerce,
    from_mapping,
    merge_mappings,
    read_yaml_file,
    where_in,
)

_TOP = {"repository", "defaults", "models"}


def resolve_source(value: Any, where: Where) -> str:
    """A model source relative to the spec file: a file beside it, or ``file.py:factory`` beside it;
    anything else (``package.module:factory``) as written."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise where.error(f"expected a model file or module:factory, got {value!r}", "e.g. source: model.onnx")
    src = str(value)
    p = where.base / src
    if p.exists() or src.endswith((".onnx", ".pt", ".pth")):
        return str(p)
    module, sep, func = src.rpartition(":")
    if sep and module.endswith(".py"):
        return f"{where.base / module}:{func}"
    return src


def build_options(entry: Any, where: Where, *, defaults: dict[str, Any] | None = None,
                  exclude: Iterable[str] = (), source: Converter = resolve_source) -> BuildOptions:
    """One BuildOptions from a YAML mapping (a build file's model entry, an ensemble's model step)."""
    return from_mapping(BuildOptions, entry, where, defaults=defaults, exclude=exclude, convert={"source": source},
                        missing_hint="give the model file or module:factory as source:")


def load_build_file(path: Path) -> list[BuildOptions]:
    data = read_yaml_file(path, "build file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with a 'models' list", "see the README's build file example")
    top = where_in(path, data)
    check_keys(top, data, _TOP)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise top.key("models", data).error("expected a non-empty list", "add at least one model under models:")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise top.key("defaults", data).error("expected a mapping", "put shared fields under defaults:")
    shared = {}
    if "repository" in data:
        shared["repository"] = coerce(data["repository"], Path, top.key("repository", data))
    models_at = top.key("models", data)
    result = []
    for i, entry in enumerate(models):
        where = Where(path, models_at.index(i, models).line, f"models[{i}]")
        if not isinstance(entry, dict):
            raise where.error("expected a mapping", "each model is a mapping with at least 'source'")
        result.append(build_options(merge_mappings(defaults, entry), where, defaults=shared))
    return result
