"""hpsrl vs Stable-Baselines3: PPO and DQN on CartPole-v1 with the same hyperparameters.

The hyperparameters are RL Baselines3 Zoo's tuned CartPole-v1 entries (``hyperparams/ppo.yml`` and
``hyperparams/dqn.yml``), number of parallel envs included, mapped onto the field names of
``hpsrl.agents.ppo.Hyperparameters`` / ``hpsrl.agents.dqn.Hyperparameters`` (see MISMATCHES for
what cannot be matched). Every run is a fresh one-torch-thread subprocess, so both sides pay the
same start-up; the sides are interleaved (their order alternates) because the machine may be shared.

Reported per run: env steps/s over training only (environment creation + model construction +
training, no imports, no evaluation; ``torch._dynamo``, which the first ``torch.optim`` optimizer
imports lazily, is imported beforehand and reported apart), training seconds, the subprocess's wall
time, and the mean return of 10 greedy evaluation episodes run by the same procedure for both sides
(:func:`hpsrl.agents.common.evaluate`, fed by ``model.predict(obs, deterministic=True)`` for SB3).

    python benchmarks/speed_vs_sb3.py                 # 3 seeds, PPO and DQN (~15 min on 2 cores)
    python benchmarks/speed_vs_sb3.py --seeds 5 --algos ppo
    python benchmarks/speed_vs_sb3.py --seeds 1 --ppo-steps 5000 --dqn-steps 3000   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import _bench

NAME = "speed_vs_sb3"
ENV_ID = "CartPole-v1"
SOLVED = 475.0
EVAL_EPISODES = 10
EVAL_SEED_OFFSET = 10_000  # evaluation seed = training seed + this, for both sides

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

MISMATCHES = {
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
    from hpsrl.agents import dqn, ppo
    from hpsrl.envs import EnvSpec

    module, values = (ppo, HPSRL_PPO) if algo == "ppo" else (dqn, HPSRL_DQN)
    result = module.train(
        EnvSpec(ENV_ID),
        module.Hyperparameters(**values),
        steps,
        seed,
        eval_seed=seed + EVAL_SEED_OFFSET,
        eval_episodes=EVAL_EPISODES,
    )
    return {
        "env_steps": int(result.env_steps),
        "train_seconds": float(result.train_seconds),
        "eval_seconds": float(result.eval_seconds),
        "eval_returns": result.eval_returns.tolist(),
    }


def run_sb3(algo: str, seed: int, steps: int) -> dict[str, Any]:
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env

    from hpsrl.agents.common import evaluate
    from hpsrl.envs import EnvSpec

    started = time.perf_counter()
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
    else:
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
    model.learn(total_timesteps=steps)
    venv.close()
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    returns = evaluate(
        lambda obs: model.predict(obs, deterministic=True)[0],
        EnvSpec(ENV_ID),
        EVAL_EPISODES,
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
    record = (run_hpsrl if side == "hpsrl" else run_sb3)(algo, seed, steps)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per algorithm and side")
    parser.add_argument("--algos", default="ppo,dqn", help="comma-separated: ppo, dqn")
    parser.add_argument("--ppo-steps", type=int, default=ZOO_PPO["n_timesteps"])
    parser.add_argument("--dqn-steps", type=int, default=ZOO_DQN["n_timesteps"])
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
        if algo not in ("ppo", "dqn"):
            parser.error(f"--algos: unknown algorithm {algo!r}; use ppo and/or dqn")
    steps = {"ppo": args.ppo_steps, "dqn": args.dqn_steps}
    runs: list[dict[str, Any]] = []
    for i, seed in enumerate(range(args.seeds)):
        for j, algo in enumerate(algos):
            sides = ["hpsrl", "sb3"] if (i + j) % 2 == 0 else ["sb3", "hpsrl"]  # interleave
            for side in sides:
                record, wall = _bench.run_json_child(
                    [__file__, "--worker", side, algo, str(seed), str(steps[algo])]
                )
                record["process_wall_seconds"] = wall
                runs.append(record)
                print(
                    f"{algo} {side:5s} seed {seed}: {record['steps_per_second']:7.0f} steps/s, "
                    f"train {record['train_seconds']:6.1f} s, wall {wall:6.1f} s, "
                    f"return {record['mean_return']:6.1f}",
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
                "process_wall_seconds": _bench.summary([r["process_wall_seconds"] for r in mine]),
                "startup_seconds": _bench.summary(
                    [
                        r["process_wall_seconds"] - r["train_seconds"] - r["eval_seconds"]
                        for r in mine
                    ]
                ),
                "mean_return": [r["mean_return"] for r in mine],
                "solved": sum(r["mean_return"] >= SOLVED for r in mine),
                "env_steps": mine[0]["env_steps"],
            }
        by_seed = {(r["seed"], r["side"]): r["steps_per_second"] for r in runs if r["algo"] == algo}
        paired = [by_seed[s, "hpsrl"] / by_seed[s, "sb3"] for s in range(args.seeds)]
        results[algo] = {
            **per_side,
            "speedup_paired": _bench.summary(paired),
            "speedup_of_medians": per_side["hpsrl"]["steps_per_second"]["median"]
            / per_side["sb3"]["steps_per_second"]["median"],
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
                "wall s med",
                "start-up s",
                "return per seed",
                ">=475",
            ],
            rows,
        )
    )
    for algo in algos:
        sp = results[algo]["speedup_paired"]
        print(
            f"{algo}: hpsrl/SB3 steps/s, paired by seed: min {sp['min']:.2f}x, "
            f"median {sp['median']:.2f}x; ratio of medians "
            f"{results[algo]['speedup_of_medians']:.2f}x"
        )
    path = _bench.write_json(
        NAME,
        {
            "config": {
                "seeds": args.seeds,
                "steps": steps,
                "eval_episodes": EVAL_EPISODES,
                "solved_threshold": SOLVED,
            },
            "zoo": {"ppo": ZOO_PPO, "dqn": ZOO_DQN},
            "hpsrl_hyperparameters": {"ppo": HPSRL_PPO, "dqn": HPSRL_DQN},
            "mismatches": {a: MISMATCHES[a] for a in algos},
            "results": results,
            "runs": runs,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
