"""The typed search space: one gene per tuned hyperparameter.

Four gene types cover what the agents need:

- :class:`FloatGene` -- a real number in ``[low, high]``, optionally on a log scale;
- :class:`IntGene` -- an integer in ``[low, high]``, optionally on a log scale;
- :class:`CategoricalGene` -- one of a few YAML scalars (str, int, float, bool);
- :class:`ListGene` -- a variable-length list of one of the above, e.g. hidden layer widths
  whose length (the number of layers) is evolved too.

Every gene is a frozen dataclass validated on construction, knows how to ``sample`` and
``mutate`` a value with an explicit :class:`numpy.random.Generator`, checks values
(``contains`` / ``validate``) and round-trips through plain data (``to_dict`` /
:func:`gene_from_dict`). How values are stored in HDF5 is :mod:`hpsrl.campaign.gene_columns`'s.

Values are plain Python objects: ``float``, ``int``, ``str``/``int``/``float``/``bool`` for
categorical choices, and ``list`` for list genes. Types are strict: a float gene holds a
``float`` (``1`` is rejected, write ``1.0``), an int gene an ``int`` (never a ``bool``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CategoricalGene",
    "Choice",
    "FloatGene",
    "Gene",
    "IntGene",
    "ListGene",
    "ScalarGene",
    "SearchSpace",
    "Value",
    "gene_error",
    "gene_from_dict",
]

Choice = str | int | float | bool
"""A categorical choice: a YAML scalar."""

Value = float | int | str | bool | list[Any]
"""A gene value as the rest of hpsrl sees it."""

_INT64_MIN = int(np.iinfo(np.int64).min)
_INT64_MAX = int(np.iinfo(np.int64).max)


# --- helpers ---------------------------------------------------------------------------------


def gene_error(name: str, problem: str) -> ValueError:
    """The error for an illegal gene or value: ``problem`` names what is wrong, this the gene."""
    return ValueError(f"gene {name!r}: {problem}")


def _as_real(name: str, key: str, value: Any) -> float:
    """A finite real number from config (int or float, not bool), or a kind ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        hint = ""
        if isinstance(value, str):
            hint = " (PyYAML reads 1e-3 as text: write 1.0e-3)"
        raise gene_error(
            name, f"{key} must be a number, got {type(value).__name__} {value!r}{hint}"
        )
    out = float(value)
    if not math.isfinite(out):
        raise gene_error(name, f"{key} must be finite, got {value!r}")
    return out


def _as_int(name: str, key: str, value: Any) -> int:
    """An int from config (not bool, not float), or a kind ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise gene_error(name, f"{key} must be an integer, got {type(value).__name__} {value!r}")
    return operator.index(value)


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


def _check_scale(name: str, scale: float) -> None:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise gene_error(name, f"mutation scale must be a finite number > 0, got {scale!r}")


def _reflect(u: float, lo: float, hi: float) -> float:
    """Fold ``u`` back into ``[lo, hi]`` by reflecting at the bounds (any distance)."""
    width = hi - lo
    if not width > 0:  # a range that rounding collapsed to a point (e.g. in log space)
        return lo
    t = math.fmod(u - lo, 2.0 * width)
    if t < 0:
        t += 2.0 * width
    if t > width:
        t = 2.0 * width - t
    return min(max(lo + t, lo), hi)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


class _GeneBase:
    """Shared behaviour; each subclass supplies ``name`` and ``_problem``."""

    name: str

    def _problem(self, value: Any) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a legal value of this gene (type and bounds)."""
        return self._problem(value) is None

    def validate(self, value: Any) -> None:
        """Raise a ValueError naming the gene and the problem if ``value`` is illegal."""
        problem = self._problem(value)
        if problem is not None:
            raise gene_error(self.name, problem)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"gene name must be a non-empty string, got {name!r}")


# --- float -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatGene(_GeneBase):
    """A real number in ``[low, high]``; with ``log`` it is sampled and mutated in log space."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        low = _as_real(self.name, "low", self.low)
        high = _as_real(self.name, "high", self.high)
        if not isinstance(self.log, bool):
            raise gene_error(self.name, f"log must be true or false, got {self.log!r}")
        if not low < high:
            raise gene_error(
                self.name,
                f"needs low < high, got low={self.low!r}, high={self.high!r}"
                + (" (for a constant, put it under the fixed parameters)" if low == high else ""),
            )
        if self.log and not low > 0:
            raise gene_error(self.name, f"log scale needs low > 0, got low={self.low!r}")
        if not math.isfinite(2.0 * (high - low)):
            raise gene_error(
                self.name, f"range [{low!r}, {high!r}] is too wide to sample; narrow it"
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def _bounds(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low), math.log(self.high)
        return self.low, self.high

    def _from_internal(self, u: float) -> float:
        x = math.exp(u) if self.log else u
        return float(min(max(x, self.low), self.high))

    def sample(self, rng: np.random.Generator) -> float:
        """Uniform in ``[low, high]`` (log-uniform with ``log``)."""
        _check_rng(rng)
        lo, hi = self._bounds()
        return self._from_internal(float(rng.uniform(lo, hi)))

    def mutate(self, value: float, rng: np.random.Generator, scale: float) -> float:
        """Gaussian step with ``sigma = scale * (high - low)`` (in log space with ``log``),
        reflected at the bounds."""
        self.validate(value)
        _check_rng(rng)
        _check_scale(self.name, scale)
        lo, hi = self._bounds()
        u = math.log(value) if self.log else value
        u = _reflect(u + float(rng.normal(0.0, scale * (hi - lo))), lo, hi)
        return self._from_internal(u)

    def _problem(self, value: Any) -> str | None:
        if not isinstance(value, float):
            return f"expected a float, got {type(value).__name__} {value!r}"
        if not (self.low <= value <= self.high):
            return f"{value!r} is outside [{_fmt(self.low)}, {_fmt(self.high)}]"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


# --- int -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntGene(_GeneBase):
    """An integer in ``[low, high]``; with ``log`` it is sampled and mutated in log space."""

    name: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        low = _as_int(self.name, "low", self.low)
        high = _as_int(self.name, "high", self.high)
        if not isinstance(self.log, bool):
            raise gene_error(self.name, f"log must be true or false, got {self.log!r}")
        if not low < high:
            raise gene_error(
                self.name,
                f"needs low < high, got low={low}, high={high}"
                + (" (for a constant, put it under the fixed parameters)" if low == high else ""),
            )
        if self.log and low < 1:
            raise gene_error(self.name, f"log scale needs low >= 1, got low={low}")
        if low <= _INT64_MIN or high > _INT64_MAX:
            raise gene_error(
                self.name,
                f"bounds must lie in ({_INT64_MIN}, {_INT64_MAX}] to be stored as int64, "
                f"got low={low}, high={high}",
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def _bounds(self) -> tuple[float, float]:
        # Each integer k owns [k - 0.5, k + 0.5), so the end points are as likely as the rest.
        if self.log:
            return math.log(self.low - 0.5), math.log(self.high + 0.5)
        return self.low - 0.5, self.high + 0.5

    def _from_internal(self, u: float) -> int:
        x = math.exp(u) if self.log else u
        return int(min(max(round(x), self.low), self.high))

    def sample(self, rng: np.random.Generator) -> int:
        """Uniform over ``low..high`` (log-uniform with ``log``)."""
        _check_rng(rng)
        if not self.log:
            return int(rng.integers(self.low, self.high, endpoint=True))
        lo, hi = self._bounds()
        return self._from_internal(float(rng.uniform(lo, hi)))

    def mutate(self, value: int, rng: np.random.Generator, scale: float) -> int:
        """Gaussian step with ``sigma = scale * (high - low)`` (in log space with ``log``),
        reflected at the bounds and rounded; the result always differs from ``value``
        (a step that rounds back moves one integer in the step's direction)."""
        self.validate(value)
        _check_rng(rng)
        _check_scale(self.name, scale)
        lo, hi = self._bounds()
        u0 = math.log(value) if self.log else float(value)
        step = float(rng.normal(0.0, scale * (hi - lo)))
        out = self._from_internal(_reflect(u0 + step, lo, hi))
        if out == value:
            direction = 1 if step > 0 else -1 if step < 0 else int(rng.choice((-1, 1)))
            out = value + direction
            if not self.low <= out <= self.high:
                out = value - direction
        return out

    def _problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an int, got {type(value).__name__} {value!r}"
        if not (self.low <= value <= self.high):
            return f"{value!r} is outside [{self.low}, {self.high}]"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


# --- categorical -----------------------------------------------------------------------------


def _kind(value: Any) -> type | None:
    """The choice kind of ``value`` (bool before int: ``True == 1`` but they differ here)."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind
    return None


@dataclass(frozen=True, eq=False)
class CategoricalGene(_GeneBase):
    """One of ``choices`` (str, int, float or bool); values compare by type and value, so
    ``1``, ``1.0`` and ``True`` are different choices."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        _check_name(self.name)
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise gene_error(self.name, f"choices must be a list, got {self.choices!r}")
        choices = tuple(self.choices)
        if len(choices) < 2:
            raise gene_error(
                self.name,
                f"needs at least 2 choices, got {list(choices)!r}"
                + (" (for a constant, put it under the fixed parameters)" if choices else ""),
            )
        texts: dict[str, Choice] = {}
        for c in choices:
            if _kind(c) is None or isinstance(c, (np.generic,)):
                raise gene_error(
                    self.name,
                    f"choices must be str, int, float or bool, got {type(c).__name__} {c!r}",
                )
            if isinstance(c, float) and not math.isfinite(c):
                raise gene_error(self.name, f"choices must be finite, got {c!r}")
            text = str(c)
            if "\x00" in text:
                raise gene_error(
                    self.name,
                    f"choice {c!r} contains a NUL character, which HDF5 "
                    "strings cannot hold; remove it",
                )
            if text == "":  # what list columns are padded with (hpsrl.campaign.gene_columns)
                raise gene_error(
                    self.name, "the empty string cannot be a choice; name it, e.g. 'none'"
                )
            if text in texts:
                other = texts[text]
                same = _kind(other) is _kind(c) and other == c
                raise gene_error(
                    self.name,
                    f"duplicate choice {c!r}; remove it"
                    if same
                    else f"choices {other!r} and {c!r} have the same text form {text!r} "
                    "(HDF5 stores choices as text); keep one",
                )
            for other in texts.values():
                if _kind(other) is _kind(c) and other == c:
                    raise gene_error(self.name, f"choices {other!r} and {c!r} are equal; keep one")
            texts[text] = c
        object.__setattr__(self, "choices", choices)

    def _typed(self) -> tuple[tuple[str, Choice], ...]:
        return tuple((str(_kind(c)), c) for c in self.choices)

    def __eq__(self, other: object) -> bool:
        # Type-aware, unlike tuple equality: choices (1, "a") and (True, "a") differ.
        if not isinstance(other, CategoricalGene):
            return NotImplemented
        return self.name == other.name and self._typed() == other._typed()

    def __hash__(self) -> int:
        return hash((CategoricalGene, self.name, self._typed()))

    def _index(self, value: Any) -> int | None:
        kind = _kind(value)
        for i, c in enumerate(self.choices):
            if _kind(c) is kind and c == value:
                return i
        return None

    def sample(self, rng: np.random.Generator) -> Choice:
        """A uniformly random choice."""
        _check_rng(rng)
        return self.choices[int(rng.integers(len(self.choices)))]

    def mutate(self, value: Choice, rng: np.random.Generator, scale: float) -> Choice:
        """A different choice, uniformly (``scale`` is accepted for symmetry and checked)."""
        self.validate(value)
        _check_rng(rng)
        _check_scale(self.name, scale)
        i = self._index(value)
        assert i is not None
        j = int(rng.integers(len(self.choices) - 1))
        return self.choices[j + 1 if j >= i else j]

    def _problem(self, value: Any) -> str | None:
        if isinstance(value, np.generic) or self._index(value) is None:
            return f"{value!r} is not one of {list(self.choices)!r}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}


ScalarGene = FloatGene | IntGene | CategoricalGene


# --- list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListGene(_GeneBase):
    """A list of ``min_length..max_length`` values of the ``element`` gene, e.g. the widths of
    the hidden layers. Mutation can insert or delete an element as well as change one."""

    name: str
    element: ScalarGene
    min_length: int
    max_length: int

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.element, (FloatGene, IntGene, CategoricalGene)):
            raise gene_error(
                self.name,
                f"element must be a float, int or categorical gene, got {self.element!r}",
            )
        lo = _as_int(self.name, "min_length", self.min_length)
        hi = _as_int(self.name, "max_length", self.max_length)
        if not 1 <= lo <= hi:
            raise gene_error(
                self.name,
                f"needs 1 <= min_length <= max_length, got min_length={lo}, max_length={hi}",
            )
        object.__setattr__(self, "min_length", lo)
        object.__setattr__(self, "max_length", hi)

    def sample(self, rng: np.random.Generator) -> list[Any]:
        """A uniformly random length, then independent elements."""
        _check_rng(rng)
        n = int(rng.integers(self.min_length, self.max_length, endpoint=True))
        return [self.element.sample(rng) for _ in range(n)]

    def mutate(self, value: list[Any], rng: np.random.Generator, scale: float) -> list[Any]:
        """With probability 1/3 insert a sampled element at a random position (if below
        ``max_length``), 1/3 delete a random element (if above ``min_length``), otherwise
        mutate one random element. Returns a new list."""
        self.validate(value)
        _check_rng(rng)
        _check_scale(self.name, scale)
        out = list(value)
        op = int(rng.integers(3))
        if op == 0 and len(out) < self.max_length:
            out.insert(int(rng.integers(len(out) + 1)), self.element.sample(rng))
        elif op == 1 and len(out) > self.min_length:
            del out[int(rng.integers(len(out)))]
        else:
            i = int(rng.integers(len(out)))
            out[i] = self.element.mutate(out[i], rng, scale)
        return out

    def _problem(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"expected a list, got {type(value).__name__} {value!r}"
        if not self.min_length <= len(value) <= self.max_length:
            return (
                f"length {len(value)} is outside [{self.min_length}, {self.max_length}]: {value!r}"
            )
        for i, v in enumerate(value):
            problem = self.element._problem(v)
            if problem is not None:
                return f"element {i}: {problem}"
        return None

    def to_dict(self) -> dict[str, Any]:
        element = self.element.to_dict()
        return {
            "type": "list",
            "element": element,
            "min_length": self.min_length,
            "max_length": self.max_length,
        }


Gene = FloatGene | IntGene | CategoricalGene | ListGene


# --- config form -----------------------------------------------------------------------------

_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # type: (required keys, optional keys)
    "float": (("type", "low", "high"), ("log",)),
    "int": (("type", "low", "high"), ("log",)),
    "categorical": (("type", "choices"), ()),
    "list": (("type", "element", "min_length", "max_length"), ()),
}


def gene_from_dict(name: str, d: Mapping[str, Any]) -> Gene:
    """Build a gene from its config form, e.g. ``{"type": "float", "low": 1e-5,
    "high": 1e-2, "log": True}``; inverse of ``gene.to_dict()``.

    A list gene's ``element`` is the config form of a float, int or categorical gene; it is
    named ``"<name>.element"`` in error messages.
    """
    _check_name(name)
    if not isinstance(d, Mapping):
        raise gene_error(name, f"expected a mapping with a 'type' key, got {d!r}")
    kind = d.get("type")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise gene_error(
            name,
            f"key 'type' must be one of {sorted(_KEYS)}, got {kind!r}",
        )
    required, optional = _KEYS[kind]
    allowed = sorted(required + optional)
    missing = [k for k in required if k not in d]
    extra = sorted(str(k) for k in d if k not in allowed)
    if missing or extra:
        problems = ([f"is missing key(s) {missing}"] if missing else []) + (
            [f"has unknown key(s) {extra}"] if extra else []
        )
        raise gene_error(name, f"{kind} gene {' and '.join(problems)}; allowed keys: {allowed}")
    if kind == "float":
        return FloatGene(name, d["low"], d["high"], d.get("log", False))
    if kind == "int":
        return IntGene(name, d["low"], d["high"], d.get("log", False))
    if kind == "categorical":
        choices = d["choices"]
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
            raise gene_error(name, f"choices must be a list, got {choices!r}")
        return CategoricalGene(name, tuple(choices))
    element_d = d["element"]
    if isinstance(element_d, Mapping) and element_d.get("type") == "list":
        raise gene_error(
            name, "element cannot be a list gene; use a float, int or categorical gene"
        )
    element = gene_from_dict(f"{name}.element", element_d)
    assert not isinstance(element, ListGene)
    return ListGene(name, element, d["min_length"], d["max_length"])


# --- search space ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """The ordered genes of a campaign. Individuals are ``dict``s gene name -> value."""

    genes: tuple[Gene, ...]

    def __post_init__(self) -> None:
        genes = tuple(self.genes)
        if not genes:
            raise ValueError("search space has no genes; add at least one under 'genes:'")
        seen: set[str] = set()
        for g in genes:
            if not isinstance(g, (FloatGene, IntGene, CategoricalGene, ListGene)):
                raise TypeError(f"search space genes must be genes, got {g!r}")
            if g.name in seen:
                raise ValueError(f"gene {g.name!r} appears twice in the search space; rename one")
            seen.add(g.name)
        object.__setattr__(self, "genes", genes)

    @classmethod
    def from_config(cls, genes: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """From the config's ``genes:`` mapping (order kept)."""
        if not isinstance(genes, Mapping):
            raise ValueError(f"'genes' must be a mapping of gene name to gene, got {genes!r}")
        return cls(tuple(gene_from_dict(name, d) for name, d in genes.items()))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data that :meth:`from_config` turns back into this space."""
        return {g.name: g.to_dict() for g in self.genes}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.genes)

    def __len__(self) -> int:
        return len(self.genes)

    def __iter__(self) -> Iterator[Gene]:
        return iter(self.genes)

    def __getitem__(self, name: str) -> Gene:
        for g in self.genes:
            if g.name == name:
                return g
        raise KeyError(f"no gene {name!r}; genes are {list(self.names)}")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A random individual (genes sampled in order from ``rng``)."""
        _check_rng(rng)
        return {g.name: g.sample(rng) for g in self.genes}

    def validate(self, individual: Mapping[str, Any]) -> None:
        """Raise a ValueError if genes are missing, unknown, or hold illegal values."""
        if not isinstance(individual, Mapping):
            raise ValueError(
                f"an individual must be a mapping of gene name to value, got {individual!r}"
            )
        missing = [n for n in self.names if n not in individual]
        extra = [str(k) for k in individual if k not in self.names]
        if missing or extra:
            raise ValueError(
                f"individual does not match the search space: missing genes {missing}, "
                f"unknown genes {extra}; expected exactly {list(self.names)}"
            )
        for g in self.genes:
            g.validate(individual[g.name])

    def contains(self, individual: Mapping[str, Any]) -> bool:
        try:
            self.validate(individual)
        except ValueError:
            return False
        return True
