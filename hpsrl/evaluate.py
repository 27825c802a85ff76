"""``hpsrl evaluate``: run a trained agent of a campaign again, and record an episode of it.

The agent is rebuilt from what its result file holds (``/weights/seedK``, the hyperparameters and
the config), so nothing but plain arrays and attributes is read. By default it is evaluated on the
evaluation seed its campaign used, which reproduces the stored evaluation returns; ``--seed`` runs
other episodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsrl.campaign import result_path
from hpsrl.storage import StorageError, open_h5, read_weights
from hpsrl.summary import best_summary


@dataclass
class TrainedAgent:
    """One training seed's agent of one individual, as its result file describes it."""

    result_path: Path
    seed_index: int
    config: dict[str, Any]
    hyperparameters: dict[str, Any]
    eval_seed: int
    stored_returns: np.ndarray  # the evaluation episodes the campaign ran

    def policy(self) -> Callable[[np.ndarray], np.ndarray]:
        from hpsrl.agents import get_algorithm, make_hyperparameters
        from hpsrl.envs import EnvSpec

        algorithm = self.config["algorithm"]
        try:
            return get_algorithm(algorithm).greedy_policy(
                EnvSpec.from_config(self.config["env"]),
                make_hyperparameters(algorithm, self.hyperparameters),
                read_weights(self.result_path, self.seed_index),
            )
        except ValueError as e:  # weights or hyperparameters this version cannot rebuild
            raise StorageError(f"{self.result_path}: cannot rebuild its agent: {e}") from e


def result_file(campaign_dir: str | Path, generation: str | None, individual: int | None) -> Path:
    """An individual's result file; the best one (as ``hpsrl best`` picks it) by default."""
    campaign_dir = Path(campaign_dir)
    if generation is None or individual is None:
        best = best_summary(campaign_dir)
        if best["individual"] is None:
            raise StorageError(f"{campaign_dir}: {best['note']}")
        generation = best["generation"] if generation is None else generation
        individual = best["individual"] if individual is None else individual
    path = campaign_dir / result_path(generation, individual)
    if not path.exists():
        raise StorageError(
            f"{path} does not exist: no result for individual {individual} of {generation} "
            f"(generations are named gen000, gen001, ..., or retest)"
        )
    return path


def load_agent(path: str | Path, seed_index: int = 0) -> TrainedAgent:
    path = Path(path)
    with open_h5(path) as f:
        if str(f.attrs["status"]) != "ok":
            raise StorageError(f"{path}: this individual failed ({f.attrs['error']}); no agent")
        seeds = len(f["train_seeds"])
        if not 0 <= seed_index < seeds:
            raise StorageError(f"{path} has training seeds 0..{seeds - 1}, not {seed_index}")
        return TrainedAgent(
            result_path=path,
            seed_index=seed_index,
            config=json.loads(f.attrs["config"]),
            hyperparameters=json.loads(f.attrs["hyperparameters"]),
            eval_seed=int(f["eval_seeds"][seed_index]),
            stored_returns=f["episode_returns"][seed_index],
        )


def evaluate_agent(agent: TrainedAgent, episodes: int, seed: int | None = None) -> np.ndarray:
    """Returns of ``episodes`` greedy episodes, on ``seed`` or the campaign's evaluation seed."""
    from hpsrl.agents.common import evaluate
    from hpsrl.envs import EnvSpec

    env = EnvSpec.from_config(agent.config["env"])
    return evaluate(agent.policy(), env, episodes, agent.eval_seed if seed is None else seed)


def record_episode(
    agent: TrainedAgent, out: str | Path, seed: int | None = None, max_frames: int = 2000
) -> tuple[float, int]:
    """Render one greedy episode (rgb_array) into an animated GIF; its return and frame count."""
    from PIL import Image

    from hpsrl.envs import EnvSpec

    out = Path(out)
    policy = agent.policy()
    env = EnvSpec.from_config(agent.config["env"]).make(render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=agent.eval_seed if seed is None else seed)
        frames, episode_return, done = [env.render()], 0.0, False
        while not done and len(frames) < max_frames:
            action = policy(np.asarray(obs, dtype=np.float32)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            done = terminated or truncated
            frames.append(env.render())
        fps = env.metadata.get("render_fps") or 30
    finally:
        env.close()
    images = [Image.fromarray(np.asarray(frame, dtype=np.uint8)) for frame in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return episode_return, len(images)
