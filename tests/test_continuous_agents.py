"""Continuous-action agents (SAC, TD3, DDPG): they learn, are deterministic, resume from
checkpoints, start from given weights, fail loudly and validate their hyperparameters."""

from __future__ import annotations

import inspect
import io
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

from hpsrl.agents import (
    ACTION_KINDS,
    TrainingDiverged,
    TrainResult,
    get_algorithm,
    make_hyperparameters,
    ppo,
    sac,
    td3,
)
from hpsrl.agents.checkpoints import Checkpointer, Checkpointing
from hpsrl.agents.continuous import ActionBounds, ReplayBuffer
from hpsrl.agents.episodes import evaluate
from hpsrl.agents.run import RunSettings
from hpsrl.envs.spec import EnvConfigError, EnvSpec
from hpsrl.readers.export import full_hyperparameters, zoo_hyperparameters

PENDULUM = EnvSpec("Pendulum-v1")
REACH = EnvSpec("hpsrl-test/Reach-v0", entry_point="tests.fixtures_envs:ReachEnv")
CONTINUOUS = ["sac", "td3", "ddpg"]

#: Small, fast settings: a few hundred gradient steps; the buffer is smaller than the run.
TINY = {"learning_starts": 100, "batch_size": 32, "hidden_sizes": [16, 16], "buffer_size": 150}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _train(
    algorithm: str,
    steps: int = 300,
    seed: int = 0,
    *,
    env: EnvSpec = PENDULUM,
    checkpoint: Checkpointing | None = None,
    initial_weights: dict[str, np.ndarray] | None = None,
    **hp: Any,
) -> TrainResult:
    return get_algorithm(algorithm).train(
        env,
        make_hyperparameters(algorithm, {**TINY, **hp}),
        RunSettings(
            steps,
            seed,
            eval_seed=1000 + seed,
            eval_episodes=3,
            curve_points=3,
            checkpoint=checkpoint,
            initial_weights=initial_weights,
        ),
    )


def _arrays(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in state.items()}


def _assert_identical(a: TrainResult, b: TrainResult) -> None:
    np.testing.assert_array_equal(a.eval_returns, b.eval_returns)
    np.testing.assert_array_equal(a.curve_returns, b.curve_returns)
    assert a.env_steps == b.env_steps and a.steps_to_threshold == b.steps_to_threshold
    assert a.model_state.keys() == b.model_state.keys()
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name


# -- The algorithms' interface -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_registered_for_continuous_actions_with_the_common_train_signature(algorithm: str) -> None:
    module = get_algorithm(algorithm)
    assert ACTION_KINDS[algorithm] == {"continuous"}
    ours = inspect.signature(module.train).parameters
    theirs = inspect.signature(ppo.train).parameters
    assert list(ours) == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind and ours[name].default == parameter.default, name
    fields = {f for f in module.Hyperparameters.__dataclass_fields__}
    assert set(module.ARCHITECTURE_FIELDS) <= fields


@pytest.mark.parametrize(
    ("algorithm", "values", "message"),
    [
        ("sac", {"ent_coef": 0.0}, "ent_coef must be > 0"),
        ("sac", {"autotune_entropy": "yes"}, "autotune_entropy must be true or false"),
        ("sac", {"tau": 0.0}, r"tau must be in \(0, 1\]"),
        ("sac", {"tau": 1.5}, r"tau must be in \(0, 1\]"),
        ("sac", {"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ("sac", {"learning_rate": "fast"}, "learning_rate must be a number"),
        ("sac", {"hidden_sizes": 64}, "hidden_sizes must be a list"),
        ("sac", {"hidden_sizes": [64, 0]}, "hidden_sizes must be a list of layer widths >= 1"),
        ("sac", {"activation": "sigmoid"}, "activation must be one of"),
        ("td3", {"policy_delay": 0}, "policy_delay must be >= 1"),
        ("td3", {"target_policy_noise": -0.1}, "target_policy_noise must be >= 0"),
        ("td3", {"noise_clip": -1}, "noise_clip must be >= 0"),
        ("td3", {"exploration_noise": -0.1}, "exploration_noise must be >= 0"),
        ("td3", {"batch_size": 0}, "batch_size must be >= 1"),
        ("td3", {"buffer_size": 0}, "buffer_size must be >= 1"),
        ("td3", {"train_frequency": 0}, "train_frequency must be >= 1"),
        ("td3", {"gradient_steps": 2.5}, "gradient_steps must be an integer"),
        ("ddpg", {"learning_starts": -1}, "learning_starts must be >= 0"),
        ("ddpg", {"exploration_noise": -1.0}, "exploration_noise must be >= 0"),
        ("ddpg", {"num_envs": 0}, "num_envs must be >= 1"),
        ("ddpg", {"policy_delay": 2}, r"unknown ddpg hyperparameter\(s\) \['policy_delay'\]"),
    ],
)
def test_invalid_hyperparameters_name_the_field(algorithm: str, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_hyperparameters(algorithm, values)


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_discrete_actions_are_refused(algorithm: str) -> None:
    with pytest.raises(EnvConfigError, match=r"needs continuous \(Box\) actions; CartPole-v1"):
        get_algorithm(algorithm).train(
            EnvSpec("CartPole-v1"),
            make_hyperparameters(algorithm, {}),
            RunSettings(100, 0, eval_seed=1),
        )


# -- Learning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_learns_the_reach_env(algorithm: str) -> None:
    # Random actions score about -13 of 0; a working agent learns the one-step rule (and the
    # mapping of its actions onto the env's bounds [0, 4]) quickly.
    result = _train(algorithm, 1_500, env=REACH, buffer_size=1_500, learning_rate=3e-3)
    assert result.eval_returns.mean() > -1.5  # -0.1 to -0.7 (seed 0)
    assert result.curve_returns[-1] > -3.0  # the exploring policy while training


# -- Result record, determinism, rebuilt policy --------------------------------------------------


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_result_shapes_and_saved_weights(algorithm: str) -> None:
    result = _train(algorithm)
    assert result.eval_returns.shape == (3,) and result.eval_returns.dtype == np.float64
    assert np.isfinite(result.eval_returns).all()
    assert result.curve_steps.tolist() == [100, 200, 300]
    assert result.curve_returns.shape == (3,) and result.curve_returns.dtype == np.float64
    assert math.isnan(result.curve_returns[0]) and np.isfinite(result.curve_returns[1:]).all()
    assert result.steps_to_threshold == math.inf
    assert result.env_steps == 300
    assert result.train_seconds > 0 and result.eval_seconds > 0
    names = set(result.model_state)
    assert {"actor.net.0.weight", "critic.qs.0.0.weight"} <= names
    assert ("critic.qs.1.0.weight" in names) == (algorithm != "ddpg")  # DDPG has one critic
    assert ("entropy.log_alpha" in names) == (algorithm == "sac")
    buffer = io.BytesIO()
    torch.save(result.model_state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded.keys() == result.model_state.keys()


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_same_seeds_give_identical_results(algorithm: str) -> None:
    first = _train(algorithm, seed=5)
    _assert_identical(first, _train(algorithm, seed=5))
    other = _train(algorithm, seed=6)
    assert any(not torch.equal(t, other.model_state[n]) for n, t in first.model_state.items())


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_greedy_policy_rebuilds_the_trained_agent(algorithm: str) -> None:
    result = _train(algorithm, seed=3)
    hp = make_hyperparameters(algorithm, TINY)
    weights = _arrays(result.model_state)
    policy = get_algorithm(algorithm).greedy_policy(PENDULUM, hp, weights)
    np.testing.assert_array_equal(evaluate(policy, PENDULUM, 3, seed=1003), result.eval_returns)
    actions = policy(np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32) * 10)
    assert actions.shape == (50, 1) and actions.dtype == np.float32
    assert (np.abs(actions) <= 2.0).all()  # Pendulum's torque bounds

    with pytest.raises(ValueError, match="do not fit this network"):
        get_algorithm(algorithm).greedy_policy(
            PENDULUM, make_hyperparameters(algorithm, {**TINY, "hidden_sizes": [7]}), weights
        )


def test_training_leaves_global_rngs_alone() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
    _train("sac", 150)
    assert np.random.rand() == np.random.RandomState(0).rand()


# -- Divergence ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_absurd_learning_rate_raises_training_diverged(algorithm: str) -> None:
    messages = []
    for _ in range(2):
        with pytest.raises(TrainingDiverged, match="at env step") as info:
            _train(algorithm, 2_000, learning_rate=1e20)
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # deterministic: same step, same loss
    assert algorithm.upper() in messages[0]


# -- Checkpoints -----------------------------------------------------------------------------------


class _Killed(Exception):
    """Stands for a SIGKILL right after a checkpoint was written."""


def _save_then_die(self: Checkpointer, global_step: int, state: dict[str, Any]) -> None:
    _original_save(self, global_step, state)
    raise _Killed


_original_save = Checkpointer.save


@pytest.mark.parametrize(
    ("algorithm", "num_envs", "steps", "saved_at", "stored", "critic_steps"),
    [
        # one env: episode 1 ends at step 200, its reset step is not stored
        ("sac", 1, 400, 250, 249, 150),
        ("td3", 1, 400, 250, 249, 150),
        ("ddpg", 1, 400, 250, 249, 150),
        # three envs: vector steps of 3 env steps, 3 gradient steps each from env step 102 on
        ("sac", 3, 700, 252, 252, 153),
    ],
)
def test_killed_and_resumed_run_equals_uninterrupted_run(
    algorithm: str,
    num_envs: int,
    steps: int,
    saved_at: int,
    stored: int,
    critic_steps: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "seed0.pt"
    checkpointing = Checkpointing(path, every_steps=250, every_seconds=None)
    uninterrupted = _train(algorithm, steps, num_envs=num_envs)
    assert np.isfinite(uninterrupted.curve_returns[-1])  # episodes ended
    saving = _train(algorithm, steps, checkpoint=checkpointing, num_envs=num_envs)
    _assert_identical(uninterrupted, saving)
    path.unlink()  # saving changed nothing; now a run that dies right after its first save

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", _save_then_die)
        with pytest.raises(_Killed):
            _train(algorithm, steps, checkpoint=checkpointing, num_envs=num_envs)
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == saved_at and saved["fingerprint"]["algorithm"] == algorithm
    assert saved["replay"]["stored"] == stored
    assert saved["replay"]["obs"].shape == (150, 3)  # the ring has wrapped around
    assert saved["env"]["kind"] == "SyncVectorEnv"
    assert saved["critic_optimizer"]["state"][0]["step"] == critic_steps

    with caplog.at_level(logging.INFO, logger="hpsrl"):
        resumed = _train(algorithm, steps, checkpoint=checkpointing, num_envs=num_envs)
    assert f"resuming from env step {saved_at} (env state restored)" in caplog.text
    assert "WARNING" not in caplog.text
    _assert_identical(uninterrupted, resumed)


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_resumed_run_of_an_env_without_saved_state_goes_on(
    algorithm: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "seed0.pt"
    checkpointing = Checkpointing(path, every_steps=250, every_seconds=None)
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", _save_then_die)
        with pytest.raises(_Killed):
            _train(algorithm, 400, env=REACH, checkpoint=checkpointing)
    assert torch.load(path, weights_only=True)["env"] is None
    with caplog.at_level(logging.INFO, logger="hpsrl"):
        resumed = _train(algorithm, 400, env=REACH, checkpoint=checkpointing)
    assert re.search(
        "resuming from env step 250, but .* not saved.* not bit-identical", caplog.text
    )
    assert resumed.env_steps == 400
    assert np.isfinite(resumed.eval_returns).all() and np.isfinite(resumed.curve_returns).all()


# -- Starting from given weights -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_starts_from_the_given_weights_and_copies_them_to_the_targets(
    algorithm: str, tmp_path: Path
) -> None:
    parent = _train(algorithm, seed=1)
    weights = _arrays(parent.model_state)
    # learning_starts beyond the budget: no gradient step, so the weights stay the given ones
    path = tmp_path / "seed0.pt"
    child = _train(
        algorithm,
        50,
        seed=1,
        learning_starts=1_000,
        initial_weights=weights,
        checkpoint=Checkpointing(path, every_steps=50, every_seconds=None),
    )
    for name, tensor in child.model_state.items():
        np.testing.assert_array_equal(tensor.numpy(), weights[name], err_msg=name)
    np.testing.assert_array_equal(child.eval_returns, parent.eval_returns)  # same eval seed
    saved = torch.load(path, weights_only=True)
    assert saved["fingerprint"]["initial_weights"]
    targets = {f"critic.{n}": t for n, t in saved["target_critic"].items()}
    targets |= {f"actor.{n}": t for n, t in saved.get("target_actor", {}).items()}
    assert len(targets) > 6
    for name, tensor in targets.items():
        np.testing.assert_array_equal(tensor.numpy(), weights[name], err_msg=name)

    scratch = _train(algorithm, 50, seed=1, learning_starts=1_000)
    assert not np.array_equal(
        scratch.model_state["actor.net.0.weight"], weights["actor.net.0.weight"]
    )


def test_ddpg_weights_do_not_fit_td3_and_wrong_shapes_are_named() -> None:
    ddpg_weights = _arrays(_train("ddpg", 50).model_state)
    with pytest.raises(ValueError, match=r"missing: critic\.qs\.1\.0\.bias, critic\.qs\.1\.0\.w"):
        _train("td3", 50, initial_weights=ddpg_weights)
    with pytest.raises(ValueError, match=r"wrong shape: actor\.net\.0\.weight \(16, 3\) \(the net"):
        _train("ddpg", 50, hidden_sizes=[8, 8], initial_weights=ddpg_weights)


def test_sac_entropy_coefficient_is_learned_or_fixed() -> None:
    learned = _train("sac", ent_coef=0.5)
    assert float(learned.model_state["entropy.log_alpha"]) != pytest.approx(math.log(0.5))
    fixed = _train("sac", ent_coef=0.05, autotune_entropy=False)
    assert float(fixed.model_state["entropy.log_alpha"]) == pytest.approx(math.log(0.05))
    # fixed, alpha is the hyperparameter's even when the initial weights hold another
    child = _train(
        "sac",
        ent_coef=0.05,
        autotune_entropy=False,
        initial_weights=_arrays(learned.model_state),
    )
    assert float(child.model_state["entropy.log_alpha"]) == pytest.approx(math.log(0.05))


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_rl_zoo_entries_are_stable_baselines3_arguments(algorithm: str) -> None:
    hp = full_hyperparameters(algorithm, {"exploration_noise": 0.3} if algorithm != "sac" else {})
    entry, unmapped = zoo_hyperparameters(algorithm, hp, 20_000)
    assert unmapped == {}  # every setting has an SB3 equivalent
    assert entry["train_freq"] == hp["train_frequency"] and entry["tau"] == hp["tau"]
    if algorithm == "sac":
        assert entry["ent_coef"] == f"auto_{hp['ent_coef']}"
        fixed = full_hyperparameters("sac", {"autotune_entropy": False, "ent_coef": 0.1})
        assert zoo_hyperparameters("sac", fixed, 20_000)[0]["ent_coef"] == 0.1
    else:
        assert (entry["noise_type"], entry["noise_std"]) == ("normal", 0.3)
    if algorithm == "td3":
        assert entry["target_noise_clip"] == hp["noise_clip"]
    sb3 = pytest.importorskip("stable_baselines3")
    accepted = set(inspect.signature(getattr(sb3, algorithm.upper()).__init__).parameters)
    read_by_the_zoo = {"n_envs", "n_timesteps", "noise_type", "noise_std"}
    assert set(entry) - read_by_the_zoo <= accepted


# -- Shared pieces -------------------------------------------------------------------------------


def test_sac_log_probs_match_torch_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    actor = sac.Actor(3, 2, (16,), "tanh", generator)
    with torch.no_grad():  # a policy head wide enough to test the squashing's correction
        actor.net[-1].weight.mul_(50.0)
    obs = torch.randn(64, 3, generator=generator)
    noise = torch.randn(64, 2, generator=generator)
    with torch.no_grad():
        actions, log_probs = actor(obs, noise)
        mean, log_std = actor.net(obs).chunk(2, -1)
    log_std = log_std.clamp(sac.LOG_STD_MIN, sac.LOG_STD_MAX)
    squashed = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()),
        [torch.distributions.transforms.TanhTransform()],
    )
    pre_tanh = mean + log_std.exp() * noise
    torch.testing.assert_close(actions, torch.tanh(pre_tanh))
    assert actions.abs().max() > 0.9  # some actions are far into the tanh's tails
    # the transform's log-det is evaluated at the pre-tanh sample (atanh of a rounded tanh is not)
    reference = squashed.base_dist.log_prob(pre_tanh) - squashed.transforms[0].log_abs_det_jacobian(
        pre_tanh, actions
    )
    torch.testing.assert_close(log_probs, reference.sum(-1), rtol=1e-5, atol=1e-4)


def test_action_bounds_map_the_unit_box_onto_the_envs_bounds() -> None:
    space = spaces.Box(np.float32([-2.0, 0.0]), np.float32([2.0, 10.0]), dtype=np.float32)
    bounds = ActionBounds(space, "SAC", "test")
    actions = np.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    out = bounds.to_env(actions)
    assert out.dtype == np.float32 and bounds.dim == 2
    np.testing.assert_allclose(out, [[-2.0, 0.0], [0.0, 5.0], [2.0, 10.0]])
    with pytest.raises(EnvConfigError, match="needs bounded actions"):
        ActionBounds(spaces.Box(-np.inf, np.inf, shape=(1,)), "TD3", "test")
    with pytest.raises(EnvConfigError, match=r"TD3 needs continuous \(Box\) actions"):
        ActionBounds(spaces.Discrete(2), "TD3", "test")


def test_replay_buffer_skips_reset_steps_wraps_and_round_trips() -> None:
    buffer = ReplayBuffer(capacity=3, obs_dim=1, act_dim=1)

    def step(t: float, reset: list[bool]) -> None:
        obs = np.array([[t], [t + 0.5]], dtype=np.float32)
        actions = -obs
        buffer.add(
            obs, actions, np.array([t, t]), obs + 1, np.array([t == 1, False]), np.array(reset)
        )

    step(0, [False, False])
    step(1, [False, True])  # env 1 is on a reset step: not a transition
    assert buffer.stored == 3
    np.testing.assert_array_equal(buffer.arrays["obs"][:, 0], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(buffer.arrays["terminated"], [0.0, 0.0, 1.0])
    step(2, [True, False])  # wraps around: overwrites the oldest transition
    assert buffer.stored == 4
    np.testing.assert_array_equal(buffer.arrays["obs"][:, 0], [2.5, 0.5, 1.0])
    np.testing.assert_array_equal(buffer.arrays["actions"][:, 0], [-2.5, -0.5, -1.0])

    batch = buffer.sample(np.random.default_rng(0), 4, 5)
    assert batch["obs"].shape == (4, 5, 1) and batch["rewards"].shape == (4, 5)
    np.testing.assert_array_equal(batch["next_obs"], batch["obs"] + 1)
    np.testing.assert_array_equal(batch["not_terminal"] == 0, batch["obs"][..., 0] == 1.0)

    again = ReplayBuffer(capacity=3, obs_dim=1, act_dim=1)
    again.load_state_dict(buffer.state_dict())
    assert again.stored == 4
    for name, array in buffer.arrays.items():
        np.testing.assert_array_equal(again.arrays[name], array, err_msg=name)


# -- Learning (sanity bars of issue #7) ----------------------------------------------------------
# Pendulum's return depends much on the start state (a good policy scores 0 to -350 an episode), so
# the mean is taken over 50 evaluation episodes: over 10 the same policy may score -140 or -195.


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sac_learns_pendulum_within_20k_steps(seed: int) -> None:
    # the defaults are the hand-picked Pendulum settings (RL Zoo's learning rate, smaller networks)
    result = sac.train(
        PENDULUM,
        sac.Hyperparameters(),
        RunSettings(20_000, seed, eval_seed=100 + seed, eval_episodes=50),
    )
    assert result.eval_returns.mean() >= -200  # a random policy gets about -1200
    assert result.curve_returns[-1] >= -250  # the stochastic policy while training


@pytest.mark.slow
def test_td3_learns_pendulum_within_20k_steps() -> None:
    result = td3.train(
        PENDULUM, td3.Hyperparameters(), RunSettings(20_000, 0, eval_seed=100, eval_episodes=50)
    )
    assert result.eval_returns.mean() >= -200


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_runs_on_lunar_lander_continuous(algorithm: str) -> None:
    pytest.importorskip("Box2D", reason="needs gymnasium[box2d]")
    result = _train(algorithm, 1_500, env=EnvSpec("LunarLanderContinuous-v3"), num_envs=2)
    assert result.env_steps == 1_500 and np.isfinite(result.eval_returns).all()
