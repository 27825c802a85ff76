"""``hpsrl evaluate``: run a trained agent of a campaign again, and record an episode of it.

The agent is rebuilt from what its result file holds (``/weights/seedK``, the hyperparameters and
the config), so nothing but plain arrays and attributes is read. By default it is evaluated on the
evaluation seed its campaign used, which reproduces the stored evaluation returns; ``--seed`` runs
other episodes.

Recording renders offscreen (``rgb_array``): SDL, which gymnasium's classic-control and Box2D
renderers draw through (pygame), is told to use its dummy video and audio drivers, so that a
machine without a display or sound card records without probing them (SDL's Wayland probe printed
"error: XDG_RUNTIME_DIR is invalid or not set in the environment" on headless machines).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsrl.campaign.paths import result_path
from hpsrl.campaign.storage import StorageError, check_replaceable, open_result, read_seed_weights
from hpsrl.readers.summary import best_summary


@dataclass
class TrainedAgent:
    """One training seed's agent of one individual, as its result file describes it."""

    result_path: Path
    seed_index: int
    config: dict[str, Any]
    hyperparameters: dict[str, Any]
    eval_seed: int
    stored_returns: np.ndarray  # the evaluation episodes the campaign ran
    weights: dict[str, np.ndarray]  # its network, read with the rest (not later, from a file
    # that may have been replaced meanwhile)

    def policy(self) -> Callable[[np.ndarray], np.ndarray]:
        from hpsrl.agents import get_algorithm, make_hyperparameters
        from hpsrl.envs.spec import EnvSpec

        algorithm = self.config["algorithm"]
        try:
            return get_algorithm(algorithm).greedy_policy(
                EnvSpec.from_config(self.config["env"]),
                make_hyperparameters(algorithm, self.hyperparameters),
                self.weights,
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
    with open_result(path) as (f, config, seeds):
        if str(f.attrs["status"]) != "ok":
            raise StorageError(f"{path}: this individual failed ({f.attrs['error']}); no agent")
        if not 0 <= seed_index < seeds:
            raise StorageError(f"{path} has training seeds 0..{seeds - 1}, not {seed_index}")
        return TrainedAgent(
            result_path=path,
            seed_index=seed_index,
            config=config,
            hyperparameters=json.loads(f.attrs["hyperparameters"]),
            eval_seed=int(f["eval_seeds"][seed_index]),
            stored_returns=f["episode_returns"][seed_index],
            weights=read_seed_weights(f, seed_index, path),
        )


def evaluate_agent(agent: TrainedAgent, episodes: int, seed: int | None = None) -> np.ndarray:
    """Returns of ``episodes`` greedy episodes, on ``seed`` or the campaign's evaluation seed."""
    from hpsrl.agents.episodes import evaluate
    from hpsrl.envs.spec import EnvSpec

    env = EnvSpec.from_config(agent.config["env"])
    return evaluate(agent.policy(), env, episodes, agent.eval_seed if seed is None else seed)


# What --record writes, by file extension.
RECORDING_FORMATS = (".gif", ".mp4")
VIDEO_INSTALL = "pip install 'hpsrl[video]' (imageio and imageio-ffmpeg), or record a .gif"


class RecordingError(StorageError):
    """An episode that cannot be written in the asked format; the message says what to install."""


def mp4_writer_problem() -> str | None:
    """Why MP4 cannot be written here (imageio or its ffmpeg plugin missing, no ffmpeg to run)
    and what to do, or None when it can."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg
    except ImportError as e:
        return f"writing MP4 needs imageio with its ffmpeg plugin ({e}): {VIDEO_INSTALL}"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return f"writing MP4 needs an ffmpeg executable, and none was found: {VIDEO_INSTALL}"
    if shutil.which(exe) is None:  # imageio-ffmpeg takes IMAGEIO_FFMPEG_EXE on trust
        return (
            f"IMAGEIO_FFMPEG_EXE names {exe}, which cannot be run: point it at an ffmpeg "
            "executable, or unset it to use the one imageio-ffmpeg installs"
        )
    return None


def check_recording(out: str | Path) -> None:
    """Fail before anything runs when ``out`` cannot be written (RecordingError)."""
    try:
        check_replaceable(out)
    except StorageError as e:
        raise RecordingError(str(e)) from e
    if Path(out).suffix.lower() == ".mp4" and (problem := mp4_writer_problem()):
        raise RecordingError(f"cannot record {out}: {problem}")


def offscreen_rendering() -> None:
    """Have SDL (pygame) render without a display or a sound device; a driver the user chose
    through the environment is kept."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def record_episode(
    agent: TrainedAgent, out: str | Path, seed: int | None = None, max_frames: int = 2000
) -> tuple[float, int]:
    """Render one greedy episode (rgb_array) into an animated GIF or an MP4 (H.264), by the
    extension of ``out``; its return and frame count."""
    from hpsrl.envs.spec import EnvSpec

    out = Path(out)
    check_recording(out)
    policy = agent.policy()
    offscreen_rendering()
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
    images = [np.asarray(frame, dtype=np.uint8) for frame in frames]
    # under a temporary name first, so that a failed write leaves no half a video behind
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".mp4":
            _write_mp4(tmp, images, fps)
        else:
            _write_gif(tmp, images, fps)
        os.replace(tmp, out)
    except OSError as e:
        raise RecordingError(f"cannot write {out}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return episode_return, len(images)


def _write_gif(out: Path, frames: list[np.ndarray], fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def _write_mp4(out: Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 in yuv420p, which every player reads; that needs even sizes, so odd ones get a
    black row or column (rather than imageio's resizing)."""
    import imageio.v2 as imageio

    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    writer = imageio.get_writer(
        out,
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    try:
        for frame in frames:
            writer.append_data(np.pad(frame[..., :3], pad))
    finally:
        writer.close()
