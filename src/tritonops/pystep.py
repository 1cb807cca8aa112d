"""User step functions of python ensemble steps: import a ``steps.py``, find a function, call it on a
dict of numpy arrays. The same code runs a step at build time (signature inference), in the
in-process reference and, through the generated model, in the server."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tritonops.errors import ModelError, UsageError


def load_module(path: Path, tag: str) -> ModuleType:
    """Import a user's steps.py under a private module name (the same way the generated model does)."""
    mod_name = f"_tritonops_steps_{tag}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}", "check that it is a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise ModelError(f"importing {path} failed: {type(e).__name__}: {e}",
                         "fix the error in the steps module") from None
    return module


def step_function(module: ModuleType, function: str, where: str) -> Callable[..., Any]:
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UsageError(f"{where}: '{function}' is not a function in {module.__file__}",
                         f"define def {function}(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]")
    return fn


def wants_resources(fn: Callable[..., Any]) -> bool:
    try:
        return "resources" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_step(fn: Callable[..., Any], function: str, inputs: dict[str, np.ndarray],
              resources: Path | None) -> dict[str, np.ndarray]:
    try:
        result = fn(inputs, resources=resources) if wants_resources(fn) else fn(inputs)
    except Exception as e:
        raise ModelError(f"step function '{function}' raised {type(e).__name__}: {e}",
                         "fix the function; it is called with a dict of numpy arrays (batch first)") from None
    if not isinstance(result, dict):
        raise ModelError(f"step function '{function}' returned {type(result).__name__}, not a dict",
                         "return a dict of output name -> numpy array")
    return {k: as_array(v) for k, v in result.items()}


def as_array(v: Any) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind == "U":
        a = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(a) if a.size else a.astype(object)
    elif a.dtype.kind == "S":
        a = a.astype(object)
    return a
