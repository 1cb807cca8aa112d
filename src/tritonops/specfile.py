"""The one loader of tritonops' YAML spec files (build files and ensemble files).

Strict YAML (safe types, a key given twice is refused, merge keys ``<<: *anchor`` allowed), every
mapping remembering the line of each of its keys, and values coerced to typed dataclasses by their
field types (``typing.get_type_hints``): int, float, bool, str, Path, tuples, Literal choices,
Optional, nested dataclasses such as TensorSpec. Errors are UsageErrors naming file:line and field.

Field metadata a dataclass may set (plain dict keys, so spec modules need not import this one):
``key`` (the YAML key, when it differs from the field name), ``minimum`` (for ints), ``example``
(used in hints) and ``convert`` (a ``(value, Where) -> value`` function replacing the type-driven
coercion, for fields whose YAML form is not their Python type)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from tritonops.dtypes import DType, parse_dtype
from tritonops.errors import TritonOpsError, UsageError
from tritonops.paths import read_text
from tritonops.spec import TensorSpec, VersionPolicy

Converter = Callable[[Any, "Where"], Any]


# ---------------------------------------------------------------- strict YAML with lines


class MarkedDict(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}


class MarkedList(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item (1-based)."""

    line: int | None = None
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines = []


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently,
    so a second ``inputs:`` in a step would quietly replace the first)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
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


def _construct_map(loader: _StrictLoader, node: Any) -> Iterable[MarkedDict]:
    data = MarkedDict()
    data.line = node.start_mark.line + 1
    yield data
    data.update(loader.construct_mapping(node))
    for key_node, _ in node.value:  # merged keys included: flatten_mapping has put them in node.value
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, typing.Hashable):
            data.key_lines[key] = key_node.start_mark.line + 1


def _construct_seq(loader: _StrictLoader, node: Any) -> Iterable[MarkedList]:
    data = MarkedList()
    data.line = node.start_mark.line + 1
    yield data
    data.extend(loader.construct_sequence(node))
    data.item_lines = [item.start_mark.line + 1 for item in node.value]


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_StrictLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def merge_mappings(*mappings: Mapping[Any, Any]) -> MarkedDict:
    """Later mappings win, as in ``{**a, **b}``; each key keeps the line of the mapping it came from."""
    merged = MarkedDict()
    for m in mappings:
        merged.update(m)
        merged.key_lines.update(getattr(m, "key_lines", {}))
    return merged


def load_yaml(text: str) -> Any:
    """YAML for tritonops' spec files: safe types only, duplicate keys refused; mappings and lists
    are MarkedDict/MarkedList (equal to plain dicts and lists) carrying their lines."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


YAML_READ_LIMIT = 16 << 20  # a spec file is small; a FIFO or /dev/zero is refused, never read forever


def read_yaml_file(path: Path, what: str) -> Any:
    """A spec file (``what``: "build file", "ensemble file") parsed by ``load_yaml``; a missing
    file or bad YAML is a UsageError naming the file and line."""
    if not os.path.lexists(path):
        raise UsageError(f"{what} '{path}' does not exist", "check the path given with -f")
    text = read_text(path, what, YAML_READ_LIMIT)  # regular files only, bounded, UTF-8
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{where}: invalid YAML: {problem}",
                         "fix the YAML syntax (indentation, colons, quotes)") from None


# ---------------------------------------------------------------- locations


@dataclass(frozen=True)
class Where:
    """A place in a spec file: the file, the line (when known) and the field path
    (``models[0].inputs[1]``). Relative paths in the file are resolved against ``base``."""

    file: Path
    line: int | None = None
    field: str = ""

    @property
    def base(self) -> Path:
        return self.file.parent

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{loc}: {self.field}" if self.field else loc

    def key(self, key: str, mapping: Any = None) -> Where:
        """The place of ``mapping[key]`` (its key's line, when the mapping came from the file)."""
        line = mapping.key_lines.get(key) if isinstance(mapping, MarkedDict) else None
        return Where(self.file, line or self.line, f"{self.field}.{key}" if self.field else key)

    def index(self, i: int, sequence: Any = None) -> Where:
        lines = sequence.item_lines if isinstance(sequence, MarkedList) else []
        line = lines[i] if i < len(lines) else None
        return Where(self.file, line or self.line, f"{self.field}[{i}]")

    def named(self, label: str) -> Where:
        """The same place with a label after the field path (``steps[0] 'tokenizer'``)."""
        return Where(self.file, self.line, f"{self.field} {label}".strip())

    def error(self, problem: str, hint: str | None) -> UsageError:
        return UsageError(f"{self}: {problem}", hint)

    def wrap(self, e: TritonOpsError) -> UsageError:
        """A spec's own validation error (raised at construction) placed in the file."""
        return UsageError(f"{self}: {e.message}", e.hint)


def where_in(file: Path, data: Any) -> Where:
    """The top of a spec file (the line of its top-level mapping)."""
    return Where(file, getattr(data, "line", None))


def unknown_field(where: Where, key: Any, known: Iterable[str]) -> UsageError:
    """``FILE: FIELD: unknown field 'K'`` with the closest known field (or all of them) as the hint.
    The message keeps the form the CLI tests pin, without the line: the hint gives it."""
    names = sorted(known)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(names)}"
    loc = f"{where.file}: {where.field}" if where.field else str(where.file)
    return UsageError(f"{loc}: unknown field '{key}'", f"{hint} (line {where.line})" if where.line else hint)


def check_keys(where: Where, mapping: Mapping[Any, Any], known: Iterable[str]) -> None:
    """Refuse the first key of ``mapping`` that is not in ``known``."""
    known = set(known)
    for k in mapping:
        if k not in known:
            line = mapping.key_lines.get(k) if isinstance(mapping, MarkedDict) else None
            raise unknown_field(Where(where.file, line or where.line, where.field), k, known)


# ---------------------------------------------------------------- coercion by field type


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if hint in names:
        return names[hint]
    return getattr(hint, "__name__", str(hint))


def _version_policy(value: Any, where: Where) -> VersionPolicy:
    if value in ("latest", "all"):
        return VersionPolicy(kind=value)
    if isinstance(value, dict) and set(value) <= {"latest", "all", "specific"} and len(value) == 1:
        (k, v), = value.items()
        if k == "latest":
            return VersionPolicy("latest", num_versions=coerce(v, int, where.key("latest", value)))
        if k == "specific":
            return VersionPolicy("specific", versions=coerce(v, tuple[int, ...], where.key("specific", value)))
        return VersionPolicy("all")
    raise where.error("expected latest, all, {latest: N} or {specific: [..]}", "e.g. version_policy: {latest: 2}")


def _dtype(value: Any, where: Where) -> DType:
    try:
        return parse_dtype(str(value))
    except TritonOpsError as e:
        raise where.wrap(e) from None


def _tensor(value: Any, where: Where) -> TensorSpec:
    if isinstance(value, str):  # NAME:DTYPE:DIMS, as on the command line
        try:
            return TensorSpec.parse(value)
        except TritonOpsError as e:
            raise where.wrap(e) from None
    if not isinstance(value, dict):
        raise where.error("expected NAME:DTYPE:DIMS or a mapping", "see the README's build file example")
    return from_mapping(TensorSpec, value, where, missing_hint="each tensor needs name, dtype and dims")


# Types whose YAML form is not a plain mapping of their fields.
CONVERTERS: dict[Any, Converter] = {VersionPolicy: _version_policy, DType: _dtype, TensorSpec: _tensor}


def coerce(value: Any, hint: Any, where: Where, metadata: Mapping[str, Any] | None = None) -> Any:
    """``value`` (from YAML) as the type ``hint``; a UsageError naming ``where`` if it is not one."""
    meta = metadata or {}
    example = meta.get("example")

    def bad(problem: str | None = None) -> UsageError:
        return where.error(problem or f"expected {_describe(hint)}, got {value!r}",
                           f"e.g. {example}" if example else f"write {_describe(hint)}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return coerce(value, options[0], where, meta)
        for a in options:
            try:
                return coerce(value, a, where, meta)
            except UsageError:
                continue
        raise bad()
    if origin is Literal:
        if value in args:
            return value
        raise where.error(f"'{value}' is not one of: {', '.join(map(str, args))}",
                          f"e.g. {example}" if example else f"use {args[0]}")
    if hint in CONVERTERS:
        return CONVERTERS[hint](value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        minimum = meta.get("minimum")
        if minimum is not None and value < minimum:
            raise where.error(f"expected an integer >= {minimum}, got {value!r}", f"e.g. {max(minimum, 1)}")
        return value
    if hint is float:
        if isinstance(value, bool):
            raise bad()
        try:  # PyYAML reads 1e-4 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise bad() from None
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad()
        return str(value)
    if hint is Path:
        if not isinstance(value, str):
            raise bad()
        return where.base / value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            if typing.get_origin(item) is tuple and isinstance(value, dict):  # pairs, written as a mapping
                return tuple(coerce([k, v], item, where.key(str(k), value)) for k, v in value.items())
            if not isinstance(value, list):
                raise bad()
            return tuple(coerce(v, item, where.index(i, value), meta) for i, v in enumerate(value))
        if not isinstance(value, list) or len(value) != len(args):
            raise bad()
        return tuple(coerce(v, a, where.index(i, value)) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_mapping(hint, value, where)
    raise TypeError(f"spec files cannot express a {hint!r}")  # a tritonops bug: a field type without a rule


def yaml_key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def from_mapping(cls: type[Any], value: Any, where: Where, *, defaults: Mapping[str, Any] | None = None,
                 exclude: Iterable[str] = (), convert: Mapping[str, Converter] | None = None,
                 missing_hint: str | None = None) -> Any:
    """An instance of dataclass ``cls`` from a YAML mapping: unknown keys refused (with the known
    ones), each value coerced by its field's type (or its ``convert``), required fields checked,
    and the dataclass's own validation errors placed in the file. ``defaults`` are field values
    used when the mapping leaves them out; ``exclude`` names fields the file may not set."""
    if not isinstance(value, dict):
        raise where.error("expected a mapping", missing_hint or f"write the fields of {cls.__name__} as a mapping")
    skipped = set(exclude)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init and f.name not in skipped}
    check_keys(where, value, fields)
    hints = typing.get_type_hints(cls)
    converters = dict(convert or {})
    kwargs: dict[str, Any] = dict(defaults or {})
    for k, v in value.items():
        f = fields[k]
        at = where.key(k, value)
        conv = converters.get(f.name) or f.metadata.get("convert")
        kwargs[f.name] = conv(v, at) if conv else coerce(v, hints[f.name], at, f.metadata)
    for k, f in fields.items():
        if (f.name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise where.error(f"missing '{k}'", missing_hint or f"give {k}:")
    try:
        return cls(**kwargs)
    except TritonOpsError as e:
        raise where.wrap(e) from None
