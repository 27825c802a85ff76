"""``hpsrl export --optuna FILE``: a campaign as an Optuna study, in Optuna's journal storage.

One trial per individual of every finished generation, in order (trial number = position), named
by user attributes ``generation`` and ``individual``. Its parameters are the individual's genes as
search.strategy ``bo`` gives them to Optuna (:func:`hpsrl.search.bayesopt.individual_parameters`:
list genes as ``NAME.length`` and ``NAME[i]``, categorical choices as text; the genes themselves are
in the user attribute ``genes``). Its state and values:

- COMPLETE, with the individual's objectives over its own seeds (``values``, named by
  ``study.metric_names``), for an individual trained on the whole of training.steps;
- PRUNED, with its primary objective as the intermediate value at the env steps it reached, for
  one that successive halving stopped on an earlier rung (what Optuna's own pruners do);
- FAIL for a failed individual, its error in the user attribute ``error``.

User attributes also hold what selection saw (``estimate``, ``evidence_seeds``), how the individual
was made (``operator``, ``parents``) and per training seed its return, training seed, env steps
and training seconds; the study's hold the config and the campaign's answer (its trial number and
held-out test). A trial's end time is when its result file was written, its start that less its
slowest seed's training and evaluation, so ``plot_timeline`` shows the campaign as it ran.

Load it with::

    optuna.load_study(study_name=CAMPAIGN, storage=JournalStorage(JournalFileBackend(FILE)))
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpsrl.campaign.config import search_space
from hpsrl.campaign.model import Generation
from hpsrl.campaign.paths import batch_generation, generation_files, result_path
from hpsrl.campaign.storage import StorageError, check_replaceable, read_generations
from hpsrl.readers.summary import best_summary, individual_row, plain_values


def _finished_at(campaign_dir: Path, gen: Generation, individual: int) -> datetime.datetime:
    """When an individual's result was written: its result file's time, else (a generation
    combined from rungs, whose results are in the rungs' folders) its generation record's."""
    result = campaign_dir / result_path(gen.population.batch, individual)
    if not result.exists():
        result = campaign_dir / f"{gen.population.batch}.h5"
    return datetime.datetime.fromtimestamp(result.stat().st_mtime)


def campaign_trials(
    campaign_dir: str | Path, gens: Sequence[Generation] | None = None, *, details: bool = True
) -> tuple[dict[str, Any], list[Any]]:
    """The config of a campaign and one Optuna FrozenTrial per individual of its finished
    generations, in order; ``gens``: those generations where the caller has read them already;
    ``details=False``: without the user attributes and the times, for a caller that reads only
    states, parameters and values (Optuna copies every attribute of every trial it is given)."""
    from optuna.trial import TrialState, create_trial

    from hpsrl.search.bayesopt import individual_parameters

    campaign_dir = Path(campaign_dir)
    if gens is None:
        gens = read_generations(generation_files(campaign_dir))
    config = gens[-1].config
    space = search_space(config)
    trials = []
    for gen in gens:
        pop, results = gen.population, gen.results
        complete = pop.complete()
        for i, individual in enumerate(pop.individuals):
            params, distributions = individual_parameters(space, individual)
            attrs = individual_row(gen, i) if details else {}
            objectives = [float(v) for v in gen.objectives[i]]
            if not gen.ok[i]:
                trial = create_trial(
                    state=TrialState.FAIL,
                    params=params,
                    distributions=distributions,
                    user_attrs=attrs,
                )
            elif not complete[i]:  # stopped on an earlier successive-halving rung
                trial = create_trial(
                    state=TrialState.PRUNED,
                    params=params,
                    distributions=distributions,
                    user_attrs=attrs,
                    intermediate_values={int(pop.steps[i]): objectives[0]},
                )
            else:
                trial = create_trial(
                    values=objectives,
                    params=params,
                    distributions=distributions,
                    user_attrs=attrs,
                )
            if details:
                finished = _finished_at(campaign_dir, gen, i)
                seconds = results["train_seconds"][i] + results["eval_seconds"][i]
                seconds = np.nan_to_num(seconds, nan=0.0, posinf=0.0)
                trial.datetime_complete = finished
                trial.datetime_start = finished - datetime.timedelta(seconds=float(np.max(seconds)))
            trials.append(trial)
    return config, trials


def export_study(campaign_dir: str | Path, path: str | Path) -> dict[str, Any]:
    """Write the campaign as an Optuna study (named after the campaign) into the journal file
    ``path``, replacing what it held; what was written: the study's name and trials per
    state."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    campaign_dir, path = Path(campaign_dir), Path(path)
    check_replaceable(path)  # (a folder, such as ".", has no name to put a temporary file beside)
    config, trials = campaign_trials(campaign_dir)
    answer = best_summary(campaign_dir)
    numbers = {
        (t.user_attrs["generation"], t.user_attrs["individual"]): n for n, t in enumerate(trials)
    }
    found = answer.get("individual")
    answer_attr: dict[str, Any] = {"generation": answer["generation"], "individual": found}
    if found is not None:
        answer_attr["trial"] = numbers[(batch_generation(answer["generation"]), found)]
    if "retest" in answer:
        answer_attr["retest"] = plain_values(answer["retest"])

    # A new journal under a temporary name, renamed into place: never half a study, and a study
    # of the same name already in FILE is replaced, not added to.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=config["campaign"],
            storage=JournalStorage(JournalFileBackend(str(tmp))),
            directions=[o["direction"] for o in config["objectives"]],
        )
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what names them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o["name"] for o in config["objectives"]])
        study.set_user_attr("config", config)
        study.set_user_attr("answer", answer_attr)
        study.add_trials(trials)
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    return {"study": config["campaign"], "trials": len(trials), "states": states}
