"""Agents: they learn, are deterministic, fail loudly, and validate their hyperparameters."""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from hpsrl.agents import (
    ACTION_KINDS,
    ALGORITHMS,
    TrainingDiverged,
    dqn,
    get_algorithm,
    hyperparameters_of,
    make_hyperparameters,
    ppo,
)
from hpsrl.agents.episodes import EpisodeTracker, evaluate
from hpsrl.agents.hyperparameters import ACTIVATION_NAMES
from hpsrl.agents.networks import ACTIVATIONS, MLP, FlatAdam, build_mlp, greedy_actions
from hpsrl.agents.run import RunSettings, TrainResult
from hpsrl.envs.spec import EnvConfigError, EnvSpec
from tests.conftest import REPO

CARTPOLE = EnvSpec("CartPole-v1")
MATCH = EnvSpec("hpsrl-test/Match-v0", entry_point="tests.fixtures_envs:MatchEnv")

#: Small, fast settings for tests that only need a few updates.
TINY = {
    "ppo": {"num_envs": 4, "num_steps": 32, "batch_size": 64, "update_epochs": 2},
    "dqn": {"learning_starts": 200, "train_frequency": 16, "gradient_steps": 4, "buffer_size": 500},
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _train(algorithm: str, env: EnvSpec, steps: int, seed: int = 0, **hp: object) -> TrainResult:
    module = get_algorithm(algorithm)
    return module.train(
        env,
        make_hyperparameters(algorithm, {**TINY[algorithm], **hp}),
        RunSettings(steps, seed, eval_seed=1000 + seed, eval_episodes=5, curve_points=4),
    )


@pytest.mark.parametrize(("algorithm", "named"), [("ppo", "PPO here"), ("dqn", "DQN")])
def test_continuous_actions_are_refused(algorithm: str, named: str) -> None:
    with pytest.raises(EnvConfigError, match=f"{named} needs discrete actions; Pendulum-v1"):
        get_algorithm(algorithm).train(
            EnvSpec("Pendulum-v1"),
            make_hyperparameters(algorithm, {}),
            RunSettings(100, 0, eval_seed=1),
        )


# -- Learning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_learns_the_match_env(algorithm: str) -> None:
    # Random play scores about 5 of 10; a working agent learns the one-step rule quickly.
    result = _train(algorithm, MATCH, 3_000, learning_rate=3e-3)
    assert result.eval_returns.tolist() == [10.0] * 5


@pytest.mark.slow
def test_ppo_learns_cartpole() -> None:
    result = ppo.train(CARTPOLE, ppo.Hyperparameters(), RunSettings(20_000, seed=0, eval_seed=1))
    assert result.eval_returns.mean() > 100  # a random policy gets about 22
    assert result.curve_returns[-1] > 50


@pytest.mark.slow
def test_dqn_learns_cartpole() -> None:
    hp = dqn.Hyperparameters(learning_starts=500, gradient_steps=32)
    result = dqn.train(CARTPOLE, hp, RunSettings(15_000, seed=0, eval_seed=1))
    # A random policy gets about 22. After 15k steps the greedy return of one seed still varies
    # widely (40 to 470 over 32 seeds, median about 130); the training curve less so.
    assert result.eval_returns.mean() > 30
    assert result.curve_returns[-1] > 50


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "env_id"), [("dqn", "Acrobot-v1"), ("ppo", "LunarLander-v3")]
)
def test_runs_on_other_envs(algorithm: str, env_id: str) -> None:
    if env_id.startswith("LunarLander"):
        pytest.importorskip("Box2D", reason="needs gymnasium[box2d]")
    result = _train(algorithm, EnvSpec(env_id), 1_500)
    assert np.isfinite(result.eval_returns).all()


# -- Result record -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_result_shapes_and_saved_weights(algorithm: str) -> None:
    result = _train(algorithm, CARTPOLE, 1_000)
    assert result.eval_returns.shape == (5,) and result.eval_returns.dtype == np.float64
    assert result.curve_steps.tolist() == [250, 500, 750, 1000]
    assert result.curve_steps.dtype == np.int64
    assert result.curve_returns.shape == (4,) and result.curve_returns.dtype == np.float64
    assert result.steps_to_threshold == math.inf
    assert result.env_steps >= 1_000
    assert result.train_seconds > 0 and result.eval_seconds > 0
    buffer = io.BytesIO()
    torch.save(result.model_state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded.keys() == result.model_state.keys()


def test_saved_ppo_weights_rebuild_the_policy() -> None:
    hp = make_hyperparameters("ppo", TINY["ppo"])
    result = ppo.train(CARTPOLE, hp, RunSettings(500, seed=3, eval_seed=4, eval_episodes=3))
    agent = ppo.Agent(4, 2, hp.hidden_sizes, hp.activation)
    agent.load_state_dict(result.model_state)
    again = evaluate(greedy_actions(agent.actor, hp.activation), CARTPOLE, 3, seed=4)
    np.testing.assert_array_equal(again, result.eval_returns)


# -- Determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_same_seeds_give_identical_results(algorithm: str) -> None:
    first = _train(algorithm, CARTPOLE, 2_000, seed=5)
    second = _train(algorithm, CARTPOLE, 2_000, seed=5)
    np.testing.assert_array_equal(first.eval_returns, second.eval_returns)
    np.testing.assert_array_equal(first.curve_returns, second.curve_returns)
    for name, tensor in first.model_state.items():
        assert torch.equal(tensor, second.model_state[name]), name
    other = _train(algorithm, CARTPOLE, 2_000, seed=6)
    assert any(not torch.equal(t, other.model_state[name]) for name, t in first.model_state.items())


def test_training_leaves_global_rngs_alone() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
    _train("ppo", CARTPOLE, 300)
    assert np.random.rand() == np.random.RandomState(0).rand()


# -- Divergence ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_absurd_learning_rate_raises_training_diverged(algorithm: str) -> None:
    messages = []
    for _ in range(2):
        with pytest.raises(TrainingDiverged, match="at env step") as info:
            _train(algorithm, CARTPOLE, 5_000, learning_rate=1e20, activation="relu")
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # deterministic: same step, same loss


# -- Hyperparameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "values", "message"),
    [
        ("ppo", {"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ("ppo", {"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
        ("ppo", {"learning_rate": -1e-3}, "learning_rate must be > 0"),
        ("ppo", {"batch_size": 0}, "batch_size must be >= 1"),
        ("ppo", {"batch_size": -64}, "batch_size must be >= 1"),
        ("ppo", {"activation": "sigmoid"}, "activation must be one of"),
        ("ppo", {"hidden_sizes": [64, 0]}, "hidden_sizes must be"),
        ("ppo", {"hidden_sizes": 64}, "hidden_sizes must be"),
        ("ppo", {"num_steps": 12.5}, "num_steps must be an integer"),
        ("ppo", {"num_steps": 1, "batch_size": 8}, "num_steps must be >= 2"),
        ("ppo", {"anneal_lr": "yes"}, "anneal_lr must be true or false"),
        ("ppo", {"gae_lambda": 1.1}, r"gae_lambda must be in \[0, 1\]"),
        ("dqn", {"epsilon": 1.5}, r"epsilon must be in \[0, 1\]"),
        ("dqn", {"tau": 0.0}, r"tau must be in \(0, 1\]"),
        ("dqn", {"batch_size": 0}, "batch_size must be >= 1"),
        ("dqn", {"target_update_interval": 0}, "target_update_interval must be >= 1"),
        ("dqn", {"learning_rate": "fast"}, "learning_rate must be a number"),
    ],
)
def test_invalid_hyperparameters_name_the_field(algorithm: str, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_hyperparameters(algorithm, values)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_defaults_are_valid_and_types_are_normalised(algorithm: str) -> None:
    hp = make_hyperparameters(
        algorithm,
        {"hidden_sizes": np.array([32, 16]), "num_envs": np.int64(4), "gamma": np.float32(0.5)},
    )
    assert hp.hidden_sizes == (32, 16)
    assert type(hp.num_envs) is int and type(hp.gamma) is float
    assert make_hyperparameters(algorithm, {"hidden_sizes": [8]}).hidden_sizes == (8,)
    assert make_hyperparameters(algorithm, {"num_envs": 4.0}).num_envs == 4
    assert dataclasses.is_dataclass(hp) and hash(hp) == hash(dataclasses.replace(hp))


def test_ppo_batch_size_above_the_rollout_means_one_minibatch() -> None:
    # A GA draws batch_size and the rollout size independently; a larger batch_size is allowed.
    hp = make_hyperparameters("ppo", {"num_envs": 2, "num_steps": 8, "batch_size": 10_000})
    assert hp.batch_size == 10_000
    whole = _train("ppo", CARTPOLE, 400, num_envs=2, num_steps=16, batch_size=32)
    larger = _train("ppo", CARTPOLE, 400, num_envs=2, num_steps=16, batch_size=10_000)
    for name, tensor in whole.model_state.items():
        assert torch.equal(tensor, larger.model_state[name]), name
    split = _train("ppo", CARTPOLE, 400, num_envs=2, num_steps=16, batch_size=8)
    assert any(not torch.equal(t, split.model_state[n]) for n, t in whole.model_state.items())


def test_make_hyperparameters_rejects_unknown_keys() -> None:
    with pytest.raises(
        ValueError, match=r"unknown ppo hyperparameter\(s\) \['lr'\].*learning_rate"
    ):
        make_hyperparameters("ppo", {"lr": 1e-3})


def test_get_algorithm_lists_known_algorithms() -> None:
    assert get_algorithm("dqn") is dqn
    with pytest.raises(
        ValueError, match=r"unknown algorithm 'a2c'.*\['ddpg', 'dqn', 'ppo', 'sac', 'td3'\]"
    ):
        get_algorithm("a2c")
    assert set(ACTION_KINDS) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_each_algorithm_declares_its_hyperparameters_without_torch(algorithm: str) -> None:
    spec, module = hyperparameters_of(algorithm), get_algorithm(algorithm)
    assert module.Hyperparameters is spec.Hyperparameters
    assert module.GENES is spec.GENES
    # every train takes RunSettings, initial_weights included: config checks read
    # ga.inherit_weights' support from ARCHITECTURE_FIELDS, without torch
    assert list(inspect.signature(module.train).parameters) == ["env", "hp", "run"]
    assert hasattr(spec, "ARCHITECTURE_FIELDS")
    fields = {f.name for f in dataclasses.fields(spec.Hyperparameters)}
    assert set(spec.ARCHITECTURE_FIELDS) <= fields
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def test_checking_configs_does_not_import_torch() -> None:
    # Every snakemake start, `hpsrl populate` and `hpsrl check` load the config: torch costs
    # seconds.
    script = """
import sys, yaml
from pathlib import Path
from hpsrl.campaign.config import compared_campaigns, load_config
for path in [Path("config/config.yaml"), *sorted(Path("config/examples").glob("*.yaml"))]:
    compared_campaigns(load_config(yaml.safe_load(path.read_text())))
print("torch" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- Shared pieces -------------------------------------------------------------------------------


def test_episode_tracker_curve_and_threshold() -> None:
    tracker = EpisodeTracker(num_envs=2, total_steps=8, curve_points=4, return_threshold=3.0)
    ones = np.ones(2)
    tracker.step(ones, np.array([False, False]), 2)
    assert math.isnan(tracker.curve_returns[0])
    tracker.step(ones, np.array([True, False]), 4)  # env 0 ends with return 2
    tracker.step(np.zeros(2), np.array([False, True]), 6)  # reset step of env 0; env 1 ends: 2
    tracker.step(ones, np.array([False, False]), 8)
    np.testing.assert_array_equal(tracker.curve_returns, [np.nan, 2.0, 2.0, 2.0])
    assert tracker.episodes == 2 and tracker.steps_to_threshold == math.inf
    for step in range(10, 40, 2):  # episodes of return 4 on both envs
        tracker.step(np.full(2, 4.0), np.array([True, True]), step)
    assert tracker.steps_to_threshold == 16.0  # 10 episodes ended by then, mean 3.6


def test_evaluate_counts_each_envs_first_episode() -> None:
    always_left = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    returns = evaluate(always_left, CARTPOLE, episodes=4, seed=0)
    assert returns.shape == (4,) and (returns > 5).all() and (returns < 20).all()
    np.testing.assert_array_equal(returns, evaluate(always_left, CARTPOLE, episodes=4, seed=0))


def test_build_mlp_shapes_and_init() -> None:
    net = build_mlp(4, 2, (8, 8), "relu", out_gain=0.01)
    assert net(torch.zeros(3, 4)).shape == (3, 2)
    assert all(torch.count_nonzero(m.bias) == 0 for m in net if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match="activation must be one of"):
        build_mlp(4, 2, (8,), "swish")


def test_build_mlp_torch_init_is_nn_linears_from_the_generator() -> None:
    global_state = torch.random.get_rng_state()
    net = build_mlp(4, 2, (8, 8), "relu", init="torch", generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), global_state)
    torch.manual_seed(5)  # nn.Linear draws from the global generator, in the same order
    expected = [torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)]
    torch.random.set_rng_state(global_state)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for mine, theirs in zip(linears, expected, strict=True):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    with pytest.raises(ValueError, match="init must be"):
        build_mlp(4, 2, (8,), "relu", init="xavier")


def test_build_mlp_draws_only_from_its_generator() -> None:
    global_state = torch.random.get_rng_state()
    nets = [
        build_mlp(4, 2, (8, 8), "tanh", generator=torch.Generator().manual_seed(3)) for _ in "ab"
    ]
    assert torch.equal(torch.random.get_rng_state(), global_state)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
    first = next(nets[0].parameters())
    # 8 x 4, orthogonal columns of norm sqrt(2) (the hidden gain)
    assert torch.allclose(first.T @ first, 2.0 * torch.eye(4), atol=1e-5)


@pytest.mark.parametrize("rows", [1, 10, 300])  # numpy, and torch's kernels in blocks from 256
def test_greedy_actions_are_the_argmax_of_the_network(rows: int) -> None:
    generator = torch.Generator().manual_seed(1)
    net = build_mlp(4, 3, (64, 64), "tanh", generator=generator)
    obs = torch.randn(rows, 4, generator=generator)
    with torch.inference_mode():
        expected = net(obs).argmax(-1).numpy()
    greedy = greedy_actions(net, "tanh")
    np.testing.assert_array_equal(greedy(obs.numpy()), expected)
    np.testing.assert_array_equal(greedy(obs.numpy().astype(np.float64)), expected)
    with torch.no_grad():  # later in-place changes to the weights show through
        net[-1].bias.copy_(torch.tensor([0.0, 0.0, 1e6]))
    assert (greedy(obs.numpy()) == 2).all()
    with pytest.raises(RuntimeError, match="trainable=False"):
        MLP(net, "tanh", trainable=False).backward(np.zeros((rows, 3), dtype=np.float32))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_hand_written_backward_matches_autograd(activation: str) -> None:
    generator = torch.Generator().manual_seed(0)
    net = build_mlp(5, 3, (16, 8), activation, generator=generator)
    x, grad_out = torch.randn(7, 5, generator=generator), torch.randn(7, 3, generator=generator)
    (net(x) * grad_out).sum().backward()
    expected = {name: p.grad.clone() for name, p in net.named_parameters()}
    FlatAdam(net, 1e-3)  # gives every parameter a .grad view
    mlp = MLP(net, activation)
    with torch.inference_mode():
        expected_out = net(x).numpy()
    np.testing.assert_allclose(mlp.forward(x.numpy()), expected_out, rtol=1e-5, atol=1e-6)
    mlp.backward(grad_out.numpy())
    np.testing.assert_allclose(mlp.predict(x.numpy()), expected_out, rtol=1e-5, atol=1e-6)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu"])
@pytest.mark.parametrize("rows", [1, 10, 100, 600])  # numpy (1 row: gemv); torch; torch in blocks
def test_mlp_predict_matches_the_network(rows: int, activation: str) -> None:
    generator = torch.Generator().manual_seed(0)
    net = build_mlp(4, 2, (64, 64), activation, generator=generator)
    x = torch.randn(rows, 4, generator=generator)
    with torch.inference_mode():
        expected = net(x).numpy()
    FlatAdam(net, 1e-3)
    got = MLP(net, activation).predict(x.numpy())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_flat_adam_matches_torch_adam_with_clipping() -> None:
    def make() -> torch.nn.Sequential:
        return build_mlp(4, 2, (8,), "tanh", generator=torch.Generator().manual_seed(1))

    reference, flat = make(), make()
    torch_adam = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5)
    flat_adam = FlatAdam(flat, 1e-2, eps=1e-5, max_grad_norm=0.5)
    for step in range(5):
        x = torch.randn(6, 4, generator=torch.Generator().manual_seed(step))
        torch_adam.zero_grad()
        reference(x).square().sum().backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        torch_adam.step()
        for p in flat.parameters():
            p.grad.zero_()
        loss = flat(x).square().sum()
        grads = torch.autograd.grad(loss, list(flat.parameters()))
        with torch.no_grad():
            for p, g in zip(flat.parameters(), grads, strict=True):
                p.grad.copy_(g)
        flat_adam.step()
    for (name, a), b in zip(reference.named_parameters(), flat.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    state = flat_adam.state_dict()
    assert int(state["state"][0]["step"]) == 5
    again = FlatAdam(make(), 1e-3)
    again.load_state_dict(state)
    assert again.steps == 5 and again.lr == 1e-2 and torch.equal(again.exp_avg, flat_adam.exp_avg)


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_greedy_policy_rebuilds_the_trained_agent(algorithm: str) -> None:
    result = _train(algorithm, CARTPOLE, 1_000, seed=3)
    hp = make_hyperparameters(algorithm, TINY[algorithm])
    weights = {name: t.numpy() for name, t in result.model_state.items()}
    policy = get_algorithm(algorithm).greedy_policy(CARTPOLE, hp, weights)
    np.testing.assert_array_equal(evaluate(policy, CARTPOLE, 5, seed=1003), result.eval_returns)

    with pytest.raises(ValueError, match="do not fit this network"):
        get_algorithm(algorithm).greedy_policy(
            CARTPOLE,
            make_hyperparameters(algorithm, {**TINY[algorithm], "hidden_sizes": [7]}),
            weights,
        )
