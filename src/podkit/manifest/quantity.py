"""Kubernetes resource quantities ("500m", "128Mi", "1.5", "2e3") as exact fractions."""

from __future__ import annotations

import math
import re
from fractions import Fraction

# The grammar of k8s.io/apimachinery/pkg/api/resource: a signed decimal number and a suffix.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<si>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?[0-9]+))?\Z"
)
_SUFFIX = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
QUANTITY_ERROR = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact amount a quantity stands for; ValueError with Kubernetes' message if invalid."""
    if isinstance(value, bool):
        raise ValueError(QUANTITY_ERROR)
    if isinstance(value, int | float):
        # YAML numbers (cpu: 0.5) arrive as numbers; their decimal text is what the user wrote.
        value = repr(value) if isinstance(value, float) else str(value)
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(QUANTITY_ERROR)
    amount = Fraction(match["number"])
    if match["si"]:
        amount *= _SUFFIX[match["si"]]
    elif match["exp"]:
        amount *= Fraction(10) ** int(match["exp"])
    return amount


def value(amount: Fraction) -> int:
    """Quantity.Value(): whole units, rounded up."""
    return math.ceil(amount)


def milli_value(amount: Fraction) -> int:
    """Quantity.MilliValue(): thousandths, rounded up (how CPU is counted)."""
    return math.ceil(amount * 1000)
