"""What a training job is asked to do, as one typed request: the ``hpsrl train`` step's options.

The ``hpsrl train`` command reads them from its command line; the warm workers' ``submit``
(hpsrl/training/workers.py) reads them from the same command line, the one it runs itself where no
pool answers, and hands the pool this request as JSON. The pool trains it with what ``hpsrl train``
uses (:class:`hpsrl.training.train.TrainingJob`) and never parses a command line.

This module imports only the standard library: ``submit`` runs once per training job.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainRequest:
    """Train ``individuals`` of the population file ``population``, writing each one's result
    file to its ``out_paths`` entry, then list them all in ``manifest`` (where there is one).
    ``same_training``: for each individual, another campaign's result file to copy instead of
    training where it holds the very same training."""

    population: Path
    individuals: tuple[int, ...]
    out_paths: tuple[Path, ...]
    manifest: Path | None = None
    same_training: tuple[Path, ...] | None = None

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> TrainRequest:
        """The request of parsed ``hpsrl train`` options (:func:`add_train_arguments`)."""
        return cls(
            population=args.population,
            individuals=tuple(args.individual),
            out_paths=tuple(args.out),
            manifest=args.manifest,
            same_training=tuple(args.same_training_as) if args.same_training_as else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "population": str(self.population),
            "individuals": list(self.individuals),
            "out_paths": [str(path) for path in self.out_paths],
            "manifest": None if self.manifest is None else str(self.manifest),
            "same_training": (
                None if self.same_training is None else [str(p) for p in self.same_training]
            ),
        }

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> TrainRequest:
        """The request :meth:`to_json` wrote; ValueError, TypeError or KeyError for anything
        else."""

        def paths(values: Any) -> tuple[Path, ...]:
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise TypeError(f"not a list of paths: {values!r}")
            return tuple(Path(v) for v in values)

        individuals = fields["individuals"]
        if (
            not individuals
            or not isinstance(individuals, list)
            or not all(type(i) is int for i in individuals)
        ):
            raise TypeError(f"not a list of individuals: {individuals!r}")
        request = cls(
            population=paths([fields["population"]])[0],
            individuals=tuple(individuals),
            out_paths=paths(fields["out_paths"]),
            manifest=None if fields["manifest"] is None else paths([fields["manifest"]])[0],
            same_training=None
            if fields["same_training"] is None
            else paths(fields["same_training"]),
        )
        if problem := _lengths_problem(request):
            raise ValueError(problem)
        return request


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``hpsrl train`` step's options, for its parser in hpsrl/cli.py and for
    :func:`read_train_command`."""
    parser.add_argument("--population", required=True, type=Path)
    parser.add_argument(
        "--individual", required=True, type=int, nargs="+", help="indices, in order"
    )
    parser.add_argument("--out", required=True, type=Path, nargs="+", help="a result file for each")
    parser.add_argument(
        "--manifest", type=Path, help="list the result files here once all are done"
    )
    parser.add_argument(
        "--same-training-as",
        type=Path,
        nargs="+",
        help="for each individual, another campaign's result file to copy instead of training "
        "where it holds the very same training (compare: generation 0 of the first strategy)",
    )


def train_arguments_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with parsed ``hpsrl train`` options that argparse cannot tell, as the usage
    error to give; None where nothing is."""
    return _lengths_problem(TrainRequest.from_arguments(args))


def _lengths_problem(request: TrainRequest) -> str | None:
    individuals = len(request.individuals)
    if individuals != len(request.out_paths):
        return (
            f"--individual names {individuals} individuals but --out "
            f"{len(request.out_paths)} result files; give one --out file per individual"
        )
    if request.same_training and len(request.same_training) != individuals:
        return (
            f"--individual names {individuals} individuals but --same-training-as "
            f"{len(request.same_training)} files; give one per individual"
        )
    return None


class _NotARequest(Exception):
    pass


class _QuietParser(argparse.ArgumentParser):
    """Raises where argparse would print a usage error and exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _NotARequest(message)


def read_train_command(argv: Sequence[str]) -> TrainRequest | None:
    """The request of an ``hpsrl train`` command's arguments (those after ``train``); None where
    they are not a valid one, which the command itself then reports as its usage error."""
    parser = _QuietParser(prog="hpsrl train", add_help=False)
    add_train_arguments(parser)
    try:
        args = parser.parse_args(list(argv))
    except _NotARequest:
        return None
    if train_arguments_problem(args):
        return None
    return TrainRequest.from_arguments(args)
