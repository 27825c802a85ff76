"""Bayesian optimisation through Optuna (``search.strategy: bo``): each generation's individuals
are a batch that an Optuna sampler (TPE or a Gaussian process) proposes from every individual
evaluated so far.

Nothing is kept between generations: the study is rebuilt in memory from the generation records
each time, so the HDF5 files stay the campaign's only state, and the same history and seed give
the same proposals.

Genes as Optuna parameters:

- float and int genes: ``FloatDistribution`` / ``IntDistribution`` with their bounds and log scale;
- categorical genes: ``CategoricalDistribution`` over the choices' text forms, which are distinct
  by construction (Optuna compares choices with ``==``, which cannot tell ``1`` from ``True``);
- a list gene ``NAME``: ``NAME.length`` (an int in ``[min_length, max_length]``), then
  ``NAME[0]``, ``NAME[1]``, ... for the positions that length has. Positions past it are absent,
  so a sampler models each position from the individuals that have it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import BaseTrial, FixedTrial, FrozenTrial, TrialState, create_trial

from hpsrl.campaign.config import search_space
from hpsrl.campaign.genes import (
    CategoricalGene,
    FloatGene,
    IntGene,
    ListGene,
    ScalarGene,
    SearchSpace,
)
from hpsrl.campaign.model import Generation
from hpsrl.campaign.paths import batch_name


def _suggest_scalar(trial: BaseTrial, gene: ScalarGene, name: str) -> Any:
    if isinstance(gene, FloatGene):
        return trial.suggest_float(name, gene.low, gene.high, log=gene.log)
    if isinstance(gene, IntGene):
        return trial.suggest_int(name, gene.low, gene.high, log=gene.log)
    by_text = {str(choice): choice for choice in gene.choices}
    return by_text[trial.suggest_categorical(name, list(by_text))]


def suggest_individual(trial: BaseTrial, space: SearchSpace) -> dict[str, Any]:
    """The individual that ``trial`` suggests: one parameter per gene, and for a list gene its
    length, then one parameter per position of that length."""
    individual: dict[str, Any] = {}
    for gene in space:
        if isinstance(gene, ListGene):
            length = trial.suggest_int(f"{gene.name}.length", gene.min_length, gene.max_length)
            individual[gene.name] = [
                _suggest_scalar(trial, gene.element, f"{gene.name}[{i}]") for i in range(length)
            ]
        else:
            individual[gene.name] = _suggest_scalar(trial, gene, gene.name)
    return individual


def _parameter(gene: ScalarGene, value: Any) -> Any:
    return str(value) if isinstance(gene, CategoricalGene) else value


def _parameters(space: SearchSpace, individual: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna parameters of an individual, named as :func:`suggest_individual` names them."""
    params: dict[str, Any] = {}
    for gene in space:
        value = individual[gene.name]
        if isinstance(gene, ListGene):
            params[f"{gene.name}.length"] = len(value)
            for i, element in enumerate(value):
                params[f"{gene.name}[{i}]"] = _parameter(gene.element, element)
        else:
            params[gene.name] = _parameter(gene, value)
    return params


def individual_parameters(
    space: SearchSpace, individual: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """An individual's Optuna parameters and their distributions, as a trial that suggested it
    would record them (also what ``hpsrl export --optuna`` writes)."""
    # Replaying the individual through suggest_individual records each parameter's distribution,
    # so the history is described exactly as the proposals are.
    replay = FixedTrial(_parameters(space, individual))
    suggest_individual(replay, space)
    return replay.params, replay.distributions


def _evaluated_trial(
    space: SearchSpace, individual: Mapping[str, Any], objectives: np.ndarray
) -> FrozenTrial:
    """A finished trial: COMPLETE with the objective values, or FAIL where any is NaN (a failed
    individual, see hpsrl.search.moo)."""
    params, distributions = individual_parameters(space, individual)
    if np.isnan(objectives).any():
        return create_trial(state=TrialState.FAIL, params=params, distributions=distributions)
    return create_trial(
        params=params, distributions=distributions, values=[float(v) for v in objectives]
    )


def _sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    # Generation 0 is the random start-up of every strategy, so the samplers model the history
    # from its first finished individual on (before that they sample at random).
    if name == "gp":
        # The GP sampler conditions each proposal on the batch's earlier, pending ones itself.
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=1, warn_independent_sampling=False
        )
    with warnings.catch_warnings():
        # `group` is marked experimental (since Optuna 2.8); it is what models list positions.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=1,
            multivariate=True,  # genes modelled jointly, not one by one
            group=True,  # list positions modelled from the individuals that have them
            constant_liar=True,  # pending proposals count as bad, so a batch spreads out
        )


def history_study(
    history: Sequence[Generation], config: Mapping[str, Any], seed: int
) -> optuna.Study:
    """An in-memory study holding every individual of ``history`` (generations 0, 1, ... in
    order) as a finished trial, with the campaign's objectives and directions and a sampler
    seeded with ``seed``."""
    batches = [g.population.batch for g in history]
    expected = [batch_name(g) for g in range(len(history))]
    if batches != expected:
        raise ValueError(
            f"search.strategy bo proposes from the whole history: got generations {batches}, "
            f"expected {expected}; pass every earlier generation file, in order"
        )
    space = search_space(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study and trial
    study = optuna.create_study(
        directions=[o["direction"] for o in config["objectives"]],
        sampler=_sampler(config["search"]["sampler"], seed),
    )
    study.add_trials(
        [
            _evaluated_trial(space, individual, objectives)
            for generation in history
            for individual, objectives in zip(
                generation.population.individuals, generation.objectives, strict=True
            )
        ]
    )
    return study


def propose(study: optuna.Study, space: SearchSpace, n: int) -> list[dict[str, Any]]:
    """``n`` new individuals asked of ``study``; each stays pending while the next is asked."""
    proposals = [suggest_individual(study.ask(), space) for _ in range(n)]
    for individual in proposals:
        space.validate(individual)  # Optuna clips to the bounds; a violation would be a bug
    return proposals
