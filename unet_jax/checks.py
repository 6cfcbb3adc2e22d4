"""Shared argument checks and the one error type for invalid input (``InvalidInputError``).

Public functions check their arguments once, at entry, with these helpers; validated config values and internal
callees are trusted. The CLI turns ``InvalidInputError`` into one line and exit code 2; any other exception is a
bug and keeps its traceback.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np

__all__ = ["InvalidInputError", "integer", "real", "boolean", "one_of", "array", "same_shape"]


class InvalidInputError(ValueError):
    """A value, array, file content or setting the user can fix; the message says what was expected."""


def integer(name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as an int in [low, high] (either bound may be None); bools are not integers."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or (low is not None and value < low) or (high is not None and value > high):
        raise InvalidInputError(f"{name} must be an integer{_bounds(low, high)}, got {value!r}")
    return int(value)


def real(name: str, value, low: Optional[float] = None, high: Optional[float] = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the interval [low, high] (``*_open``: that end excluded)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        interval = ("" if low is None and high is None else
                    f" in {'(' if low_open else '['}{'-inf' if low is None else low}, "
                    f"{'inf' if high is None else high}{')' if high_open else ']'}")
        raise InvalidInputError(f"{name} must be a finite number{interval}, got {value!r}")
    return float(value)


def boolean(name: str, value) -> bool:
    """``value`` as a bool (Python or NumPy bool only: 0/1 and strings are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def one_of(name: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``."""
    if value not in tuple(choices):
        raise InvalidInputError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def array(name: str, value, ndim=None, kind: Optional[str] = None) -> np.ndarray:
    """``value`` as a NumPy array of ``ndim`` dimensions (an int or a tuple of allowed ones) whose dtype kind is in
    ``kind`` (NumPy kind letters: 'f' float, 'iu' integers, 'b' bool, 'biuf' any number)."""
    a = np.asarray(value)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and a.ndim not in dims:
        raise InvalidInputError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {a.shape}")
    if kind is not None and a.dtype.kind not in kind:
        raise InvalidInputError(f"{name} must be of a {_KINDS.get(kind, kind)} dtype, got {a.dtype}")
    return a


def same_shape(name_a: str, a, name_b: str, b) -> None:
    """``a`` and ``b`` have the same shape."""
    if np.shape(a) != np.shape(b):
        raise InvalidInputError(f"{name_a} and {name_b} must have the same shape, got {np.shape(a)} and "
                                f"{np.shape(b)}")


_KINDS = {"f": "floating", "iu": "integer", "b": "bool", "biu": "integer or bool", "biuf": "numeric", "iuf": "numeric"}


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    return f" >= {low}" if low is not None else (f" <= {high}" if high is not None else "")
