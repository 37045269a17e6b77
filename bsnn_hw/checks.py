"""Argument checks shared by the generators, the benches and the trainer: each returns the value or raises a one-line
TypeError / ValueError that names the argument, shows its value and says what was expected. Nothing is converted: a
bool is not an int, a float is not an int, a string is not a flag. (NumPy only: the trainer and the generators
import this without torch or Amaranth.)"""
from __future__ import annotations

import math

import numpy as np


def is_int(x) -> bool:
    """A Python int that is not a bool (NumPy scalars are not: the generators and the trainer take plain ints)."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_int(name: str, value, lo: int = 1, hi: int | None = None, what: str = "") -> int:
    """``value`` when it is an int (not a bool) in lo..hi (no upper bound for ``hi`` None), else a one-line
    TypeError / ValueError naming ``name``, the value and the range (``what``: why the range, in parentheses)."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f"in {lo}..{hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {span}{f' ({what})' if what else ''}, not {value!r}")
    return value


def check_flag(name: str, value) -> bool:
    """``value`` as a bool when it is True or False (NumPy's too), else a TypeError: an option is never taken from a
    string, None or a number's truth."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def check_bits(name: str, value, optional: bool = True) -> int | None:
    """A size in bits (``logic_rom_bits``, ``spram``): an int >= 0, or None when ``optional``."""
    if value is None and optional:
        return None
    expected = "a number of bits (an int >= 0)" + (" or None" if optional else "")
    if not is_int(value):
        raise TypeError(f"{name} must be {expected}, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be {expected}, not {value!r}")
    return value


def check_positive(name: str, value, what: str = "a positive, finite number") -> float:
    """A finite number > 0 (an int or a float, not a bool) as a float; a ValueError saying ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be {what}, not {value!r}")
    return float(value)


def check_callable(name: str, fn, what: str = "a function") -> None:
    """None or something callable (a progress or log callback)."""
    if fn is not None and not callable(fn):
        raise TypeError(f"{name} must be {what} or None, not {fn!r}")


def check_sizes(sizes) -> list:
    """A model's layer sizes [n_in, n_1, ..., n_out] as a list: at least two, every one a positive int."""
    sizes = list(sizes)
    if len(sizes) < 2 or not all(is_int(n) and n >= 1 for n in sizes):
        raise ValueError(f"sizes must hold the inputs and at least one layer, all positive ints, not {sizes}")
    return sizes
