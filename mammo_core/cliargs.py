"""argparse ``type=`` functions for the numeric options of every ``mammo`` sub-command: a value
that is not a finite number in the option's range (``inf``, ``nan``, ``1e999``, ``-3``) is a
usage error at parse time (exit 2, one line naming the option), never a value that reaches the
work and fails (or runs for hours) later.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _check(v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str | None:
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number"
    if lo is not None and (v <= lo if lo_open else v < lo):
        return f"must be {'>' if lo_open else '>='} {lo:g}"
    if hi is not None and (v >= hi if hi_open else v > hi):
        return f"must be {'<' if hi_open else '<='} {hi:g}"
    return None


def real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in ``[lo, hi]`` (``lo_open`` / ``hi_open``: the bound itself excluded)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        why = _check(v, lo, hi, lo_open, hi_open)
        if why:
            raise argparse.ArgumentTypeError(f"{why}, got {text!r}")
        return v
    parse.__name__ = "number"
    return parse


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``[lo, hi]``."""
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        why = _check(v, lo, hi, False, False)
        if why:
            raise argparse.ArgumentTypeError(f"{why}, got {text!r}")
        return v
    parse.__name__ = "integer"
    return parse


#: Patches / windows per batch: at least 1; a batch of more than 4096 150 x 150 images is
#: over 2 GB of VGG16 activations on a CPU.
BATCH_SIZE = integer(1, 4096)
#: ``--bits``: a 16-bit container holding 1..16 bits.
BITS = integer(1, 16)
