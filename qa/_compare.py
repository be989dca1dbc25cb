"""Comparing parameters with a reference: the parameter table, expectations and deviations.

:data:`PARAMETERS` is the one table of the compared parameters: the :class:`ScanParams` field,
the name shown to people, the unit, the kind of value and the tolerance a learned reference
(accepted or from history) allows. An :class:`Expectation` is what a reference says about one
parameter (a value with a tolerance, a range or a list of allowed values); :meth:`Expectation.check`
gives a :class:`Deviation` when the actual value does not meet it. Protocol and station are no
parameters: they choose the reference.

Kinds: ``text`` (white space collapsed, case ignored), ``int``, ``float``, ``ints``/``floats``
(tuples compared component by component) and ``echoes`` (TE: the same number of echoes, each
within the tolerance, in ascending order so that the list is compared as a set of echo times).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from ._params import ScanParams

EXACT_REL = 1e-9  # "exact" for floats: equal up to rounding of the decimal text


@dataclass(frozen=True)
class Parameter:
    """One compared parameter; ``rel``/``abs``: the learned references' tolerance, the larger of
    ``rel`` × |expected| and ``abs``; ``length``: components of a tuple kind; ``point``: floats
    shown with at least one decimal (6.0 ms)."""

    field: str
    name: str
    unit: str
    kind: str
    rel: float = 0.0
    abs: float = 0.0
    length: int = 0
    point: bool = False


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("sequence", "sequence", "", "text"),
    Parameter("variant", "sequence variant", "", "text"),
    Parameter("tr_ms", "TR", " ms", "float", rel=0.01, abs=0.01, point=True),
    Parameter("te_ms", "TE", " ms", "echoes", rel=0.01, abs=0.01, point=True),
    Parameter("ti_ms", "TI", " ms", "float", rel=0.01, abs=0.01, point=True),
    Parameter("flip_deg", "flip angle", "°", "float", abs=0.1),
    Parameter("matrix_encoded", "encoded matrix", "", "ints", length=3),
    Parameter("matrix_recon", "recon matrix", "", "ints", length=3),
    Parameter("fov_mm", "FOV", " mm", "floats", rel=0.005, abs=0.01, length=3),
    Parameter("slice_thickness_mm", "slice thickness", " mm", "float", rel=0.005, abs=0.01),
    Parameter("slices", "slices", "", "int"),
    Parameter("acceleration", "acceleration", "", "ints", length=2),
    Parameter("bandwidth_hz_px", "bandwidth", " Hz/px", "float", rel=0.01, abs=0.5),
    Parameter("coils", "coils", "", "int"),
    Parameter("trajectory", "trajectory", "", "text"),
)
BY_FIELD = {p.field: p for p in PARAMETERS}


@dataclass
class Deviation:
    """A parameter that does not meet its reference, in words: ``TR: is 6.0 ms, expected 5.2 ms``."""

    name: str
    actual: str
    expected: str

    def text(self) -> str:
        return f"{self.name}: is {self.actual}, expected {self.expected}"


@dataclass(frozen=True)
class Expectation:
    """What a reference says about one parameter: ``value`` within ``tolerance`` (absolute; None:
    the parameter's learned tolerance if ``learned``, else exact), or ``range`` (low, high) for each
    component, or one of ``allowed``. Values are normalised (:func:`normalise`)."""

    parameter: Parameter
    value: Any = None
    tolerance: Optional[float] = None
    range: Optional[tuple[float, float]] = None
    allowed: Optional[tuple[Any, ...]] = None
    learned: bool = False

    def check(self, actual: Any) -> Optional[Deviation]:
        """None when ``actual`` (a :class:`ScanParams` field value) meets the expectation."""
        if self.range is not None:
            low, high = self.range
            ok = actual is not None and all(v is not None and low <= v <= high for v in _components(actual))
        elif self.allowed is not None:
            ok = any(self._equal(actual, v, exact=True) for v in self.allowed)
        else:
            ok = self._equal(actual, self.value, exact=not self.learned)
        if ok:
            return None
        return Deviation(self.parameter.name, describe_value(self.parameter, actual), self._expected_text())

    def _equal(self, actual: Any, expected: Any, exact: bool) -> bool:
        """Equal under the kind's rule; None equals only None, component by component too."""
        kind = self.parameter.kind
        if actual is None or expected is None:
            return actual is None and expected is None
        if kind == "text":
            return _fold(actual) == _fold(expected)
        a, e = _components(actual), _components(expected)
        if len(a) != len(e):
            return False
        return all(self._close(x, y, exact) for x, y in zip(a, e))

    def _close(self, actual: Optional[float], expected: Optional[float], exact: bool) -> bool:
        if actual is None or expected is None:
            return actual is None and expected is None
        if self.tolerance is not None:
            allowed = self.tolerance
        elif exact or self.parameter.kind in ("int", "ints"):
            allowed = EXACT_REL * abs(expected)
        else:
            allowed = max(self.parameter.rel * abs(expected), self.parameter.abs)
        return abs(actual - expected) <= allowed

    def _expected_text(self) -> str:
        p = self.parameter
        if self.range is not None:
            return f"in {_number(p, self.range[0])}–{_number(p, self.range[1])}{p.unit}"
        if self.allowed is not None:
            return "one of " + ", ".join(_bare(p, v) for v in self.allowed) + p.unit
        if self.value is not None and self.tolerance is not None:
            return f"{_bare(p, self.value)} ± {_number(p, self.tolerance)}{p.unit}"
        return describe_value(p, self.value)


def learned_expectations(reference: ScanParams) -> tuple[Expectation, ...]:
    """Every parameter of a learned reference (accepted or history), with the table's tolerances."""
    return tuple(Expectation(p, value=normalise(p, getattr(reference, p.field)), learned=True)
                 for p in PARAMETERS)


def deviations(expectations: tuple[Expectation, ...], params: ScanParams) -> list[Deviation]:
    """The deviations of ``params`` from ``expectations``, in the table's order."""
    found = (e.check(normalise(e.parameter, getattr(params, e.parameter.field))) for e in expectations)
    return [d for d in found if d is not None]


def normalise(parameter: Parameter, value: Any) -> Any:
    """A value in the form the comparison uses: TE lists sorted, tuples as tuples."""
    if value is None:
        return None
    if parameter.kind == "echoes":
        return tuple(sorted(float(v) for v in _components(value)))
    if parameter.kind in ("ints", "floats"):
        return tuple(value)
    return value


def params_key(params: ScanParams) -> str:
    """The parameter set as canonical JSON, the grouping key of the history: texts folded, floats
    to 6 significant digits (values that differ only by rounding count as one set)."""
    def canonical(parameter: Parameter, value: Any) -> Any:
        value = normalise(parameter, value)
        if value is None:
            return None
        if parameter.kind == "text":
            return _fold(value)
        if isinstance(value, tuple):
            return [None if v is None else float(f"{v:.6g}") for v in value]
        return float(f"{value:.6g}")

    return json.dumps({p.field: canonical(p, getattr(params, p.field)) for p in PARAMETERS},
                      sort_keys=True, separators=(",", ":"))


def describe_value(parameter: Parameter, value: Any) -> str:
    """A value with its unit (``6.0 ms``, ``256x256x1``, ``2.5/5.0 ms``); ``not in the header``."""
    if value is None:
        return "not in the header"
    return _bare(parameter, value) + parameter.unit


def _bare(parameter: Parameter, value: Any) -> str:
    """A value without its unit; tuple components joined by ``x`` (``/`` for echo times)."""
    if parameter.kind == "text":
        return str(value)
    if isinstance(value, (tuple, list)):
        joiner = "/" if parameter.kind == "echoes" else "x"
        return joiner.join("?" if v is None else _number(parameter, v) for v in value)
    return _number(parameter, value)


def _number(parameter: Parameter, value: float) -> str:
    """Up to 4 decimals, trailing zeros dropped; one decimal kept for ``point`` parameters
    (``6.0`` ms, but ``20``°, ``256`` mm)."""
    text = f"{float(value):.4f}".rstrip("0")
    return text + "0" if text.endswith(".") and parameter.point else text.rstrip(".")


def _components(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _fold(text: str) -> str:
    return " ".join(str(text).split()).casefold()
