"""hpsrl vs Stable-Baselines3 with the same hyperparameters: PPO and DQN on CartPole-v1, SAC, TD3
and DDPG on Pendulum-v1, TD3 on LunarLanderContinuous-v3.

PPO and DQN use RL Baselines3 Zoo's tuned CartPole-v1 entries (``hyperparams/ppo.yml`` and
``hyperparams/dqn.yml``), number of parallel envs included, mapped onto the field names of
``hpsrl.agents.ppo.Hyperparameters`` / ``hpsrl.agents.dqn.Hyperparameters`` (see MISMATCHES for
what cannot be matched). SAC, TD3 and DDPG use the setting of the issue "Fast continuous control":
SB3's defaults (which the zoo's SAC Pendulum-v1 entry keeps but for learning_rate 1e-3: batch 256,
buffer 1e6, learning_starts 100, tau 0.005, gamma 0.99, one gradient step per env step, ent_coef
"auto"), 256x256 ReLU networks on both sides (SB3's TD3 and DDPG default to 400x300), and for TD3
and DDPG the zoo's Pendulum-v1 exploration noise (normal, std 0.1); ``td3-lunar`` is the zoo's
LunarLanderContinuous-v3 TD3 entry. Every run is a fresh one-torch-thread subprocess, so both
sides pay the same start-up; the sides are interleaved (their order alternates) because the
machine may be shared.

Reported per run: env steps/s over training only (environment creation + model construction +
training, no imports, no evaluation; ``torch._dynamo``, which the first ``torch.optim`` optimizer
imports lazily, is imported beforehand and reported apart), training seconds, the subprocess's wall
time, the CPU seconds of training and evaluation together (steadier than wall time on a loaded
machine), and the mean return of greedy evaluation episodes (10 on CartPole-v1, 50 on the
continuous-action envs, whose return depends much on the start state) run by the same procedure
for both sides (:func:`hpsrl.agents.episodes.evaluate`, fed by ``model.predict(obs,
deterministic=True)`` for SB3). Whether the two sides' returns differ is tested per algorithm over
seeds (Welch's t-test and the Mann-Whitney U test, with scipy).

    python benchmarks/speed_vs_sb3.py                 # 3 seeds, PPO and DQN (~15 min on 2 cores)
    python benchmarks/speed_vs_sb3.py --seeds 5 --algos ppo
    python benchmarks/speed_vs_sb3.py --seeds 5 --algos sac,td3,ddpg --summary \
        benchmarks/results/speed_vs_sb3_continuous.json    # ~3-4 h on 2 loaded cores
    python benchmarks/speed_vs_sb3.py --seeds 1 --ppo-steps 5000 --dqn-steps 3000   # smoke test
    python benchmarks/speed_vs_sb3.py --seeds 1 --algos sac,td3,ddpg --continuous-steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _bench

NAME = "speed_vs_sb3"
ENV_ID = "CartPole-v1"
SOLVED = 475.0
EVAL_EPISODES = 10
EVAL_SEED_OFFSET = 10_000  # evaluation seed = training seed + this, for both sides
DISCRETE = ("ppo", "dqn")
CONTINUOUS = ("sac", "td3", "ddpg", "td3-lunar")

#: Per algorithm: env, steps by default, evaluation episodes and the return that counts as solved
#: (Pendulum-v1: the sanity bar of benchmarks/RESULTS.md; LunarLanderContinuous-v3: 200).
CASES: dict[str, dict[str, Any]] = {
    "ppo": {"env": ENV_ID, "eval_episodes": EVAL_EPISODES, "solved": SOLVED},
    "dqn": {"env": ENV_ID, "eval_episodes": EVAL_EPISODES, "solved": SOLVED},
    "sac": {"env": "Pendulum-v1", "steps": 20_000, "eval_episodes": 50, "solved": -200.0},
    "td3": {"env": "Pendulum-v1", "steps": 20_000, "eval_episodes": 50, "solved": -200.0},
    "ddpg": {"env": "Pendulum-v1", "steps": 20_000, "eval_episodes": 50, "solved": -200.0},
    "td3-lunar": {
        "env": "LunarLanderContinuous-v3",
        "steps": 300_000,
        "eval_episodes": 50,
        "solved": 200.0,
    },
}

# RL Baselines3 Zoo, hyperparams/ppo.yml, CartPole-v1 ("# Tuned").
ZOO_PPO: dict[str, Any] = {
    "n_envs": 8,
    "n_timesteps": 100_000,
    "policy": "MlpPolicy",
    "n_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "n_epochs": 20,
    "ent_coef": 0.0,
    "learning_rate": "lin_0.001",
    "clip_range": "lin_0.2",
}
# RL Baselines3 Zoo, hyperparams/dqn.yml, CartPole-v1 ("# Almost Tuned").
ZOO_DQN: dict[str, Any] = {
    "n_timesteps": 50_000,
    "policy": "MlpPolicy",
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
    "policy_kwargs": "dict(net_arch=[256, 256])",
}

# The continuous-action setting (see the module docstring), SB3's argument names. SAC: RL Zoo's
# hyperparams/sac.yml Pendulum-v1 entry is n_timesteps 20000 and learning_rate 1e-3, the rest SB3's
# defaults. TD3/DDPG: SB3's defaults, the network of the issue (SB3's default is [400, 300]) and
# the zoo's Pendulum-v1 noise; the zoo's own TD3/DDPG Pendulum-v1 entries also change gamma (0.98),
# buffer_size (2e5), learning_starts (1e4) and the network ([400, 300]).
SB3_OFF_POLICY: dict[str, Any] = {
    "learning_rate": 1e-3,
    "buffer_size": 1_000_000,
    "learning_starts": 100,
    "batch_size": 256,
    "tau": 0.005,
    "gamma": 0.99,
    "train_freq": 1,
    "gradient_steps": 1,
    "policy_kwargs": {"net_arch": [256, 256]},
}
SB3_CONTINUOUS: dict[str, dict[str, Any]] = {
    "sac": {**SB3_OFF_POLICY, "ent_coef": "auto"},  # "auto": learned, starting at 1.0
    "td3": {**SB3_OFF_POLICY, "noise_type": "normal", "noise_std": 0.1},  # policy_delay 2,
    # target_policy_noise 0.2, target_noise_clip 0.5: SB3's defaults
    "ddpg": {**SB3_OFF_POLICY, "noise_type": "normal", "noise_std": 0.1},
    # RL Baselines3 Zoo, hyperparams/td3.yml, LunarLanderContinuous-v3
    "td3-lunar": {
        "learning_rate": 1e-3,
        "buffer_size": 200_000,
        "learning_starts": 10_000,
        "gamma": 0.98,
        "train_freq": 1,
        "gradient_steps": 1,
        "noise_type": "normal",
        "noise_std": 0.1,
        "policy_kwargs": {"net_arch": [400, 300]},
    },
}

# The same, as hpsrl field names. SB3 defaults that the zoo leaves implicit are spelled out
# (vf_coef 0.5, max_grad_norm 0.5 / 10, tanh / ReLU, [64, 64] PPO nets, epsilon start 1.0).
HPSRL_PPO: dict[str, Any] = {
    "num_envs": 8,
    "num_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "update_epochs": 20,
    "ent_coef": 0.0,
    "learning_rate": 1e-3,
    "anneal_lr": True,  # lin_1e-3
    "clip_coef": 0.2,  # lin_0.2: hpsrl cannot anneal it (see MISMATCHES)
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "hidden_sizes": (64, 64),
    "activation": "tanh",
    "normalize_advantages": True,
}
HPSRL_DQN: dict[str, Any] = {
    "num_envs": 1,
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "tau": 1.0,
    "train_frequency": 256,
    "gradient_steps": 128,  # hpsrl's default is 64
    "exploration_fraction": 0.16,
    "epsilon_start": 1.0,
    "epsilon": 0.04,
    "hidden_sizes": (256, 256),  # hpsrl's default is (128, 128)
    "activation": "relu",
    "max_grad_norm": 10.0,
    "double_dqn": False,
}

HPSRL_OFF_POLICY: dict[str, Any] = {
    "learning_rate": 1e-3,
    "buffer_size": 1_000_000,
    "learning_starts": 100,
    "batch_size": 256,
    "tau": 0.005,
    "gamma": 0.99,
    "train_frequency": 1,
    "gradient_steps": 1,
    "hidden_sizes": (256, 256),
    "activation": "relu",
    "num_envs": 1,
}
HPSRL_CONTINUOUS: dict[str, dict[str, Any]] = {
    "sac": {**HPSRL_OFF_POLICY, "ent_coef": 1.0, "autotune_entropy": True},
    "td3": {
        **HPSRL_OFF_POLICY,
        "exploration_noise": 0.1,
        "policy_delay": 2,
        "target_policy_noise": 0.2,
        "noise_clip": 0.5,
    },
    "ddpg": {**HPSRL_OFF_POLICY, "exploration_noise": 0.1},
    "td3-lunar": {
        **HPSRL_OFF_POLICY,
        "buffer_size": 200_000,
        "learning_starts": 10_000,
        "gamma": 0.98,
        "batch_size": 256,  # SB3's default; the zoo entry leaves it out
        "tau": 0.005,
        "hidden_sizes": (400, 300),
        "exploration_noise": 0.1,
        "policy_delay": 2,
        "target_policy_noise": 0.2,
        "noise_clip": 0.5,
    },
}

_OFF_POLICY_MISMATCHES = [
    "init: SB3 keeps nn.Linear's init (Kaiming-uniform) in every layer; hpsrl initialises "
    "orthogonally (gain sqrt 2 hidden, 0.01 on the actor's last layer, 1 on the critics').",
    "environment: SB3 steps one gymnasium.make env in a DummyVecEnv with a Monitor wrapper; "
    "hpsrl one gymnasium.make env in a SyncVectorEnv, whose NEXT_STEP autoreset step after an "
    "episode is counted as an env step but not stored (Pendulum-v1: 1 step in 201).",
    "random warm-up: both take uniformly random actions (in [-1, 1], scaled to the bounds) for "
    "the first 100 steps and train from step 101 on.",
]
_TD3_MISMATCHES = [
    *_OFF_POLICY_MISMATCHES,
    "exploration noise: both add N(0, 0.1) to the actor's action in [-1, 1] and clip it to "
    "[-1, 1]; SB3 draws it from numpy's global generator, hpsrl from the run's own.",
]

MISMATCHES = {
    "sac": [
        *_OFF_POLICY_MISMATCHES,
        "log-probability of the squashed Gaussian: SB3 subtracts log(1 - tanh(u)^2 + 1e-6), "
        "hpsrl the exact log(1 - tanh(u)^2), written stably as 2 (log 2 - u - softplus(-2u)).",
        "actor network: SB3 has two output layers (mean, log std) on a shared trunk, hpsrl one "
        "layer with both as outputs: the same function.",
    ],
    "td3": _TD3_MISMATCHES,
    "ddpg": _TD3_MISMATCHES,
    "td3-lunar": _TD3_MISMATCHES,
    "ppo": [
        "clip_range lin_0.2: SB3 anneals the clip range linearly to 0; hpsrl's clip_coef is "
        "constant 0.2 (no clip annealing field).",
        "learning_rate lin_1e-3: SB3 sets lr = 1e-3 * (1 - steps_done/total) after each rollout; "
        "hpsrl sets 1e-3 * (1 - iteration/iterations) before it (one rollout earlier).",
        "value loss: SB3 uses vf_coef * MSE, hpsrl vf_coef * 0.5 * MSE, so at vf_coef 0.5 "
        "hpsrl's critic gradient is half of SB3's (separate networks and Adam make this minor, "
        "but it changes the global-norm clipping).",
        "environments: SB3 (as the zoo) steps 8 gymnasium.make envs in a DummyVecEnv with "
        "Monitor wrappers and resets in the same step; hpsrl steps gymnasium's numpy "
        "CartPoleVectorEnv with NEXT_STEP autoreset (one ignored reset step per episode, "
        "counted as an env step and masked out of the loss).",
        "init: both orthogonal (sqrt 2 hidden, 0.01 policy head, 1 value head).",
    ],
    "dqn": [
        "init: both PyTorch's default (Kaiming-uniform) Linear init.",
        "NEXT_STEP autoreset: hpsrl's reset step after each episode is counted as an env step "
        "but not stored as a transition; SB3 resets within the same step.",
        "target update: both copy every 10 env steps (tau 1); Adam eps 1e-8 on both sides.",
        "environment: SB3 steps one gymnasium.make env in a DummyVecEnv with a Monitor wrapper; "
        "hpsrl one gymnasium.make env in a SyncVectorEnv (what it uses below 4 copies).",
    ],
}


# -- one run (in a fresh process) ----------------------------------------------------------------


def _linear(initial: float):
    return lambda progress_remaining: progress_remaining * initial


def run_hpsrl(algo: str, seed: int, steps: int) -> dict[str, Any]:
    from hpsrl.agents import RunSettings, get_algorithm
    from hpsrl.envs.spec import EnvSpec

    if algo in DISCRETE:
        values = HPSRL_PPO if algo == "ppo" else HPSRL_DQN
    else:
        values = HPSRL_CONTINUOUS[algo]
    module = get_algorithm(algo.split("-")[0])
    result = module.train(
        EnvSpec(CASES[algo]["env"]),
        module.Hyperparameters(**values),
        RunSettings(
            steps,
            seed,
            eval_seed=seed + EVAL_SEED_OFFSET,
            eval_episodes=CASES[algo]["eval_episodes"],
        ),
    )
    return {
        "env_steps": int(result.env_steps),
        "train_seconds": float(result.train_seconds),
        "eval_seconds": float(result.eval_seconds),
        "eval_returns": result.eval_returns.tolist(),
    }


def _sb3_model(algo: str, seed: int) -> tuple[Any, Any]:
    """The SB3 model of ``algo`` and its vector env (one env; PPO: the zoo's eight)."""
    import numpy as np
    from stable_baselines3 import DDPG, DQN, PPO, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    if algo == "ppo":
        venv = make_vec_env(ENV_ID, n_envs=ZOO_PPO["n_envs"], seed=seed)
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=ZOO_PPO["n_steps"],
            batch_size=ZOO_PPO["batch_size"],
            gae_lambda=ZOO_PPO["gae_lambda"],
            gamma=ZOO_PPO["gamma"],
            n_epochs=ZOO_PPO["n_epochs"],
            ent_coef=ZOO_PPO["ent_coef"],
            learning_rate=_linear(1e-3),
            clip_range=_linear(0.2),
            seed=seed,
            device="cpu",
            verbose=0,
        )
    elif algo == "dqn":
        venv = make_vec_env(ENV_ID, n_envs=1, seed=seed)
        model = DQN(
            "MlpPolicy",
            venv,
            learning_rate=ZOO_DQN["learning_rate"],
            batch_size=ZOO_DQN["batch_size"],
            buffer_size=ZOO_DQN["buffer_size"],
            learning_starts=ZOO_DQN["learning_starts"],
            gamma=ZOO_DQN["gamma"],
            target_update_interval=ZOO_DQN["target_update_interval"],
            train_freq=ZOO_DQN["train_freq"],
            gradient_steps=ZOO_DQN["gradient_steps"],
            exploration_fraction=ZOO_DQN["exploration_fraction"],
            exploration_final_eps=ZOO_DQN["exploration_final_eps"],
            policy_kwargs={"net_arch": [256, 256]},
            seed=seed,
            device="cpu",
            verbose=0,
        )
    else:
        venv = make_vec_env(CASES[algo]["env"], n_envs=1, seed=seed)
        kwargs = dict(SB3_CONTINUOUS[algo])
        noise_type, noise_std = kwargs.pop("noise_type", None), kwargs.pop("noise_std", None)
        if noise_type is not None:  # the zoo's "normal" noise, as the zoo builds it
            n_actions = venv.action_space.shape[0]
            kwargs["action_noise"] = NormalActionNoise(
                mean=np.zeros(n_actions), sigma=noise_std * np.ones(n_actions)
            )
        model_class = {"sac": SAC, "td3": TD3, "ddpg": DDPG}[algo.split("-")[0]]
        model = model_class("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)
    return model, venv


def run_sb3(algo: str, seed: int, steps: int) -> dict[str, Any]:
    from hpsrl.agents.episodes import evaluate
    from hpsrl.envs.spec import EnvSpec

    started = time.perf_counter()
    model, venv = _sb3_model(algo, seed)
    model.learn(total_timesteps=steps)
    venv.close()
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    returns = evaluate(
        lambda obs: model.predict(obs, deterministic=True)[0],
        EnvSpec(CASES[algo]["env"]),
        CASES[algo]["eval_episodes"],
        seed + EVAL_SEED_OFFSET,
    )
    return {
        "env_steps": int(model.num_timesteps),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - started,
        "eval_returns": returns.tolist(),
    }


def worker(side: str, algo: str, seed: int, steps: int) -> None:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import gymnasium  # noqa: F401  - counted as import time on both sides

    # The first torch.optim optimizer constructed imports torch._dynamo (about 2 s here); both
    # sides construct Adam inside their timed section, so import it first and report it apart.
    dynamo_started = time.perf_counter()
    import torch._dynamo

    dynamo_seconds = time.perf_counter() - dynamo_started

    if side == "sb3":
        import stable_baselines3  # noqa: F401
    else:
        import hpsrl.agents  # noqa: F401
    import_seconds = time.perf_counter() - started
    cpu_started = time.process_time()
    record = (run_hpsrl if side == "hpsrl" else run_sb3)(algo, seed, steps)
    record["train_eval_cpu_seconds"] = time.process_time() - cpu_started
    record.update(
        side=side,
        algo=algo,
        seed=seed,
        import_seconds=import_seconds,
        dynamo_import_seconds=dynamo_seconds,
        torch_threads=torch.get_num_threads(),
        agents_sha256=_bench.agents_digest(),
        steps_per_second=record["env_steps"] / record["train_seconds"],
        mean_return=statistics.fmean(record["eval_returns"]),
    )
    print(json.dumps(record))


# -- the comparison -------------------------------------------------------------------------------


def returns_differ(ours: list[float], theirs: list[float]) -> dict[str, float]:
    """p-values of Welch's t-test and the two-sided Mann-Whitney U test on per-seed mean returns
    (NaN with fewer than two seeds a side, or without scipy)."""
    try:
        from scipy import stats
    except ImportError:
        return {"welch_t_p": math.nan, "mann_whitney_p": math.nan}
    if min(len(ours), len(theirs)) < 2:
        return {"welch_t_p": math.nan, "mann_whitney_p": math.nan}
    return {
        "welch_t_p": float(stats.ttest_ind(ours, theirs, equal_var=False).pvalue),
        "mann_whitney_p": float(stats.mannwhitneyu(ours, theirs).pvalue),
    }


def _done_runs(path: Path) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    """The runs an earlier, interrupted call recorded in ``path`` for the same agent code."""
    done = {}
    if path.exists():
        digest = _bench.agents_digest()
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["agents_sha256"] == digest:
                key = (record["algo"], record["side"], record["seed"], record["env_steps_asked"])
                done[key] = record
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per algorithm and side")
    parser.add_argument(
        "--algos", default="ppo,dqn", help=f"comma-separated, of: {', '.join(CASES)}"
    )
    parser.add_argument("--ppo-steps", type=int, default=ZOO_PPO["n_timesteps"])
    parser.add_argument("--dqn-steps", type=int, default=ZOO_DQN["n_timesteps"])
    parser.add_argument(
        "--continuous-steps",
        type=int,
        default=CASES["sac"]["steps"],
        help="env steps of sac, td3 and ddpg on Pendulum-v1",
    )
    parser.add_argument("--lunar-steps", type=int, default=CASES["td3-lunar"]["steps"])
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs that an interrupted call with the same agent code recorded in "
        "benchmarks/out/speed_vs_sb3.runs.jsonl (each run is appended there as it ends)",
    )
    parser.add_argument(
        "--summary", type=Path, help="also write a small JSON summary (no per-run records) here"
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("SIDE", "ALGO", "SEED", "STEPS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        side, algo, seed, steps = args.worker
        worker(side, algo, int(seed), int(steps))
        return

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    for algo in algos:
        if algo not in CASES:
            parser.error(f"--algos: unknown algorithm {algo!r}; use some of {', '.join(CASES)}")
    steps = {
        "ppo": args.ppo_steps,
        "dqn": args.dqn_steps,
        "sac": args.continuous_steps,
        "td3": args.continuous_steps,
        "ddpg": args.continuous_steps,
        "td3-lunar": args.lunar_steps,
    }
    log_path = _bench.OUT_DIR / f"{NAME}.runs.jsonl"
    done = _done_runs(log_path) if args.resume else {}
    if not args.resume:
        log_path.unlink(missing_ok=True)
    runs: list[dict[str, Any]] = []
    for i, seed in enumerate(range(args.seeds)):
        for j, algo in enumerate(algos):
            sides = ["hpsrl", "sb3"] if (i + j) % 2 == 0 else ["sb3", "hpsrl"]  # interleave
            for side in sides:
                record = done.get((algo, side, seed, steps[algo]))
                if record is None:
                    record, wall = _bench.run_json_child(
                        [__file__, "--worker", side, algo, str(seed), str(steps[algo])],
                        timeout=6 * 3600,
                    )
                    record["process_wall_seconds"] = wall
                    record["env_steps_asked"] = steps[algo]
                    record["loadavg_after"] = os.getloadavg()
                    _bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
                    with log_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                runs.append(record)
                print(
                    f"{algo} {side:5s} seed {seed}: {record['steps_per_second']:7.0f} steps/s, "
                    f"train {record['train_seconds']:6.1f} s, wall "
                    f"{record['process_wall_seconds']:6.1f} s, CPU "
                    f"{record['train_eval_cpu_seconds']:6.1f} s, return "
                    f"{record['mean_return']:6.1f}, load {record['loadavg_after'][0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )

    results: dict[str, Any] = {}
    rows = []
    for algo in algos:
        per_side = {}
        for side in ("hpsrl", "sb3"):
            mine = [r for r in runs if r["algo"] == algo and r["side"] == side]
            per_side[side] = {
                "steps_per_second": _bench.summary([r["steps_per_second"] for r in mine]),
                "train_seconds": _bench.summary([r["train_seconds"] for r in mine]),
                "train_eval_cpu_seconds": _bench.summary(
                    [r["train_eval_cpu_seconds"] for r in mine]
                ),
                "process_wall_seconds": _bench.summary([r["process_wall_seconds"] for r in mine]),
                "startup_seconds": _bench.summary(
                    [
                        r["process_wall_seconds"] - r["train_seconds"] - r["eval_seconds"]
                        for r in mine
                    ]
                ),
                "mean_return": [r["mean_return"] for r in mine],
                "solved": sum(r["mean_return"] >= CASES[algo]["solved"] for r in mine),
                "env_steps": mine[0]["env_steps"],
            }
        by_seed = {(r["seed"], r["side"]): r for r in runs if r["algo"] == algo}
        seeds = range(args.seeds)
        paired = [
            by_seed[s, "hpsrl"]["steps_per_second"] / by_seed[s, "sb3"]["steps_per_second"]
            for s in seeds
        ]
        paired_cpu = [
            by_seed[s, "sb3"]["train_eval_cpu_seconds"]
            / by_seed[s, "sb3"]["env_steps"]
            / (by_seed[s, "hpsrl"]["train_eval_cpu_seconds"] / by_seed[s, "hpsrl"]["env_steps"])
            for s in seeds
        ]
        results[algo] = {
            **per_side,
            "speedup_paired": _bench.summary(paired),
            "speedup_of_medians": per_side["hpsrl"]["steps_per_second"]["median"]
            / per_side["sb3"]["steps_per_second"]["median"],
            "cpu_speedup_paired": _bench.summary(paired_cpu),
            "returns_differ": returns_differ(
                per_side["hpsrl"]["mean_return"], per_side["sb3"]["mean_return"]
            ),
        }
        for side in ("hpsrl", "sb3"):
            s = per_side[side]
            rows.append(
                [
                    algo,
                    side,
                    s["env_steps"],
                    s["steps_per_second"]["min"],
                    s["steps_per_second"]["median"],
                    s["train_seconds"]["median"],
                    s["train_eval_cpu_seconds"]["median"],
                    s["process_wall_seconds"]["median"],
                    s["startup_seconds"]["median"],
                    " ".join(f"{v:.0f}" for v in s["mean_return"]),
                    f"{s['solved']}/{args.seeds}",
                ]
            )
    print(
        _bench.table(
            [
                "algo",
                "side",
                "env steps",
                "steps/s min",
                "steps/s med",
                "train s med",
                "CPU s med",
                "wall s med",
                "start-up s",
                "return per seed",
                "solved",
            ],
            rows,
        )
    )
    for algo in algos:
        r = results[algo]
        sp, cpu, test = r["speedup_paired"], r["cpu_speedup_paired"], r["returns_differ"]
        print(
            f"{algo}: hpsrl/SB3 steps/s, paired by seed: min {sp['min']:.2f}x, "
            f"median {sp['median']:.2f}x; ratio of medians {r['speedup_of_medians']:.2f}x; "
            f"per CPU second (train + eval), paired: median {cpu['median']:.2f}x; returns "
            f"differ: Welch p = {test['welch_t_p']:.2f}, Mann-Whitney p = "
            f"{test['mann_whitney_p']:.2f}"
        )
    config = {
        "seeds": args.seeds,
        "steps": {a: steps[a] for a in algos},
        "eval_episodes": {a: CASES[a]["eval_episodes"] for a in algos},
        "envs": {a: CASES[a]["env"] for a in algos},
        "solved_threshold": {a: CASES[a]["solved"] for a in algos},
    }
    sb3_settings = {"ppo": ZOO_PPO, "dqn": ZOO_DQN, **SB3_CONTINUOUS}
    hpsrl_settings = {"ppo": HPSRL_PPO, "dqn": HPSRL_DQN, **HPSRL_CONTINUOUS}
    payload = {
        "config": config,
        "sb3_settings": {a: sb3_settings[a] for a in algos},
        "hpsrl_hyperparameters": {a: hpsrl_settings[a] for a in algos},
        "mismatches": {a: MISMATCHES[a] for a in algos},
        "results": results,
    }
    path = _bench.write_json(NAME, {**payload, "runs": runs})
    print(f"written {path}")
    if args.summary is not None:
        import torch

        payload["machine"] = {
            "cpu": _bench.cpu_model(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "loadavg_after_each_run": [r["loadavg_after"] for r in runs],
            "hpsrl_agents_sha256": _bench.agents_digest(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        payload["per_seed"] = {
            a: {
                side: {
                    "steps_per_second": [
                        r["steps_per_second"] for r in runs if (r["algo"], r["side"]) == (a, side)
                    ],
                    "train_eval_cpu_seconds": [
                        r["train_eval_cpu_seconds"]
                        for r in runs
                        if (r["algo"], r["side"]) == (a, side)
                    ],
                }
                for side in ("hpsrl", "sb3")
            }
            for a in algos
        }
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(payload, indent=2, default=_bench._jsonable) + "\n")
        print(f"written {args.summary}")


if __name__ == "__main__":
    main()
