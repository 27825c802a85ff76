"""The laser beam-combining environment: gymnasium's checker, the optics, the task, the config."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from hpsrl.campaign.config import check_environment, load_config, load_yaml
from hpsrl.envs.beam_combining import ENV_ID, BeamCombiningEnv, wrap_phase
from hpsrl.envs.spec import EnvSpec

from .conftest import REPO


def image(env: BeamCombiningEnv, obs: np.ndarray) -> np.ndarray:
    """The camera part of an observation."""
    return obs[: env.camera_pixels**2]


@pytest.mark.parametrize("action_type", ["continuous", "discrete"])
@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_gymnasium_env_checker_passes(action_type: str, render_mode: str | None) -> None:
    env = gymnasium.make(ENV_ID, action_type=action_type, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings count as failures too
        check_env(env.unwrapped)
    env.close()


def test_spaces() -> None:
    env = BeamCombiningEnv(n=3, action_type="discrete")
    assert env.action_space == gymnasium.spaces.Discrete(19)
    # a 9 x 9 camera, the 9 phase changes just applied, efficiency and its change
    assert env.observation_space.shape == (81 + 9 + 2,)
    assert BeamCombiningEnv(n=4).action_space.shape == (16,)
    assert gymnasium.spec(ENV_ID).max_episode_steps == 200


def far_field_by_hand(env: BeamCombiningEnv, phases: np.ndarray) -> np.ndarray:
    """|fft2|^2 of the near field built beam by beam in the middle of the grid, fftshifted."""
    p = env._aperture.shape[0]
    grid = env._grid
    near = np.zeros((grid, grid), dtype=np.complex128)
    corner = (grid - env.n * p) // 2
    for j, phi in enumerate(phases):
        row, col = corner + (j // env.n) * p, corner + (j % env.n) * p
        near[row : row + p, col : col + p] = env._aperture * np.exp(1j * phi)
    return np.abs(np.fft.fftshift(np.fft.fft2(near))) ** 2


@pytest.mark.parametrize(("n", "profile"), [(2, "gaussian"), (3, "gaussian"), (3, "tophat")])
def test_camera_and_efficiency_match_a_plain_fft2(n: int, profile: str) -> None:
    env = BeamCombiningEnv(n=n, profile=profile)
    centre = env._grid // 2
    low, high = centre - env.camera_pixels // 2, centre - env.camera_pixels // 2 + env.camera_pixels
    y, x = np.mgrid[-centre : env._grid - centre, -centre : env._grid - centre]
    pinhole = x**2 + y**2 <= (env.camera_pixels / n / 2) ** 2  # radius oversampling / 2
    ideal = far_field_by_hand(env, np.zeros(n * n))
    assert ideal.argmax() == centre * env._grid + centre  # in phase: the peak is on the axis
    rng = np.random.default_rng(0)
    for _ in range(5):
        phases = rng.uniform(-np.pi, np.pi, n * n)
        far = far_field_by_hand(env, phases)
        expected = far[pinhole].sum() / ideal[pinhole].sum()
        assert env.combining_efficiency(phases) == pytest.approx(expected, rel=1e-9)
        obs, _ = env.reset(options={"phases": phases})
        camera = far[low:high, low:high]
        np.testing.assert_allclose(
            image(env, obs), (camera / ideal[centre, centre]).ravel(), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("n", [2, 3, 4])
def test_in_phase_is_ideal_and_random_phases_are_not(n: int) -> None:
    env = BeamCombiningEnv(n=n)
    assert env.combining_efficiency(np.zeros(n * n)) == pytest.approx(1.0, abs=1e-6)
    assert env.combining_efficiency(np.full(n * n, 2.0)) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(1)
    random = [env.combining_efficiency(rng.uniform(-np.pi, np.pi, n * n)) for _ in range(200)]
    assert max(random) < 0.999
    # Random phasors add incoherently: about 1.5 / N^2 of the in-phase power on average.
    assert 0.8 / n**2 < np.mean(random) < 2.5 / n**2
    # In phase is a maximum: every small change of pistons lowers the efficiency.
    for _ in range(20):
        assert env.combining_efficiency(rng.normal(0.0, 0.05, n * n)) < 1.0


def test_efficiency_falls_with_the_phase_error() -> None:
    env = BeamCombiningEnv(n=3)
    rng = np.random.default_rng(2)
    means = [
        np.mean([env.combining_efficiency(rng.normal(0.0, sigma, 9)) for _ in range(100)])
        for sigma in (0.1, 0.3, 0.6, 1.2)
    ]
    assert all(a > b for a, b in itertools.pairwise(means))
    # Small errors: the Marechal approximation, efficiency ~ exp(-sigma^2) (within a few %).
    assert means[0] == pytest.approx(math.exp(-(0.1**2)), abs=0.02)


def test_global_piston_and_twin_image_leave_the_camera_unchanged() -> None:
    env = BeamCombiningEnv(n=3)
    phases = np.random.default_rng(3).uniform(-np.pi, np.pi, 9)
    obs, info = env.reset(options={"phases": phases})
    shifted, shifted_info = env.reset(options={"phases": phases + 1.234})
    np.testing.assert_allclose(shifted, obs, atol=1e-6)
    assert shifted_info["efficiency"] == pytest.approx(info["efficiency"], abs=1e-9)
    # The twin image: pistons negated and point-reflected through the array's centre.
    twin = -phases.reshape(3, 3)[::-1, ::-1].ravel()
    np.testing.assert_allclose(env.reset(options={"phases": twin})[0], obs, atol=1e-6)
    # A different (not global) change does show.
    other = phases.copy()
    other[4] += 0.5
    changed = image(env, env.reset(options={"phases": other})[0])
    assert np.abs(changed - image(env, obs)).max() > 0.01


def test_a_global_piston_action_changes_only_the_action_part_of_the_observation() -> None:
    env = BeamCombiningEnv(n=3, action_type="continuous")
    obs, _ = env.reset(seed=4)
    after, reward, terminated, _, info = env.step(np.full(9, 0.7, dtype=np.float32))
    np.testing.assert_allclose(image(env, after), image(env, obs), atol=1e-6)
    np.testing.assert_allclose(after[81:90], 0.7, atol=1e-6)  # the correction just applied
    assert after[-1] == pytest.approx(0.0, abs=1e-6)  # no change of efficiency
    assert reward == pytest.approx(info["efficiency"] - 1.0)
    assert not terminated


def test_the_negative_of_the_initial_error_succeeds_in_one_step() -> None:
    env = gymnasium.make(ENV_ID, phase_step=math.pi)
    _, info = env.reset(seed=5)
    assert info["efficiency"] < 0.9
    initial = env.unwrapped.phases.copy()
    _, reward, terminated, truncated, info = env.step((-initial / math.pi).astype(np.float32))
    assert terminated and not truncated and info["is_success"]
    assert info["efficiency"] == pytest.approx(1.0, abs=1e-6)
    assert info["phase_error_rms"] == pytest.approx(0.0, abs=1e-6)
    assert reward == pytest.approx(10.0, abs=1e-6)  # efficiency - 1 = 0, plus the success bonus
    env.close()


def test_bounded_corrections_reach_the_goal_in_as_few_steps_as_the_largest_error_needs() -> None:
    env = gymnasium.make(ENV_ID)  # continuous, at most pi/4 per beam per step
    _, info = env.reset(seed=6)
    remaining = -env.unwrapped.phases.copy()
    steps_needed = math.ceil(np.abs(remaining).max() / (math.pi / 4) - 1e-9)
    assert steps_needed >= 2  # this seed's largest error needs more than one step
    for _ in range(steps_needed):
        action = np.clip(remaining / (math.pi / 4), -1.0, 1.0)
        remaining -= action * math.pi / 4
        _, _, terminated, _, info = env.step(action.astype(np.float32))
        if terminated:
            break
    assert terminated and info["is_success"]
    env.close()


def test_discrete_nudges_move_one_beam_each() -> None:
    env = BeamCombiningEnv(n=2, action_type="discrete", phase_step=0.25)
    start = np.array([0.5, -0.25, 0.0, 0.75])  # whole multiples of the step
    env.reset(options={"phases": start})
    assert env.action_space.n == 9
    env.step(0)  # no-op
    np.testing.assert_allclose(env.phases, start)
    env.step(1 + 3)  # raises beam 3
    np.testing.assert_allclose(env.phases, start + np.array([0, 0, 0, 0.25]))
    env.step(1 + 4 + 3)  # lowers beam 3
    np.testing.assert_allclose(env.phases, start)
    # Nudge every beam to 0: the last nudge lands on the ideal and ends the episode.
    plan = [1 + 4 + 0] * 2 + [1 + 1] + [1 + 4 + 3] * 3
    for action in plan:
        _, reward, terminated, _, info = env.step(action)
        if terminated:
            break
    assert terminated and info["is_success"] and info["efficiency"] >= 0.9
    assert reward == pytest.approx(info["efficiency"] - 1.0 + 10.0)
    with pytest.raises(ValueError, match="action 9 not in"):
        env.step(9)


def test_same_seed_same_episode_and_other_seeds_differ() -> None:
    def episode(seed: int, drift: float) -> list[np.ndarray]:
        env = gymnasium.make(ENV_ID, action_type="discrete", drift=drift)
        env.action_space.seed(0)
        out = [env.reset(seed=seed)[0]]
        for _ in range(30):
            obs, reward, *_ = env.step(env.action_space.sample())
            out += [obs, np.array([reward])]
        env.close()
        return out

    for drift in (0.0, 0.05):
        a, b, c = episode(7, drift), episode(7, drift), episode(8, drift)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(episode(7, 0.0)[-2], episode(7, 0.05)[-2])


def test_drift_moves_the_phases_and_zero_drift_holds_them() -> None:
    still = BeamCombiningEnv(n=3, action_type="discrete")
    still.reset(seed=9)
    start = still.phases.copy()
    for _ in range(10):
        still.step(0)
    np.testing.assert_array_equal(still.phases, start)
    drifting = BeamCombiningEnv(n=3, action_type="discrete", drift=0.1)
    drifting.reset(seed=9)
    start = drifting.phases.copy()
    for _ in range(100):
        drifting.step(0)
    moved = wrap_phase(drifting.phases - start)
    assert 0.5 < np.std(moved) < 1.5  # a random walk: about 0.1 x sqrt(100) = 1 radian


def test_phase_error_sets_the_spread_of_initial_phases() -> None:
    env = BeamCombiningEnv(n=3, phase_error=0.2)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert np.abs(env.phases).max() < 0.2
        assert info["efficiency"] > 0.8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 1}, r"n \(beams per side\) must be an integer >= 2, got 1"),
        ({"n": 2.5}, r"n \(beams per side\) must be an integer >= 2"),
        ({"action_type": "multi"}, r"action_type must be one of \('continuous', 'discrete'\)"),
        ({"phase_step": 0.0}, r"phase_step must be in \(0, pi\]"),
        ({"phase_step": 4.0}, r"phase_step must be in \(0, pi\]"),
        ({"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        ({"phase_error": -1.0}, r"phase_error must be in \[0, pi\]"),
        ({"drift": -0.1}, "drift must be >= 0"),
        ({"success_bonus": -1.0}, "success_bonus must be >= 0"),
        ({"profile": "bessel"}, "profile must be one of"),
        ({"fill_factor": 0.0}, r"fill_factor must be in \(0, 1\]"),
        ({"pixels_per_beam": 2}, "pixels_per_beam must be an integer >= 4"),
        ({"oversampling": 1}, "oversampling must be an integer >= 2"),
        ({"render_mode": "human"}, "render_mode must be None or one of"),
    ],
)
def test_bad_kwargs_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BeamCombiningEnv(**kwargs)


def test_bad_initial_phases_are_refused() -> None:
    env = BeamCombiningEnv(n=2)
    with pytest.raises(ValueError, match="must be 4 finite radians"):
        env.reset(options={"phases": [0.0, 1.0]})


def test_render_shows_pistons_and_far_field() -> None:
    env = BeamCombiningEnv(n=3, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.max() > 200
    assert BeamCombiningEnv(n=3).render() is None


def test_the_id_works_without_imports_and_hpsrl_envs_stays_cheap() -> None:
    code = (
        "import sys, hpsrl.envs.spec\n"
        "assert 'hpsrl.envs.beam_combining' not in sys.modules\n"
        "spec = hpsrl.envs.spec.EnvSpec.from_config({'id': 'hpsrl/BeamCombining-v0'})\n"
        "spec.check()\n"
        "assert 'hpsrl.envs.beam_combining' in sys.modules\n"
        "envs = spec.make_vector(3)\n"
        "obs, _ = envs.reset(seed=0)\n"
        "print(type(envs).__name__, obs.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SyncVectorEnv", "(3,", "92)"]


def test_vector_env_steps_and_resets_episodes() -> None:
    spec = EnvSpec(ENV_ID, kwargs={"action_type": "discrete", "max_episode_steps": 5})
    envs = spec.make_vector(2)
    envs.reset(seed=0)
    ended = np.zeros(2, dtype=bool)
    for _ in range(5):
        _, rewards, terminated, truncated, _ = envs.step(np.zeros(2, dtype=np.int64))
        assert (rewards < 0).all()  # below the threshold every step costs
        ended |= terminated | truncated
    assert ended.all()
    envs.close()


def test_example_config_is_valid_and_uses_discrete_actions() -> None:
    config = load_config(load_yaml(REPO / "config" / "examples" / "beam-combining-ppo.yaml"))
    assert config["env"]["id"] == ENV_ID
    assert check_environment(config) == "discrete"
