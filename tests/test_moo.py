"""NSGA-II ranking: losses, fronts, crowding distance and the rank key, with ties, infinities,
mixed directions and failed (NaN) individuals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hpsrl.search.moo import (
    best_value,
    better_words,
    crowding_distance,
    higher_is_better,
    loss_sign,
    non_dominated_sort,
    nsga2_rank_key,
    pareto_front,
    to_losses,
)

inf, nan = np.inf, np.nan
MIN2 = ["minimize", "minimize"]

# Small integer-valued losses make ties likely; infinities and NaN turn up too.
loss_values = st.one_of(
    st.integers(-3, 3).map(float), st.sampled_from([inf, -inf]), st.floats(-10, 10)
)


def loss_matrices(allow_nan: bool = False) -> st.SearchStrategy[np.ndarray]:
    elements = st.one_of(loss_values, st.just(nan)) if allow_nan else loss_values
    return hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 12), st.integers(1, 3)),
        elements=elements,
    )


def dominates(p: np.ndarray, q: np.ndarray) -> bool:
    return bool((p <= q).all() and (p < q).any())


# --- to_losses -------------------------------------------------------------------------------


def test_to_losses_signs_nan_and_inf() -> None:
    values = np.array([[1.0, 2.0], [nan, inf], [-inf, 0.0]])
    before = values.copy()
    losses = to_losses(values, ["maximize", "minimize"])
    np.testing.assert_array_equal(losses, [[-1.0, 2.0], [nan, inf], [inf, 0.0]])
    np.testing.assert_array_equal(values, before)
    assert losses is not values


@pytest.mark.parametrize(
    ("values", "directions", "match"),
    [
        (np.zeros((2, 2)), ["minimize"], "one per objective"),
        (np.zeros((2, 1)), ["max"], "unknown direction"),
        (np.zeros((2, 1)), "minimize", "list of strings"),
        (np.zeros(3), ["minimize"], "2-D"),
    ],
)
def test_to_losses_errors(values: Any, directions: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_losses(values, directions)


def test_what_a_direction_means() -> None:
    values = np.array([3.0, nan, 1.0, 2.0])
    assert higher_is_better("maximize") and not higher_is_better("minimize")
    assert (loss_sign("maximize"), loss_sign("minimize")) == (-1.0, 1.0)
    assert best_value(values[[0, 2, 3]], "maximize") == 3.0
    assert best_value(values[[0, 2, 3]], "minimize") == 1.0
    assert np.isnan(best_value(values, "maximize"))  # a NaN is not skipped unless asked
    assert best_value(values, "minimize", skip_nan=True) == 1.0
    assert better_words("maximize") == "higher is better"
    assert better_words("minimize") == "lower is better"
    with pytest.raises(ValueError, match="unknown direction"):
        loss_sign("max")


# --- non-dominated sort ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("losses", "fronts"),
    [
        ([[1, 2], [2, 1], [2, 2], [3, 3]], [0, 0, 1, 2]),
        ([[1, 1], [1, 1], [2, 2], [2, 2], [1, 3]], [0, 0, 1, 1, 1]),  # ties share a front
        ([[-inf, 5], [0, 0], [inf, -1], [inf, inf], [1, 1]], [0, 0, 0, 2, 1]),
        ([[inf, inf], [inf, inf]], [0, 0]),
        ([[-inf, -inf], [-inf, 0], [0, -inf]], [0, 1, 1]),
        ([[1, 1], [nan, 0], [2, 2], [0, nan]], [0, 2, 1, 2]),  # failed rows last
        ([[nan, nan], [nan, 1]], [0, 0]),
        ([[3], [1], [2], [1], [inf], [-inf]], [3, 1, 2, 1, 4, 0]),  # one objective: dense rank
    ],
)
def test_non_dominated_sort_known_fronts(losses: Any, fronts: list[int]) -> None:
    np.testing.assert_array_equal(non_dominated_sort(np.array(losses, dtype=float)), fronts)


def test_non_dominated_sort_mixed_directions() -> None:
    values = np.array([[10.0, 1.0], [5.0, 1.0], [10.0, 2.0], [5.0, 0.0], [nan, 0.0]])
    losses = to_losses(values, ["maximize", "minimize"])
    np.testing.assert_array_equal(non_dominated_sort(losses), [0, 1, 1, 0, 2])


def test_non_dominated_sort_empty() -> None:
    assert non_dominated_sort(np.zeros((0, 2))).shape == (0,)


@settings(max_examples=200)
@given(loss_matrices(allow_nan=True))
def test_non_dominated_sort_properties(losses: np.ndarray) -> None:
    fronts = non_dominated_sort(losses)
    failed = np.isnan(losses).any(axis=1)
    valid = np.flatnonzero(~failed)
    if failed.any():
        assert (fronts[failed] == fronts.max()).all()
        assert (fronts[~failed] < fronts[failed][0]).all()
    if valid.size:
        assert set(fronts[valid].tolist()) == set(range(fronts[valid].max() + 1))
    for i in valid:
        for j in valid:
            if dominates(losses[i], losses[j]):
                assert fronts[i] < fronts[j]
            if (losses[i] == losses[j]).all():
                assert fronts[i] == fronts[j]
        if fronts[i] > 0:  # each later point is dominated by one of the previous front
            assert any(dominates(losses[j], losses[i]) for j in valid if fronts[j] == fronts[i] - 1)


@settings(max_examples=200)
@given(loss_matrices(allow_nan=True))
def test_pareto_front_is_the_first_front_of_valid_rows(losses: np.ndarray) -> None:
    failed = np.isnan(losses).any(axis=1)
    expected = (non_dominated_sort(losses) == 0) & ~failed
    np.testing.assert_array_equal(pareto_front(losses), expected)


# --- crowding distance -----------------------------------------------------------------------


def test_crowding_distance_hand_computed() -> None:
    losses = np.array([[1.0, 5.0], [2.0, 3.0], [4.0, 2.0], [5.0, 1.0], [6.0, 6.0]])
    fronts = non_dominated_sort(losses)
    np.testing.assert_array_equal(fronts, [0, 0, 0, 0, 1])
    # objective 0, range 4: row 1 gets (4-1)/4, row 2 (5-2)/4;
    # objective 1, range 4: row 1 gets (5-2)/4, row 2 (3-1)/4.
    np.testing.assert_allclose(crowding_distance(losses, fronts), [inf, 1.5, 1.25, inf, inf])


def test_crowding_distance_small_fronts_and_zero_range() -> None:
    one = np.array([[1.0, 1.0]])
    assert crowding_distance(one, np.array([0]))[0] == inf
    two = np.array([[1.0, 2.0], [2.0, 1.0]])
    np.testing.assert_array_equal(crowding_distance(two, np.array([0, 0])), [inf, inf])
    same = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(crowding_distance(same, np.zeros(3, int)), [inf, inf, inf])
    flat = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])  # objective 0 has zero range
    np.testing.assert_array_equal(crowding_distance(flat, np.zeros(3, int)), [inf, 1.0, inf])


def test_crowding_distance_with_infinities() -> None:
    losses = np.array([[-inf, inf], [0.0, 3.0], [1.0, 2.0], [4.0, 0.0]])
    fronts = non_dominated_sort(losses)
    np.testing.assert_array_equal(fronts, [0, 0, 0, 0])
    # objective 0: finite range 4; row 1's lower neighbour -inf is clipped to 0 -> (1-0)/4,
    # row 2 -> (4-0)/4. objective 1: finite range 3; row 1's upper neighbour inf is clipped
    # to 3 -> (3-2)/3, row 2 -> (3-0)/3.
    np.testing.assert_allclose(
        crowding_distance(losses, fronts), [inf, 0.25 + 1 / 3, 1.0 + 1.0, inf]
    )


def test_crowding_distance_identical_rows_share_a_distance() -> None:
    losses = np.array([[0.0, 4.0], [1.0, 3.0], [1.0, 3.0], [2.0, 2.0], [4.0, 0.0]])
    d = crowding_distance(losses, non_dominated_sort(losses))
    assert d[1] == d[2] and np.isfinite(d[1])


def test_crowding_distance_failed_rows_get_zero() -> None:
    losses = np.array([[1.0, 1.0], [nan, 0.0]])
    np.testing.assert_array_equal(crowding_distance(losses, non_dominated_sort(losses)), [inf, 0])


@settings(max_examples=200)
@given(loss_matrices(allow_nan=True), st.randoms(use_true_random=False))
def test_crowding_distance_never_nan_and_order_free(losses: np.ndarray, random: Any) -> None:
    fronts = non_dominated_sort(losses)
    d = crowding_distance(losses, fronts)
    assert not np.isnan(d).any() and (d >= 0).all()
    for f in np.unique(fronts):
        members = np.flatnonzero(fronts == f)
        if members.size <= 2 and not np.isnan(losses[members]).any():
            assert (d[members] == inf).all()
    perm = np.array(random.sample(range(len(losses)), len(losses)), dtype=int)
    np.testing.assert_array_equal(crowding_distance(losses[perm], fronts[perm]), d[perm])


def test_crowding_distance_checks_shapes() -> None:
    with pytest.raises(ValueError, match="one entry per row"):
        crowding_distance(np.zeros((3, 2)), np.zeros(2, int))


# --- rank key --------------------------------------------------------------------------------


def test_nsga2_rank_key_orders_by_front_then_crowding() -> None:
    values = np.array([[1.0, 5.0], [2.0, 3.0], [4.0, 2.0], [5.0, 1.0], [6.0, 6.0], [nan, 0.0]])
    key = nsga2_rank_key(values, MIN2)
    np.testing.assert_array_equal(key, [0, 1, 2, 0, 3, inf])


def test_nsga2_rank_key_mixed_directions() -> None:
    # (return: maximize, wall time: minimize)
    values = np.array([[100.0, 5.0], [50.0, 1.0], [100.0, 9.0], [10.0, 10.0], [nan, nan]])
    key = nsga2_rank_key(values, ["maximize", "minimize"])
    assert key[0] == key[1] == 0  # the Pareto front, both boundary points
    assert 0 < key[2] < key[3] < key[4] == inf


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_nsga2_rank_key_single_objective_is_plain_sorting(direction: str) -> None:
    v = np.array([3.0, 1.0, 2.0, 1.0, nan, 7.0, 2.0, 2.0])
    key = nsga2_rank_key(v[:, None], [direction])
    losses = v if direction == "minimize" else -v
    valid = ~np.isnan(v)
    expected = np.unique(losses[valid], return_inverse=True)[1]
    np.testing.assert_array_equal(key[valid], expected)
    assert key[4] == inf


@settings(max_examples=200)
@given(loss_matrices(allow_nan=True))
def test_nsga2_rank_key_properties(values: np.ndarray) -> None:
    m = values.shape[1]
    key = nsga2_rank_key(values, ["minimize"] * m)
    failed = np.isnan(values).any(axis=1)
    assert (key[failed] == inf).all() and np.isfinite(key[~failed]).all()
    fronts = non_dominated_sort(values)
    crowd = crowding_distance(values, fronts)
    for i in np.flatnonzero(~failed):
        for j in np.flatnonzero(~failed):
            if fronts[i] < fronts[j] or (fronts[i] == fronts[j] and crowd[i] > crowd[j]):
                assert key[i] < key[j]
            if fronts[i] == fronts[j] and crowd[i] == crowd[j]:
                assert key[i] == key[j]
    np.testing.assert_array_equal(key, nsga2_rank_key(values, ["minimize"] * m))


def test_one_objective_fronts_are_those_of_the_general_sort():
    """One objective takes a shortcut (its distinct values in order); the general sort of the
    same column twice must agree, with ties, infinities and failed rows."""
    rng = np.random.default_rng(3)
    column = rng.integers(0, 6, 200).astype(float)
    column[rng.choice(200, 10, replace=False)] = np.inf
    column[rng.choice(200, 10, replace=False)] = -np.inf
    column[rng.choice(200, 10, replace=False)] = np.nan
    one = non_dominated_sort(column[:, None])
    two = non_dominated_sort(np.stack([column, column], axis=1))
    np.testing.assert_array_equal(one, two)
