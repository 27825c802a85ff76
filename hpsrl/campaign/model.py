"""What a campaign is made of, as plain Python and numpy: the populations it trains, what training
each individual gave, and the generation records that selection and the reports read.

:mod:`hpsrl.campaign.storage` reads and writes them as HDF5 files (docs/results.md describes
every dataset).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpsrl.campaign.evidence import Evidence


@dataclass
class Population:
    """A batch of individuals to train: a generation, or the re-test of the best one."""

    batch: str
    config: dict[str, Any]
    individuals: list[dict[str, Any]]
    parents: np.ndarray  # (n, 2) int64: indices in the previous generation, -1 where none
    operators: list[str]  # how each individual was made: random, elite, crossover, mutation, ...
    train_seeds: np.ndarray  # (n, seeds) uint32
    eval_seeds: np.ndarray  # (n, seeds) uint32
    # (n,) int64: env steps each individual's training stops at: training.steps, or fewer on a
    # successive-halving rung (search.fidelity); None: training.steps for all
    steps: np.ndarray | None = None
    # the result file (relative to the campaign folder) of the earlier rung whose checkpoints each
    # individual's seeds continue from, "" where they start from scratch; None: "" for all
    resumes: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.individuals)
        if self.steps is None:
            self.steps = np.full(n, self.config["training"]["steps"], dtype=np.int64)
        self.steps = np.asarray(self.steps, dtype=np.int64)
        if self.resumes is None:
            self.resumes = [""] * n

    def __len__(self) -> int:
        return len(self.individuals)

    def complete(self) -> np.ndarray:
        """(n,) bool: whether each individual trains for the whole of training.steps."""
        return self.steps >= self.config["training"]["steps"]

    def hyperparameters(self, index: int) -> dict[str, Any]:
        """Genes of one individual on top of the fixed values."""
        return {**self.config["fixed"], **self.individuals[index]}


@dataclass
class SeedResult:
    """What training one seed produced (or why it failed)."""

    status: str  # "ok" or "failed"
    error: str = ""
    eval_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    curve_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steps_to_threshold: float = float("nan")
    env_steps: int = 0
    train_seconds: float = float("nan")
    eval_seconds: float = float("nan")
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    weights_from: str = ""  # the result file (in the campaign folder) whose weights it started from
    lineage_env_steps: int = 0  # env steps its weights were trained for, ancestors' included


@dataclass
class IndividualResult:
    """What training one individual gave: each of its seeds' results, and where it ran."""

    batch: str
    individual: int
    hyperparameters: dict[str, Any]
    train_seeds: np.ndarray
    eval_seeds: np.ndarray
    seeds: list[SeedResult]
    eval_episodes: int
    curve_points: int
    steps: int  # where its training stopped (training.steps, or a rung's fewer)
    mpi_ranks: int = 1
    hostname: str = field(default_factory=socket.gethostname)
    slurm_job_id: str = field(default_factory=lambda: os.environ.get("SLURM_JOB_ID", ""))

    @property
    def status(self) -> str:
        return "ok" if all(s.status == "ok" for s in self.seeds) else "failed"

    @property
    def error(self) -> str:
        return "\n".join(f"seed {k}: {s.error}" for k, s in enumerate(self.seeds) if s.error)


# What training gives per seed of an individual, by name: the arrays of its result that a
# generation record stacks (and the names of their datasets in result files).
PER_SEED_RESULTS = (
    "returns",
    "episode_returns",
    "steps_to_threshold",
    "env_steps",
    "train_seconds",
    "eval_seconds",
    "curve_returns",
)


@dataclass
class Generation:
    """A population with its results: what selection and the reports read."""

    population: Population
    # PER_SEED_RESULTS stacked (n, seeds, ...), lineage_env_steps (n, seeds), status, error
    results: dict[str, np.ndarray]
    objectives: np.ndarray  # (n, objectives) over the batch's own seeds, NaN for failed ones
    front: np.ndarray  # (n,) NSGA-II front of the estimates, 0 = non-dominated
    rank_key: np.ndarray  # (n,) of the estimates, lower is better; +inf for failed individuals
    evidence: Evidence  # every seed behind each individual's configuration
    estimate: np.ndarray  # (n, objectives) what selection ranks: see hpsrl.campaign.evidence

    @property
    def config(self) -> dict[str, Any]:
        return self.population.config

    @property
    def ok(self) -> np.ndarray:
        return self.results["status"] == "ok"
