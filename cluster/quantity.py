"""Kubernetes resource quantities ("500m", "4Gi", "1e3"), exact, as apimachinery's resource.Quantity.

Only what the webhook needs: parse to an exact rational, sum, and the two roundings upstream uses
(Quantity.Value(), which rounds up to an integer, and RoundUpToMiB).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
# apimachinery's grammar: <sign><digits>[.<digits>]<suffix>, suffix binary, decimal or an exponent.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?"
)
_MAX_EXPONENT = 30  # far beyond any real quantity; bounds the work an admission request can cause
_MIB = 2**20


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def parse(text: str) -> Fraction:
    """The exact value of a quantity string; QuantityError if Kubernetes would refuse it too."""
    match = _QUANTITY.fullmatch(text.strip()) if len(text) <= 64 else None
    if match is None:
        raise QuantityError(f"invalid quantity {text[:64]!r}")
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    exponent = int(suffix[1:])
    if abs(exponent) > _MAX_EXPONENT:
        raise QuantityError(f"quantity {text[:64]!r} is out of range")
    return number * Fraction(10) ** exponent


def value(quantity: Fraction) -> int:
    """Quantity.Value(): the integer value, rounded up (500m -> 1)."""
    return math.ceil(quantity)


def mebibytes(quantity: Fraction) -> int:
    """RoundUpToMiB: whole MiB, rounded up (4Gi -> 4096)."""
    return math.ceil(quantity / _MIB)


def render(quantity: Fraction) -> str:
    """The canonical string of an integer quantity (the GPU count annotation); fractions as milli."""
    if quantity.denominator == 1:
        return str(quantity.numerator)
    return f"{math.ceil(quantity * 1000)}m"
