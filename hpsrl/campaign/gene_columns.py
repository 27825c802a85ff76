"""How gene values are stored in HDF5: one column (a dataset) per gene, one row per individual.

- float gene: ``float64``, shape ``(n,)``;
- int gene: ``int64``, shape ``(n,)``;
- categorical gene: variable-length UTF-8 strings (``h5py.string_dtype()``), each cell
  ``str(choice)``; choices are required to have distinct, non-empty text forms
  (:class:`hpsrl.campaign.genes.CategoricalGene`) so this is exact;
- list gene: shape ``(n, max_length)`` with the element encoding above, each row left-aligned
  and padded after the last element with :data:`FLOAT_PAD` (NaN) for float elements,
  :data:`INT_PAD` (the smallest int64) for int elements, :data:`STR_PAD` (``""``) for
  categorical elements. None of these can be a gene value, so the padding is unambiguous.

Decoding checks every value against its gene, so that a column changed by hand or damaged is
refused with a ValueError naming the gene, never read as something else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from hpsrl.campaign.genes import (
    CategoricalGene,
    Choice,
    FloatGene,
    Gene,
    IntGene,
    ListGene,
    SearchSpace,
    gene_error,
)

FLOAT_PAD: float = math.nan
"""Padding after the last element of a list gene with float elements (values are finite)."""

INT_PAD: int = int(np.iinfo(np.int64).min)
"""Padding after the last element of a list gene with int elements (``low`` must exceed it)."""

STR_PAD: str = ""
"""Padding after the last element of a list gene with categorical elements (choices are
never the empty string)."""


def encode_individuals(
    space: SearchSpace, individuals: Sequence[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    """One HDF5-ready column per gene of ``space`` (see above); a ValueError for an individual
    outside it."""
    for individual in individuals:
        space.validate(individual)
    return {g.name: encode_column(g, [ind[g.name] for ind in individuals]) for g in space}


def decode_individuals(space: SearchSpace, columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Inverse of :func:`encode_individuals` (also accepts h5py datasets)."""
    missing = [n for n in space.names if n not in columns]
    extra = [str(k) for k in columns if k not in space.names]
    if missing or extra:
        raise ValueError(
            f"columns do not match the search space: missing {missing}, unknown {extra}"
        )
    decoded = {g.name: decode_column(g, np.asarray(columns[g.name])) for g in space}
    lengths = {name: len(v) for name, v in decoded.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"gene columns have different numbers of rows: {lengths}")
    n = next(iter(lengths.values()))
    return [{name: decoded[name][i] for name in space.names} for i in range(n)]


def encode_column(gene: Gene, values: Sequence[Any]) -> np.ndarray:
    """The column of one gene's ``values``; a ValueError naming the gene for an illegal one."""
    for v in values:
        gene.validate(v)
    if isinstance(gene, ListGene):
        return _encode_lists(gene, values)
    if isinstance(gene, CategoricalGene):
        out = np.empty(len(values), dtype=h5py.string_dtype())
        out[:] = [str(v) for v in values]
        return out
    dtype = np.float64 if isinstance(gene, FloatGene) else np.int64
    return np.asarray(list(values), dtype=dtype).reshape(len(values))


def decode_column(gene: Gene, column: Any) -> list[Any]:
    """The values a column of ``gene`` holds, each checked against the gene."""
    if isinstance(gene, ListGene):
        return _decode_lists(gene, column)
    cells = _cells(gene.name, column, 1)
    if isinstance(gene, CategoricalGene):
        return [_decode_choice(gene, cell) for cell in cells]
    if isinstance(gene, IntGene):
        if cells.size and cells.dtype.kind not in "iu":
            raise gene_error(gene.name, f"expected an integer column, got dtype {cells.dtype}")
        out: list[Any] = [int(x) for x in cells]
    else:
        out = [float(x) for x in cells]
    for v in out:
        gene.validate(v)
    return out


def _encode_lists(gene: ListGene, values: Sequence[list[Any]]) -> np.ndarray:
    """Shape ``(n, max_length)``, rows left-aligned, padded with :data:`FLOAT_PAD`,
    :data:`INT_PAD` or :data:`STR_PAD` by element type."""
    n, width, pad = len(values), gene.max_length, _pad(gene)
    if isinstance(gene.element, CategoricalGene):
        out = np.empty((n, width), dtype=h5py.string_dtype())
        out[...] = pad
        for r, v in enumerate(values):
            out[r, : len(v)] = [str(x) for x in v]
        return out
    dtype = np.float64 if isinstance(gene.element, FloatGene) else np.int64
    out = np.full((n, width), pad, dtype=dtype)
    for r, v in enumerate(values):
        out[r, : len(v)] = v
    return out


def _decode_lists(gene: ListGene, column: Any) -> list[list[Any]]:
    table = _cells(gene.name, column, 2)
    if isinstance(gene.element, IntGene) and table.size and table.dtype.kind not in "iu":
        raise gene_error(gene.name, f"expected an integer table, got dtype {table.dtype}")
    if table.shape[1] != gene.max_length:
        raise gene_error(
            gene.name,
            f"expected {gene.max_length} columns (max_length), got shape {table.shape}",
        )
    out: list[list[Any]] = []
    for r, row in enumerate(table):
        cells = list(row)
        is_pad = [_is_pad(gene, c) for c in cells]
        n = is_pad.index(True) if True in is_pad else len(cells)
        if not all(is_pad[n:]):
            raise gene_error(gene.name, f"row {r}: padding followed by values: {cells!r}")
        value = decode_column(gene.element, np.asarray(cells[:n], dtype=table.dtype))
        gene.validate(value)
        out.append(value)
    return out


def _pad(gene: ListGene) -> Any:
    if isinstance(gene.element, FloatGene):
        return FLOAT_PAD
    if isinstance(gene.element, IntGene):
        return INT_PAD
    return STR_PAD


def _is_pad(gene: ListGene, cell: Any) -> bool:
    if isinstance(gene.element, FloatGene):
        return bool(np.isnan(cell))
    if isinstance(gene.element, IntGene):
        return int(cell) == INT_PAD
    return cell in (STR_PAD, STR_PAD.encode())


def _decode_choice(gene: CategoricalGene, cell: Any) -> Choice:
    text = cell.decode("utf-8") if isinstance(cell, bytes) else str(cell)
    for c in gene.choices:
        if str(c) == text:
            return c
    raise gene_error(gene.name, f"stored value {text!r} is not one of {list(gene.choices)!r}")


def _cells(name: str, column: Any, ndim: int) -> np.ndarray:
    cells = np.asarray(column)
    if cells.ndim != ndim:
        raise gene_error(name, f"expected a {ndim}-D array, got shape {cells.shape}")
    return cells
