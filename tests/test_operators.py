"""GA operators: selection, crossover, mutation are pure, stay in the search space, and are
reproducible from a seed."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpsrl.campaign.genes import CategoricalGene, FloatGene, IntGene, ListGene, SearchSpace
from hpsrl.search.operators import cx_uniform, mut_individual, sel_elites, sel_tournament
from tests.test_genes import same, seeds

# --- strategies (a compact copy of those in test_genes.py) -----------------------------------


@st.composite
def scalar_genes(draw: Any, name: str) -> Any:
    kind = draw(st.sampled_from(["float", "int", "categorical"]))
    log = draw(st.booleans())
    if kind == "float":
        low = draw(st.floats(1e-9, 1e3) if log else st.floats(-1e6, 1e6))
        return FloatGene(name, low, draw(st.floats(low, 1e7, exclude_min=True)), log=log)
    if kind == "int":
        low = draw(st.integers(1, 1000) if log else st.integers(-1000, 1000))
        return IntGene(name, low, draw(st.integers(low + 1, low + 5000)), log=log)
    choices = draw(
        st.lists(
            st.one_of(st.sampled_from(["tanh", "relu", "elu"]), st.integers(-5, 5), st.booleans()),
            min_size=2,
            max_size=5,
            unique_by=str,
        )
    )
    return CategoricalGene(name, tuple(choices))


@st.composite
def spaces(draw: Any) -> SearchSpace:
    genes: list[Any] = []
    for i in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            lo = draw(st.integers(1, 3))
            element = draw(scalar_genes(f"g{i}.element"))
            genes.append(ListGene(f"g{i}", element, lo, draw(st.integers(lo, 5))))
        else:
            genes.append(draw(scalar_genes(f"g{i}")))
    return SearchSpace(tuple(genes))


def same_ind(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return list(a) == list(b) and all(same(a[k], b[k]) for k in a)


# --- crossover -------------------------------------------------------------------------------


@settings(max_examples=200)
@given(spaces(), seeds, seeds, st.floats(0.0, 1.0))
def test_cx_uniform_children_come_from_parents(
    space: SearchSpace, seed_a: int, seed_b: int, swap_prob: float
) -> None:
    a = space.sample(np.random.default_rng(seed_a))
    b = space.sample(np.random.default_rng(seed_b))
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    c1, c2 = cx_uniform(a, b, space, np.random.default_rng(seed_a ^ seed_b), swap_prob)
    assert same_ind(a, a0) and same_ind(b, b0)  # inputs untouched
    space.validate(c1)
    space.validate(c2)
    assert list(c1) == list(space.names) == list(c2)
    for gene in space.genes:
        va, vb, x, y = a[gene.name], b[gene.name], c1[gene.name], c2[gene.name]
        if isinstance(gene, ListGene):
            assert x is not va and x is not vb and y is not va and y is not vb
            assert sorted([len(x), len(y)]) == sorted([len(va), len(vb)])
            for child in (x, y):
                for i, e in enumerate(child):
                    donors = [p[i] for p in (va, vb) if i < len(p)]
                    assert any(same(e, d) for d in donors)
            for i in range(min(len(va), len(vb))):  # common positions are swapped, not copied
                assert (same(x[i], va[i]) and same(y[i], vb[i])) or (
                    same(x[i], vb[i]) and same(y[i], va[i])
                )
        else:
            assert (same(x, va) and same(y, vb)) or (same(x, vb) and same(y, va))


@settings(max_examples=50)
@given(spaces(), seeds, seeds)
def test_cx_uniform_swap_prob_extremes_and_determinism(
    space: SearchSpace, seed_a: int, seed_b: int
) -> None:
    a = space.sample(np.random.default_rng(seed_a))
    b = space.sample(np.random.default_rng(seed_b))
    c1, c2 = cx_uniform(a, b, space, np.random.default_rng(0), swap_prob=0.0)
    assert same_ind(c1, a) and same_ind(c2, b)
    c1, c2 = cx_uniform(a, b, space, np.random.default_rng(0), swap_prob=1.0)
    assert same_ind(c1, b) and same_ind(c2, a)
    r1 = cx_uniform(a, b, space, np.random.default_rng(seed_a))
    r2 = cx_uniform(a, b, space, np.random.default_rng(seed_a))
    assert same_ind(r1[0], r2[0]) and same_ind(r1[1], r2[1])


def test_cx_uniform_list_example() -> None:
    space = SearchSpace((ListGene("h", IntGene("h.element", 1, 999), 1, 4),))
    a, b = {"h": [1, 2, 3, 4]}, {"h": [10, 20]}
    seen_lengths = set()
    rng = np.random.default_rng(5)
    for _ in range(50):
        c1, c2 = cx_uniform(a, b, space, rng)
        seen_lengths.add(len(c1["h"]))
        longer = c1["h"] if len(c1["h"]) == 4 else c2["h"]
        assert longer[2:] == [3, 4]  # only a has positions 2 and 3
    assert seen_lengths == {2, 4}
    assert a == {"h": [1, 2, 3, 4]} and b == {"h": [10, 20]}


def test_cx_uniform_rejects_bad_input() -> None:
    space = SearchSpace((IntGene("n", 0, 9),))
    with pytest.raises(ValueError, match="gene 'n'"):
        cx_uniform({"n": 1}, {"n": 10}, space, np.random.default_rng(0))
    with pytest.raises(ValueError, match="swap_prob"):
        cx_uniform({"n": 1}, {"n": 2}, space, np.random.default_rng(0), swap_prob=1.5)


# --- mutation --------------------------------------------------------------------------------


@settings(max_examples=200)
@given(spaces(), seeds, st.floats(0.0, 1.0), st.floats(1e-3, 5.0))
def test_mut_individual_is_pure_contained_and_reports_changes(
    space: SearchSpace, seed: int, gene_prob: float, scale: float
) -> None:
    ind = space.sample(np.random.default_rng(seed))
    before = copy.deepcopy(ind)
    out, names = mut_individual(ind, space, np.random.default_rng(seed + 1), gene_prob, scale)
    assert same_ind(ind, before)
    space.validate(out)
    assert names == [n for n in space.names if n in names]  # gene order, no repeats
    for gene in space.genes:
        v, w = ind[gene.name], out[gene.name]
        if isinstance(v, list):
            assert w is not v  # never aliases the parent's lists
        if gene.name not in names:
            assert same(v, w)
        elif not isinstance(gene, FloatGene) and not (
            isinstance(gene, ListGene) and isinstance(gene.element, FloatGene)
        ):
            assert not same(v, w)
    again = mut_individual(ind, space, np.random.default_rng(seed + 1), gene_prob, scale)
    assert same_ind(again[0], out) and again[1] == names


def test_mut_individual_gene_prob_extremes() -> None:
    space = SearchSpace(
        (
            FloatGene("lr", 1e-5, 1e-2, log=True),
            CategoricalGene("act", ("tanh", "relu")),
            ListGene("h", IntGene("h.element", 8, 64), 1, 3),
        )
    )
    ind = space.sample(np.random.default_rng(0))
    out, names = mut_individual(ind, space, np.random.default_rng(1), 0.0, 0.1)
    assert names == [] and same_ind(out, ind)
    out, names = mut_individual(ind, space, np.random.default_rng(1), 1.0, 0.1)
    assert names == ["lr", "act", "h"]
    assert out["act"] != ind["act"] and out["h"] != ind["h"] and out["lr"] != ind["lr"]
    with pytest.raises(ValueError, match="gene_prob"):
        mut_individual(ind, space, np.random.default_rng(1), -0.1, 0.1)
    with pytest.raises(ValueError, match="scale"):
        mut_individual(ind, space, np.random.default_rng(1), 1.0, 0.0)
    with pytest.raises(TypeError, match="Generator"):
        mut_individual(ind, space, 3, 1.0, 0.1)  # type: ignore[arg-type]


# --- selection -------------------------------------------------------------------------------

keys = st.lists(
    st.one_of(st.floats(-1e6, 1e6), st.just(np.inf), st.integers(0, 3).map(float)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200)
@given(keys, st.data(), seeds)
def test_sel_tournament_winner_beats_the_rest_of_its_tournament(
    key_list: list[float], data: Any, seed: int
) -> None:
    key = np.array(key_list)
    before = key.copy()
    n = key.size
    k = data.draw(st.integers(1, n))
    n_select = data.draw(st.integers(0, 20))
    winners = sel_tournament(key, n_select, k, np.random.default_rng(seed))
    np.testing.assert_array_equal(key, before)
    assert winners.shape == (n_select,) and winners.dtype.kind == "i"
    assert ((winners >= 0) & (winners < n)).all()
    for w in winners:
        # w was the best of k distinct individuals, so at most n - k are strictly better.
        assert (key < key[w]).sum() <= n - k
    np.testing.assert_array_equal(
        winners, sel_tournament(key, n_select, k, np.random.default_rng(seed))
    )


@settings(max_examples=200)
@given(st.integers(1, 30), st.data(), seeds)
def test_sel_tournament_never_prefers_failed_over_valid(n: int, data: Any, seed: int) -> None:
    n_failed = data.draw(st.integers(0, n - 1))
    rng = np.random.default_rng(seed)
    key = rng.permutation(
        np.concatenate([rng.normal(size=n - n_failed), np.full(n_failed, np.inf)])
    )
    k = data.draw(st.integers(n_failed + 1, n))  # every tournament holds a valid candidate
    winners = sel_tournament(key, 50, k, rng)
    assert np.isfinite(key[winners]).all()


def test_sel_tournament_full_size_picks_best_and_breaks_ties_at_random() -> None:
    key = np.array([3.0, 1.0, 2.0, 1.0, np.inf])
    winners = sel_tournament(key, 200, 5, np.random.default_rng(0))
    assert set(winners.tolist()) == {1, 3}
    assert 60 < (winners == 1).sum() < 140
    all_failed = sel_tournament(np.full(4, np.inf), 200, 2, np.random.default_rng(0))
    assert set(all_failed.tolist()) == {0, 1, 2, 3}


def test_sel_tournament_size_one_is_uniform() -> None:
    counts = np.bincount(sel_tournament(np.arange(4.0), 4000, 1, np.random.default_rng(0)))
    assert (counts > 850).all()


@pytest.mark.parametrize(
    ("key", "n_select", "size", "match"),
    [
        ([1.0, 2.0], 1, 3, "tournament_size"),
        ([1.0, 2.0], 1, 0, "tournament_size"),
        ([1.0, np.nan], 1, 1, "NaN"),
        ([[1.0, 2.0]], 1, 1, "1-D"),
        ([1.0, 2.0], -1, 1, "n_select"),
    ],
)
def test_sel_tournament_errors(key: Any, n_select: int, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sel_tournament(np.array(key), n_select, size, np.random.default_rng(0))


def test_sel_elites() -> None:
    key = np.array([2.0, np.inf, 0.0, 2.0, 1.0, 2.0])
    before = key.copy()
    np.testing.assert_array_equal(sel_elites(key, 4), [2, 4, 0, 3])  # equal keys: index order
    np.testing.assert_array_equal(sel_elites(key, 0), np.array([], dtype=int))
    np.testing.assert_array_equal(sel_elites(key, 6)[-1], 1)
    np.testing.assert_array_equal(key, before)
    with pytest.raises(ValueError, match="n must be"):
        sel_elites(key, 7)
    with pytest.raises(ValueError, match="NaN"):
        sel_elites(np.array([np.nan]), 1)
