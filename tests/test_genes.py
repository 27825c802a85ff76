"""Genes and the search space: validation, sampling, mutation, plain-data and HDF5 round trips."""

from __future__ import annotations

import copy
import io
import json
import math
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hpsrl.campaign.gene_columns import (
    FLOAT_PAD,
    INT_PAD,
    STR_PAD,
    decode_column,
    decode_individuals,
    encode_column,
    encode_individuals,
)
from hpsrl.campaign.genes import (
    CategoricalGene,
    FloatGene,
    IntGene,
    ListGene,
    SearchSpace,
    gene_from_dict,
)

# --- strategies (test_operators.py keeps a copy of the few it needs) -------------------------


@st.composite
def float_genes(draw: Any, name: str = "x") -> FloatGene:
    if draw(st.booleans()):
        low = draw(st.floats(1e-12, 1e6))
        high = draw(st.floats(low, 1e12, exclude_min=True))
        return FloatGene(name, low, high, log=True)
    low = draw(st.floats(-1e9, 1e9))
    high = draw(st.floats(low, 2e9, exclude_min=True))
    return FloatGene(name, low, high)


@st.composite
def int_genes(draw: Any, name: str = "x") -> IntGene:
    if draw(st.booleans()):
        low = draw(st.integers(1, 10**6))
        return IntGene(name, low, draw(st.integers(low + 1, low + 10**9)), log=True)
    low = draw(st.integers(-(10**12), 10**12))
    return IntGene(name, low, draw(st.integers(low + 1, low + 10**12)))


scalar_choices = st.one_of(
    st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@st.composite
def categorical_genes(draw: Any, name: str = "x") -> CategoricalGene:
    choices = draw(
        st.lists(
            scalar_choices,
            min_size=2,
            max_size=6,
            unique_by=(str, lambda c: (type(c), c)),
        )
    )
    return CategoricalGene(name, tuple(choices))


def scalar_genes(name: str = "x") -> st.SearchStrategy[Any]:
    return st.one_of(float_genes(name), int_genes(name), categorical_genes(name))


@st.composite
def list_genes(draw: Any, name: str = "x") -> ListGene:
    lo = draw(st.integers(1, 4))
    return ListGene(name, draw(scalar_genes(f"{name}.element")), lo, draw(st.integers(lo, 6)))


def genes(name: str = "x") -> st.SearchStrategy[Any]:
    return st.one_of(scalar_genes(name), list_genes(name))


def values(gene: Any) -> st.SearchStrategy[Any]:
    """Legal values of ``gene``, bounds included."""
    if isinstance(gene, FloatGene):
        return st.floats(gene.low, gene.high)
    if isinstance(gene, IntGene):
        return st.integers(gene.low, gene.high)
    if isinstance(gene, CategoricalGene):
        return st.sampled_from(gene.choices)
    return st.lists(values(gene.element), min_size=gene.min_length, max_size=gene.max_length)


@st.composite
def spaces(draw: Any) -> SearchSpace:
    n = draw(st.integers(1, 5))
    return SearchSpace(tuple(draw(genes(f"g{i}")) for i in range(n)))


@st.composite
def individuals(draw: Any, space: SearchSpace) -> dict[str, Any]:
    return {g.name: draw(values(g)) for g in space.genes}


scales = st.floats(1e-3, 10.0)
seeds = st.integers(0, 2**32 - 1)


def same(a: Any, b: Any) -> bool:
    """Equal in value *and* type (so 1, 1.0 and True differ), lists element by element."""
    if isinstance(a, list) or isinstance(b, list):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def same_gene(g: Any, h: Any) -> bool:
    return type(g) is type(h) and g.name == h.name and same_dict(g.to_dict(), h.to_dict())


def same_dict(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_dict(a[k], b[k]) for k in a)
        )
    return same(a, b)


# --- construction errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: FloatGene("lr", 1.0, 0.5), ["'lr'", "low < high"]),
        (lambda: FloatGene("lr", 1.0, 1.0), ["'lr'", "fixed"]),
        (lambda: FloatGene("learning_rate", 0.0, 1.0, log=True), ["'learning_rate'", "low > 0"]),
        (lambda: FloatGene("lr", -1.0, 1.0, log=True), ["low > 0", "low=-1.0"]),
        (lambda: FloatGene("lr", math.nan, 1.0), ["'lr'", "finite"]),
        (lambda: FloatGene("lr", 0.0, math.inf), ["'lr'", "finite"]),
        (lambda: FloatGene("lr", "1e-3", 1.0), ["'lr'", "number", "1.0e-3"]),
        (lambda: FloatGene("lr", -1e308, 1e308), ["'lr'", "too wide"]),
        (lambda: FloatGene("lr", 0.0, 1.0, log="yes"), ["'lr'", "log"]),
        (lambda: FloatGene("", 0.0, 1.0), ["name"]),
        (lambda: IntGene("n", 5, 2), ["'n'", "low < high"]),
        (lambda: IntGene("n", 3, 3), ["'n'", "fixed"]),
        (lambda: IntGene("n", 0, 8, log=True), ["'n'", "low >= 1"]),
        (lambda: IntGene("n", 1.5, 8), ["'n'", "integer"]),
        (lambda: IntGene("n", True, 8), ["'n'", "integer"]),
        (lambda: IntGene("n", INT_PAD, 8), ["'n'", "int64"]),
        (lambda: CategoricalGene("act", ()), ["'act'", "at least 2"]),
        (lambda: CategoricalGene("act", ("tanh",)), ["'act'", "fixed"]),
        (lambda: CategoricalGene("act", ("tanh", "relu", "tanh")), ["'act'", "duplicate"]),
        (lambda: CategoricalGene("act", ("1", 1)), ["'act'", "text form"]),
        (lambda: CategoricalGene("act", (0.0, -0.0)), ["'act'", "equal"]),
        (lambda: CategoricalGene("act", ("", "a")), ["'act'", "empty string"]),
        (lambda: CategoricalGene("act", ("a\x00", "a")), ["'act'", "NUL"]),
        (lambda: CategoricalGene("act", ("a", None)), ["'act'", "str, int, float or bool"]),
        (lambda: CategoricalGene("act", (math.nan, 1.0)), ["'act'", "finite"]),
        (lambda: CategoricalGene("act", "ab"), ["'act'", "list"]),
        (lambda: ListGene("h", IntGene("h.element", 1, 8), 0, 3), ["'h'", "1 <= min_length"]),
        (lambda: ListGene("h", IntGene("h.element", 1, 8), 3, 2), ["'h'", "min_length=3"]),
        (lambda: ListGene("h", IntGene("h.element", 1, 8), 1, 2.0), ["'h'", "max_length"]),
        (
            lambda: ListGene("h", ListGene("e", IntGene("e.e", 1, 8), 1, 2), 1, 2),
            ["'h'", "element"],
        ),
    ],
)
def test_construction_errors_name_gene_and_problem(make: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        make()
    for word in words:
        assert word in str(err.value)


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_float_gene_needs_low_below_high(low: float, high: float) -> None:
    if low < high:
        assert FloatGene("x", low, high).low == low
    else:
        with pytest.raises(ValueError, match="low < high"):
            FloatGene("x", low, high)


@given(st.integers(-100, 100), st.integers(-100, 100), st.booleans())
def test_int_gene_bounds(low: int, high: int, log: bool) -> None:
    if low < high and (low >= 1 or not log):
        assert IntGene("x", low, high, log).high == high
    else:
        with pytest.raises(ValueError, match="'x'"):
            IntGene("x", low, high, log)


def test_categorical_equality_is_type_aware() -> None:
    assert CategoricalGene("a", (1, "x")) != CategoricalGene("a", (True, "x"))
    assert CategoricalGene("a", (1, "x")) != CategoricalGene("a", (1.0, "x"))
    assert CategoricalGene("a", (1, "x")) == CategoricalGene("a", [1, "x"])
    assert len({CategoricalGene("a", (1, "x")), CategoricalGene("a", (1, "x"))}) == 1


def test_float_gene_accepts_int_bounds_and_stores_floats() -> None:
    g = FloatGene("gamma", 0, 1)
    assert type(g.low) is float and type(g.high) is float
    assert g.to_dict() == {"type": "float", "low": 0.0, "high": 1.0, "log": False}


# --- gene_from_dict --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "words"),
    [
        ({"type": "complex", "low": 0, "high": 1}, ["'g'", "'type'", "categorical", "list"]),
        ({"low": 0, "high": 1}, ["'g'", "'type'"]),
        ({"type": ["float"]}, ["'g'", "'type'"]),
        ({"type": "float", "low": 0}, ["'g'", "missing", "'high'", "allowed", "log"]),
        ({"type": "float", "low": 0, "high": 1, "lg": True}, ["'g'", "unknown", "'lg'", "log"]),
        ({"type": "int", "low": 0, "high": 1, "choices": [1]}, ["'g'", "'choices'"]),
        ({"type": "categorical"}, ["'g'", "missing", "'choices'"]),
        ({"type": "categorical", "choices": "tanh"}, ["'g'", "list"]),
        (
            {
                "type": "list",
                "element": {"type": "int", "low": 1},
                "min_length": 1,
                "max_length": 2,
            },
            ["'g.element'", "'high'"],
        ),
        (
            {"type": "list", "element": {"type": "list"}, "min_length": 1, "max_length": 2},
            ["'g'", "element"],
        ),
        (
            {"type": "list", "element": {"type": "int", "low": 1, "high": 4}, "min_length": 1},
            ["'g'", "'max_length'"],
        ),
        ("float", ["'g'", "mapping"]),
    ],
)
def test_gene_from_dict_errors(d: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        gene_from_dict("g", d)
    for word in words:
        assert word in str(err.value)


def test_gene_from_dict_builds_each_type() -> None:
    assert gene_from_dict("lr", {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}) == (
        FloatGene("lr", 1e-5, 1e-2, log=True)
    )
    assert gene_from_dict("n", {"type": "int", "low": 1, "high": 9}) == IntGene("n", 1, 9)
    assert gene_from_dict("a", {"type": "categorical", "choices": ["tanh", "relu"]}) == (
        CategoricalGene("a", ("tanh", "relu"))
    )
    h = gene_from_dict(
        "h",
        {
            "type": "list",
            "element": {"type": "int", "low": 16, "high": 256, "log": True},
            "min_length": 1,
            "max_length": 3,
        },
    )
    assert h == ListGene("h", IntGene("h.element", 16, 256, log=True), 1, 3)


@settings(max_examples=150)
@given(genes("some_gene"))
def test_to_dict_round_trips_through_json_and_yaml(gene: Any) -> None:
    d = gene.to_dict()
    assert "name" not in d
    from_json = gene_from_dict(gene.name, json.loads(json.dumps(d)))
    from_yaml = gene_from_dict(gene.name, yaml.safe_load(yaml.safe_dump(d)))
    assert from_json == gene and same_gene(from_json, gene)
    assert from_yaml == gene and same_gene(from_yaml, gene)


# --- sample / mutate / contains --------------------------------------------------------------


@settings(max_examples=150)
@given(genes(), seeds)
def test_sample_is_contained_and_deterministic(gene: Any, seed: int) -> None:
    value = gene.sample(np.random.default_rng(seed))
    assert gene.contains(value)
    gene.validate(value)
    assert same(value, gene.sample(np.random.default_rng(seed)))


@settings(max_examples=200)
@given(st.data(), genes(), scales, seeds)
def test_mutate_is_contained_changes_and_leaves_input(
    data: Any, gene: Any, scale: float, seed: int
) -> None:
    value = data.draw(values(gene))
    before = copy.deepcopy(value)
    out = gene.mutate(value, np.random.default_rng(seed), scale)
    assert gene.contains(out), out
    assert same(value, before)
    assert out is not value or not isinstance(value, list)
    if not isinstance(gene.element if isinstance(gene, ListGene) else gene, FloatGene):
        assert not same(out, value)  # int and categorical mutations always change the value
    assert same(out, gene.mutate(value, np.random.default_rng(seed), scale))


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("value", [1.0, 2.0])
def test_float_mutation_at_bounds_with_huge_scale_stays_inside(log: bool, value: float) -> None:
    g = FloatGene("x", 1.0, 2.0, log=log)
    rng = np.random.default_rng(0)
    outs = [g.mutate(value, rng, 50.0) for _ in range(300)]
    assert all(1.0 <= v <= 2.0 for v in outs)
    assert 0.3 < np.mean(np.array(outs) < 1.5) < 0.7  # folding spreads mass over the range


def test_log_sampling_is_log_uniform() -> None:
    rng = np.random.default_rng(1)
    f = FloatGene("lr", 1e-5, 1e-1, log=True)
    xs = np.array([f.sample(rng) for _ in range(4000)])
    assert 0.45 < np.mean(xs < 1e-3) < 0.55
    i = IntGene("n", 1, 10_000, log=True)
    ns = np.array([i.sample(rng) for _ in range(4000)])
    assert 0.4 < np.mean(ns <= 100) < 0.6
    assert ns.min() == 1  # the end points are reachable


def test_int_sampling_covers_end_points_uniformly() -> None:
    rng = np.random.default_rng(2)
    counts = np.bincount([IntGene("n", 0, 3).sample(rng) for _ in range(4000)], minlength=4)
    assert (counts > 850).all()


def test_categorical_mutation_is_uniform_over_other_choices() -> None:
    g = CategoricalGene("act", ("a", "b", "c", "d"))
    rng = np.random.default_rng(3)
    outs = [g.mutate("b", rng, 1.0) for _ in range(3000)]
    assert "b" not in outs
    for c in "acd":
        assert 900 < outs.count(c) < 1100


def test_list_mutation_inserts_deletes_and_changes() -> None:
    g = ListGene("h", IntGene("h.element", 1, 1000), 1, 4)
    rng = np.random.default_rng(4)
    lengths = [len(g.mutate([5, 6], rng, 0.1)) for _ in range(600)]
    assert 150 < lengths.count(3) < 250 and 150 < lengths.count(1) < 250
    assert lengths.count(2) > 150
    assert {len(g.mutate([5], rng, 0.1)) for _ in range(100)} == {1, 2}  # never below min
    assert {len(g.mutate([1, 2, 3, 4], rng, 0.1)) for _ in range(100)} == {3, 4}


@pytest.mark.parametrize(
    ("gene", "bad"),
    [
        (FloatGene("x", 0.0, 1.0), 1),  # int for a float gene
        (FloatGene("x", 0.0, 1.0), 1.5),
        (FloatGene("x", 0.0, 1.0), math.nan),
        (FloatGene("x", 0.0, 1.0), "0.5"),
        (IntGene("x", 0, 4), 2.0),
        (IntGene("x", 0, 4), True),
        (IntGene("x", 0, 4), 5),
        (CategoricalGene("x", (1, "a")), True),  # True == 1, but it is not the choice 1
        (CategoricalGene("x", (1, "a")), 1.0),
        (CategoricalGene("x", (1, "a")), "b"),
        (ListGene("x", IntGene("x.element", 0, 4), 1, 2), []),
        (ListGene("x", IntGene("x.element", 0, 4), 1, 2), [1, 2, 3]),
        (ListGene("x", IntGene("x.element", 0, 4), 1, 2), [1, 7]),
        (ListGene("x", IntGene("x.element", 0, 4), 1, 2), (1, 2)),
    ],
)
def test_contains_is_strict_about_type_and_bounds(gene: Any, bad: Any) -> None:
    assert not gene.contains(bad)
    with pytest.raises(ValueError, match="gene 'x'"):
        gene.validate(bad)
    with pytest.raises(ValueError, match="gene 'x'"):
        gene.mutate(bad, np.random.default_rng(0), 0.1)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_mutate_rejects_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        FloatGene("x", 0.0, 1.0).mutate(0.5, np.random.default_rng(0), scale)


def test_sample_needs_a_generator() -> None:
    with pytest.raises(TypeError, match="Generator"):
        FloatGene("x", 0.0, 1.0).sample(np.random.RandomState(0))  # type: ignore[arg-type]


# --- HDF5 columns ----------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.data(), genes())
def test_encoded_column_round_trips_exactly(data: Any, gene: Any) -> None:
    vals = data.draw(st.lists(values(gene), max_size=5))
    before = copy.deepcopy(vals)
    arr = encode_column(gene, vals)
    assert same(vals, before)
    assert arr.shape[0] == len(vals)
    if isinstance(gene, ListGene):
        assert arr.shape == (len(vals), gene.max_length)
        element = gene.element
    else:
        assert arr.ndim == 1
        element = gene
    if isinstance(element, FloatGene):
        assert arr.dtype == np.float64
    elif isinstance(element, IntGene):
        assert arr.dtype == np.int64
    else:
        assert h5py.check_string_dtype(arr.dtype).encoding == "utf-8"
    assert same(decode_column(gene, arr), vals)


def test_list_padding_sentinels() -> None:
    ints = ListGene("h", IntGene("h.element", -5, 5), 1, 3)
    np.testing.assert_array_equal(
        encode_column(ints, [[-1, 0], [5]]), [[-1, 0, INT_PAD], [5] + [INT_PAD] * 2]
    )
    floats = ListGene("f", FloatGene("f.element", -1.0, 1.0), 1, 2)
    arr = encode_column(floats, [[0.5]])
    assert arr[0, 0] == 0.5 and math.isnan(arr[0, 1]) and math.isnan(FLOAT_PAD)
    cats = ListGene("c", CategoricalGene("c.element", ("a", 1, True)), 1, 3)
    assert encode_column(cats, [[True, 1]]).tolist() == [["True", "1", STR_PAD]]
    assert decode_column(cats, encode_column(cats, [[True, 1]])) == [[True, 1]]
    assert type(decode_column(cats, encode_column(cats, [[True, 1]]))[0][0]) is bool


def test_decoding_rejects_corrupt_columns() -> None:
    ints = ListGene("h", IntGene("h.element", 0, 5), 1, 3)
    with pytest.raises(ValueError, match="padding followed by values"):
        decode_column(ints, np.array([[1, INT_PAD, 2]]))
    with pytest.raises(ValueError, match="length 0"):
        decode_column(ints, np.array([[INT_PAD] * 3]))
    with pytest.raises(ValueError, match="3 columns"):
        decode_column(ints, np.array([[1, 2]]))
    with pytest.raises(ValueError, match="outside"):
        decode_column(IntGene("n", 0, 5), np.array([9]))
    with pytest.raises(ValueError, match="integer"):
        decode_column(IntGene("n", 0, 5), np.array([1.0]))
    with pytest.raises(ValueError, match="not one of"):
        decode_column(CategoricalGene("a", ("x", "y")), np.array([b"z"], dtype=object))
    with pytest.raises(ValueError, match="1-D"):
        decode_column(FloatGene("f", 0.0, 1.0), np.zeros((2, 2)))


def test_encoding_validates() -> None:
    with pytest.raises(ValueError, match="gene 'n'"):
        encode_column(IntGene("n", 0, 5), [1, 6])


# --- search space ----------------------------------------------------------------------------

CONFIG = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "gamma": {"type": "float", "low": 0.9, "high": 0.999, "log": False},
    "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
    "activation": {"type": "categorical", "choices": ["tanh", "relu"]},
    "hidden_sizes": {
        "type": "list",
        "element": {"type": "int", "low": 16, "high": 128, "log": True},
        "min_length": 1,
        "max_length": 3,
    },
}


def test_search_space_from_config_keeps_order_and_round_trips() -> None:
    space = SearchSpace.from_config(CONFIG)
    assert space.names == tuple(CONFIG)
    assert space.to_dict() == CONFIG
    assert (
        SearchSpace.from_config(yaml.safe_load(yaml.safe_dump(space.to_dict(), sort_keys=False)))
        == space
    )
    assert space["gamma"] == FloatGene("gamma", 0.9, 0.999)
    assert len(space) == 5 and [g.name for g in space] == list(CONFIG)
    with pytest.raises(KeyError, match="no gene 'nope'"):
        space["nope"]


def test_search_space_errors() -> None:
    with pytest.raises(ValueError, match="no genes"):
        SearchSpace(())
    with pytest.raises(ValueError, match="'a' appears twice"):
        SearchSpace((IntGene("a", 0, 1), FloatGene("a", 0.0, 1.0)))
    with pytest.raises(ValueError, match=r"'gamma'.*'lo'"):
        SearchSpace.from_config({"gamma": {"type": "float", "lo": 0.9, "high": 1.0}})
    space = SearchSpace.from_config(CONFIG)
    ind = space.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"missing genes \['gamma'\]"):
        space.validate({k: v for k, v in ind.items() if k != "gamma"})
    with pytest.raises(ValueError, match=r"unknown genes \['gama'\]"):
        space.validate({**ind, "gama": 0.95})
    with pytest.raises(ValueError, match="gene 'batch_size'"):
        space.validate({**ind, "batch_size": 100})
    assert space.contains(ind) and not space.contains({**ind, "batch_size": 100})


def test_search_space_sample_is_deterministic() -> None:
    space = SearchSpace.from_config(CONFIG)
    a = [space.sample(np.random.default_rng(11)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(11)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(11)
    assert space.sample(rng) != space.sample(rng)


@settings(max_examples=60)
@given(st.data(), spaces())
def test_columns_round_trip_through_an_hdf5_file(data: Any, space: SearchSpace) -> None:
    pop = data.draw(st.lists(individuals(space), max_size=4))
    before = copy.deepcopy(pop)
    cols = encode_individuals(space, pop)
    assert same(pop, before)
    with h5py.File(io.BytesIO(), "w") as f:
        for name, col in cols.items():
            f.create_dataset(name, data=col)
        back = decode_individuals(space, {name: f[name][()] for name in space.names})
    assert len(back) == len(pop)
    for got, want in zip(back, pop, strict=True):
        assert list(got) == list(space.names)
        assert all(same(got[n], want[n]) for n in space.names)


def test_decoding_individuals_checks_names_and_lengths() -> None:
    space = SearchSpace((IntGene("a", 0, 9), FloatGene("b", 0.0, 1.0)))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        decode_individuals(space, {"a": np.array([1])})
    with pytest.raises(ValueError, match="different numbers of rows"):
        decode_individuals(space, {"a": np.array([1, 2]), "b": np.array([0.5])})
