"""Numbers and sizes given on the command line or in files: one validator for every numeric option
(finite, in its range, the option's name in the message), one parser for number lists and ranges, and
one size parser."""

from __future__ import annotations

import math
import re

from tritonops.errors import UsageError

INT64_MAX = (1 << 63) - 1  # what Triton parses a number into; anything above it crashes or wraps
MAX_POINTS = 200  # a sweep longer than this is a typo, not a plan


def _shown(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(low: float | None, high: float | None, low_open: bool) -> str:
    if low is not None and high is not None:
        return f"{'>' if low_open else '>='} {_shown(low)} and <= {_shown(high)}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_shown(low)}"
    return f"<= {_shown(high)}" if high is not None else "a finite number"


def check_number(value: float, flag: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False, hint: str | None = None) -> float:
    """``value`` if it is a finite number within [``low``, ``high``] (``low_open``: ``low`` itself is
    excluded), else a ``UsageError`` naming ``flag``. Integers are checked against int64 as well, the
    largest number Triton and its clients parse.

    Every numeric option goes through here (the CLI's option callbacks, the options objects'
    ``__post_init__``), so ``nan``, ``inf``, ``1e9`` requests/s or a negative count get the same answer."""
    wanted = "an integer" if integer else "a number"
    how = f"use {flag} N with N {_bounds(low, high, low_open)}" if (low, high) != (None, None) else \
        f"give {flag} {wanted}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{flag} {value!r} is not {wanted}", hint or how)
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{flag} {_shown(value)} is not a finite number", hint or how)
    if integer and value != int(value):
        raise UsageError(f"{flag} {_shown(value)} is not an integer", hint or how)
    if integer and abs(value) > INT64_MAX:
        raise UsageError(f"{flag} {_shown(value)} is too large (more than 64 bits)", hint or how)
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(f"{flag} {_shown(value)} is {'not above' if low_open else 'below'} {_shown(low)}",
                         hint or how)
    if high is not None and value > high:
        raise UsageError(f"{flag} {_shown(value)} is above the maximum {_shown(high)}", hint or how)
    return value


def parse_number(text: str, flag: str, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> float:
    """``text`` as an int (``integer``) or a float, then ``check_number``. ``UsageError`` naming ``flag``."""
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        raise UsageError(f"{flag} '{text}' is not {'an integer' if integer else 'a number'}",
                         f"give {flag} {'an integer' if integer else 'a number'}") from None
    return check_number(value, flag, low=low, high=high, low_open=low_open, integer=integer)


def parse_values(text: str, flag: str, *, integer: bool, high: float | None = None,
                 allow_list: bool = True) -> tuple[float, ...]:
    """A sweep: a comma list (``1,2,4,8``) or ``START[:END[:STEP]]`` (perf_analyzer's syntax, END
    included). Every value is positive and finite, at most ``high``; at most ``MAX_POINTS`` values."""
    example = "1:8:2" if integer else "10:50:10"
    within = f"use positive finite values{'' if high is None else f' up to {_shown(high)}'}"
    if ":" in text or not allow_list:
        parts = text.split(":")
        if not 1 <= len(parts) <= 3:
            raise UsageError(f"cannot parse {flag} '{text}'", f"write START[:END[:STEP]], e.g. {flag} {example}")
        try:
            nums = [float(int(p)) if integer else float(p) for p in parts]
        except ValueError:
            raise UsageError(f"cannot parse {flag} '{text}'",
                             f"write START[:END[:STEP]], e.g. {flag} {example}") from None
        for n in nums:
            check_number(n, flag, low=0, low_open=True, high=high, hint=within)
        start = nums[0]
        end = nums[1] if len(nums) > 1 else start
        step = nums[2] if len(nums) > 2 else 1.0
        if end < start:
            raise UsageError(f"{flag} '{text}' is empty or not positive",
                             "use positive values with START <= END and STEP > 0")
        count = int((end - start) / step + 1e-9) + 1
        if count > MAX_POINTS:
            raise UsageError(f"{flag} '{text}' has {count} points", f"use a larger STEP (at most {MAX_POINTS} points)")
        values = tuple(start + i * step for i in range(count))
    else:
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items:
            raise UsageError(f"{flag} '{text}' needs positive values",
                             f"e.g. {flag} {'1,2,4,8' if integer else '25,50'}")
        example = "1,2,4,8" if integer else "25,50,100"
        try:
            values = tuple(float(int(v)) if integer else float(v) for v in items)
        except ValueError:
            raise UsageError(f"cannot parse {flag} '{text}'",
                             f"write a comma list or START:END:STEP, e.g. {flag} {example}") from None
        if any(v <= 0 for v in values):
            raise UsageError(f"{flag} '{text}' needs positive values", f"e.g. {flag} {example}")
        for v in values:
            check_number(v, flag, high=high, hint=within)
        if len(values) > MAX_POINTS:
            raise UsageError(f"{flag} has {len(values)} values", f"give at most {MAX_POINTS}")
    return tuple(int(v) for v in values) if integer else values


def parse_size(text: str) -> int:
    """``4MB``, ``64MiB``, ``512k``, ``1048576`` -> bytes (at most int64)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", text.lower())
    if not m:
        raise UsageError(f"cannot parse size '{text}'", "write it as bytes or with a unit, e.g. 4MB or 64MiB")
    unit = m.group(2).rstrip("b").rstrip("i")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    size = int(float(m.group(1)) * scale)
    if size > INT64_MAX:
        raise UsageError(f"size '{text}' is too large", "write it as bytes or with a unit, e.g. 4MB or 64MiB")
    return size
