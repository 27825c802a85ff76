"""Search quality on ARLBench's protocol: does the configuration a search returns hold up?

Protocol (Becktepe et al. 2024, "ARLBench"): each search gets the budget of 32 configurations x 3
training seeds at full fidelity, in env steps (here population 8 x 4 generations x 3 seeds x the
task's steps; every variant is charged the same env steps, racing copies included), and the whole
search is repeated on 5 search seeds. The score of a search is its answer (the configuration it
returns) trained again on 10 fresh seeds that nothing selected on: the held-out test. The score the
search itself saw is reported beside it (in_search); the gap is the winner's curse. The variants
of a search seed are re-tested on the same fresh seeds, so each is also compared with the default
fresh seed by fresh seed (heldout_minus_default), which measures the difference far more precisely
than the two means do where a seed moves every configuration alike (as on Pendulum-v1, whose
returns depend strongly on the start states a seed draws).

Variants compared (``compare.strategies``): the GA with pooled evidence and racing, the same
without racing (ablation), the same with successive halving (rungs at 1/3 and all of the steps),
the GA as it was before evidence pooling (ablation), random search and Bayesian optimisation
(Optuna TPE), the last two as ARLBench runs them (each configuration judged on its own 3 seeds,
nothing re-trained). The one a config gets when it names no search is marked ``default: true``.

It runs the real workflow on the task's example config (config/examples/<task>.yaml, objective:
return alone, as ARLBench) in a working folder, one search seed at a time, and commits nothing
itself: as each variant of a search seed finishes (one after the other: 17-26 min each for
Pendulum-v1 SAC on an idle 2-core machine), it adds that variant to the seed's summary
``benchmarks/results/search_quality/<task>/seed<K>.yaml`` (small: commit it) and writes the
combined figures to ``benchmarks/results/search_quality.yaml`` and a plot to
``benchmarks/plots/search_quality_<task>.png``. A rerun skips every (seed, variant) whose summary
exists for the same config, so it resumes across machines from the committed summaries; a killed
run resumes inside a seed from the working folder's campaigns.

    python benchmarks/search_quality.py                               # every task, seeds 0-4
    python benchmarks/search_quality.py --tasks cartpole-dqn --seeds 0,1
    python benchmarks/search_quality.py --summarise                   # combine, run nothing
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bench
import numpy as np
import yaml

from hpsrl.campaign.config import (
    compared_campaigns,
    compared_name,
    load_config,
    upgraded_config,
)
from hpsrl.campaign.identity import config_hash, same_campaign
from hpsrl.readers.compare import SearchTrace, plot, search_trace
from hpsrl.readers.summary import best_summary

#: task -> (example config, env steps per training, ARLBench's SMAC-BO mean score)
TASKS: dict[str, tuple[str, int, float]] = {
    "cartpole-dqn": ("cartpole-dqn.yaml", 50_000, 500.0),
    "acrobot-dqn": ("acrobot-dqn.yaml", 100_000, -74.6),
    "pendulum-sac": ("pendulum-sac.yaml", 20_000, -292.0),
}

#: name -> the search keys it changes on the default search (see compare.strategies)
CLASSIC = {"evidence": "fresh", "racing": {"share": 0}}
VARIANTS: dict[str, dict[str, Any]] = {
    # spelt out, so that a later change of the defaults leaves its runs valid
    "ga": {"strategy": "ga", "evidence": "pooled", "racing": {"share": 0.25, "top": 2}},
    # racing's share of the default (ablation): pooled evidence alone, no configuration re-trained
    # on purpose (so no elites), the best estimate of all generations returned
    "ga-no-racing": {"strategy": "ga", "evidence": "pooled", "racing": {"share": 0}},
    # the same with successive halving: rungs at 1/3 and all of training.steps
    "ga-halving": {
        "strategy": "ga",
        "evidence": "pooled",
        "racing": {"share": 0.25, "top": 2},
        "fidelity": {"rungs": 2, "eta": 3},
    },
    # the GA before pooling: 2 elites of 8 re-trained each generation, judged on 3 seeds alone
    "ga-today": {"strategy": "ga", "evidence": "fresh", "racing": {"share": 0.25, "top": 2}},
    "random": {"strategy": "random", **CLASSIC},
    "bo": {"strategy": "bo", "sampler": "tpe", **CLASSIC},
}
SEARCH_SEEDS = 5
NAME = "search_quality"
RESULTS_DIR = _bench.BENCH_DIR / "results"


def task_config(task: str) -> dict[str, Any]:
    """The task's example config with the protocol's budget."""
    file, steps, _ = TASKS[task]
    config = yaml.safe_load((_bench.REPO / "config" / "examples" / file).read_text())
    config["campaign"] = f"sq-{task}"
    config["results_dir"] = "results"
    config["objectives"] = [{"name": "return", "direction": "maximize"}]
    config.pop("search", None)  # the default search, which the variants change
    # A whole generation per training job: one import of torch per generation instead of per
    # individual. Not part of the results' config hash.
    config["training"].update(steps=steps, seeds=3, individuals_per_job=8)
    config["budget"] = {"population": 8, "generations": 4}  # 32 configurations x 3 seeds a search
    config["retest"] = {"seeds": 10}
    config["compare"] = {
        "strategies": [{"name": name, "search": search} for name, search in VARIANTS.items()],
        "search_seeds": SEARCH_SEEDS,
    }
    return config


def default_variant(config: dict[str, Any]) -> str:
    """The variant whose search is what a config that names none gets."""
    plain = load_config({k: v for k, v in config.items() if k != "compare"})["search"]
    campaigns = compared_campaigns(load_config(config))
    for name in VARIANTS:
        if campaigns[compared_name(config, name, 0)]["search"] == plain:
            return name
    raise RuntimeError("no variant runs the default search; add one to VARIANTS")


def copy_workflow(workdir: Path) -> None:
    """Put today's workflow (never the results) into ``workdir``, which keeps the task's results
    between runs so that they resume."""
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src, dest = _bench.REPO / name, workdir / name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)


@contextlib.contextmanager
def sole_run(workdir: Path) -> Iterator[None]:
    """Hold ``workdir`` for this process alone, or exit saying which folder is busy."""
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / ".search_quality.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(f"another search_quality run is using {workdir}; wait for it or stop it")
        yield


def cpu_model() -> str:
    """The processor, as /proc/cpuinfo names it (with family and model: names are often vague)."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    flags = info.get("flags", "").split()
    return (
        f"{info.get('model name', platform.processor())} (family {info.get('cpu family', '?')} "
        f"model {info.get('model', '?')}, {os.cpu_count()} cores, "
        f"{'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'})"
    )


def seed_file(task: str, seed: int) -> Path:
    return RESULTS_DIR / NAME / task / f"seed{seed}.yaml"


def plot_file(task: str) -> Path:
    return RESULTS_DIR.parent / "plots" / f"{NAME}_{task}.png"


def read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def variant_summary(campaign_dir: Path, campaign: dict[str, Any]) -> dict[str, Any]:
    """What one search found and what it cost (small: it goes into the repository)."""
    trace = search_trace(campaign_dir)
    best = best_summary(campaign_dir)
    retest = best.get("retest") or {}
    return {
        "campaign": campaign["campaign"],
        "config_hash": config_hash(campaign),
        # the config as run (plain YAML), so that a later hpsrl that renames keys still knows it
        "config": json.loads(json.dumps(campaign)),
        "heldout": retest.get("mean_return"),
        "heldout_returns": retest.get("returns_per_seed"),
        "in_search": float(trace.best[-1]),
        "evidence_seeds": best.get("evidence_seeds"),
        "env_steps": int(trace.env_steps[-1]),
        "train_core_seconds": round(trace.core_seconds, 1),
        # per variant: a seed's variants may run on different machines, one session each
        "machine": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "trace": {
            "env_steps": [int(x) for x in trace.env_steps],
            "in_search": [float(x) for x in trace.best],
        },
        "answer": {
            "generation": best.get("generation"),
            "individual": best.get("individual"),
            "hyperparameters": best.get("hyperparameters"),
        },
    }


def ran_as(row: dict[str, Any] | None, campaign: dict[str, Any]) -> bool:
    """Whether a variant's summary ``row`` was made by the search that ``campaign`` configures
    today: its stored config read with today's key names (as hpsrl reads the configs stored in
    results), so that renaming a config key keeps the committed summaries."""
    if not row:
        return False
    if "config" not in row:  # summaries written before they kept their config
        return row["config_hash"] == config_hash(campaign)
    return same_campaign(upgraded_config(row["config"]), campaign)


def run_seed(task: str, seed: int, args: argparse.Namespace) -> None:
    """Run the variants (of ``args.variants``) of one search seed that have no summary yet, one
    after the other, and add each to the seed's summary as soon as it has finished: a run killed
    after hours (or a machine given back) keeps every variant that finished."""
    config = task_config(task)
    campaigns = compared_campaigns(load_config(config))
    path = seed_file(task, seed)
    done = read_yaml(path).get("variants", {})
    todo = [
        variant
        for variant in args.variants
        if not ran_as(done.get(variant), campaigns[compared_name(config, variant, seed)])
    ]
    if not todo:
        print(f"{task} seed {seed}: summarised in {path}, skipped", flush=True)
        return
    workdir = args.workdir / task
    with sole_run(workdir):
        copy_workflow(workdir)
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        snakemake = [str(_bench.BIN / "snakemake"), "--cores", str(args.cores),
                     "--configfile", str(config_path)]  # fmt: skip
        log_path = workdir / "snakemake.log"
        with log_path.open("a") as log:
            # A run that was killed leaves snakemake's lock behind; no other run can hold this
            # folder now (sole_run), so any lock in it is stale.
            subprocess.run(
                [*snakemake, "--unlock"], cwd=workdir, env=_bench.child_env(),
                stdout=log, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip
        for variant in todo:
            # One variant at a time: generation 0, which the variants share, is trained by the
            # first and found in the working folder by the others.
            name = compared_name(config, variant, seed)
            print(f"{task} seed {seed}: running {variant}", flush=True)
            started = time.perf_counter()
            with log_path.open("a") as log:
                finished = subprocess.run(
                    [*snakemake, "--rerun-incomplete",
                     *(f"results/{name}/{file}" for file in ("retest.h5", "best.yaml"))],
                    cwd=workdir, env=_bench.child_env(), stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            if finished.returncode != 0:
                raise RuntimeError(f"snakemake failed for {task} seed {seed}; see {log_path}")
            wall = time.perf_counter() - started
            summary = read_yaml(path)
            done = summary.get("variants", {})
            done[variant] = variant_summary(workdir / "results" / name, campaigns[name])
            write_yaml(path, {
                "task": task,
                "search_seed": seed,
                "machine": summary.get("machine") or cpu_model(),
                "date": summary.get("date") or time.strftime("%Y-%m-%d"),
                "wall_seconds": {**summary.get("wall_seconds", {}), variant: round(wall)},
                "variants": {v: done[v] for v in VARIANTS if v in done},
            })  # fmt: skip
            print(f"{task} seed {seed}: {variant} took {wall / 60:.1f} min, summary in {path}",
                  flush=True)  # fmt: skip
            summarise([task])


def _stats(values: list[float | None]) -> dict[str, Any]:
    numbers = np.array([np.nan if v is None else v for v in values], dtype=float)
    finite = numbers[np.isfinite(numbers)]
    return {
        "mean": round(float(finite.mean()), 2) if finite.size else None,
        "std": round(float(finite.std()), 2) if finite.size else None,
    }


def paired_difference(default: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """The default's held-out returns minus another variant's of the same search seed, fresh seed
    by fresh seed: their mean and its standard error. Both answers were trained on the same
    fresh seeds, so what a seed does to every configuration alike (its evaluation's start states,
    say) cancels out, and the difference is measured far more precisely than either mean."""
    ours, theirs = np.array(default["heldout_returns"]), np.array(other["heldout_returns"])
    if ours.shape != theirs.shape:
        raise ValueError(
            f"{default['campaign']} and {other['campaign']} were re-tested on {len(ours)} and "
            f"{len(theirs)} seeds; the protocol re-tests every answer on the same 10"
        )
    differences = ours - theirs
    return {
        "mean": round(float(differences.mean()), 2),
        "se": round(float(differences.std(ddof=1) / np.sqrt(len(differences))), 2),
    }


def wall_minutes(summaries: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The wall time of each search seed's runs, in minutes, as recorded: one figure per variant
    for seeds run since the variants ran one by one, one for several variants before; a run that
    resumed a killed one recorded only its own time."""
    return [
        {
            "seed": seed,
            "minutes": {run: round(s / 60, 1) for run, s in summary["wall_seconds"].items()},
        }
        for seed, summary in summaries.items()
        if summary.get("wall_seconds")
    ]


def summarise(tasks: list[str]) -> dict[str, Any]:
    """Combine the seed summaries of ``tasks`` (those of the current config) into the repository's
    results file and plots; other tasks' entries in the file are kept (runs of other tasks that
    write it at the same time wait for each other)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f".{NAME}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _summarise(tasks)


def _summarise(tasks: list[str]) -> dict[str, Any]:
    combined = read_yaml(RESULTS_DIR / f"{NAME}.yaml")
    combined.setdefault("tasks", {})
    combined["protocol"] = (
        "ARLBench: population 8 x 4 generations x 3 seeds at full fidelity per search (32 "
        "configurations' worth of env steps), objective: return; heldout: the search's answer "
        "trained again on 10 fresh seeds; mean and std (ddof 0) over search seeds; "
        "heldout_minus_default: per search seed, the default's held-out returns minus the "
        "variant's on the same fresh seeds (the variants of a search seed share its re-test "
        "seeds), their mean and its standard error; costs (train_core_minutes_per_seed, "
        "wall_minutes_per_seed) as measured on the machine each seed ran on, beside whatever else "
        "ran there (wall: of the run that finished a variant, not of any killed before it)"
    )
    for task in tasks:
        config = task_config(task)
        campaigns = compared_campaigns(load_config(config))
        default = default_variant(config)
        entries: dict[str, Any] = {}
        traces: list[SearchTrace] = []
        summaries = {seed: read_yaml(seed_file(task, seed)) for seed in range(SEARCH_SEEDS)}
        runs: dict[str, dict[int, dict[str, Any]]] = {}  # variant -> search seed -> its summary
        for variant in VARIANTS:
            rows = []
            for seed, summary in summaries.items():
                row = summary.get("variants", {}).get(variant)
                if ran_as(row, campaigns[compared_name(config, variant, seed)]):
                    rows.append((seed, row, summary))
            if not rows:
                continue
            runs[variant] = {seed: row for seed, row, _ in rows}
            heldout = _stats([r["heldout"] for _, r, _ in rows])
            in_search = _stats([r["in_search"] for _, r, _ in rows])
            entries[variant] = {
                "default": variant == default,
                "heldout_mean": heldout["mean"],
                "heldout_std": heldout["std"],
                "insearch_mean": in_search["mean"],
                "insearch_std": in_search["std"],
                "env_steps": int(np.mean([r["env_steps"] for _, r, _ in rows])),
                "search_seeds": [seed for seed, _, _ in rows],
                "heldout_per_seed": [r["heldout"] for _, r, _ in rows],
                "insearch_per_seed": [r["in_search"] for _, r, _ in rows],
                # per search seed, with the CPU each ran on: seeds run on different machines
                # and loads, so a mean over them would not be a cost
                "train_core_minutes_per_seed": [
                    round(r["train_core_seconds"] / 60, 1) for _, r, _ in rows
                ],
                "machine_per_seed": [r.get("machine", s["machine"]) for _, r, s in rows],
            }
            for seed, row, _ in rows:
                traces.append(
                    SearchTrace(
                        campaign=row["campaign"],
                        strategy=variant,
                        config=campaigns[compared_name(config, variant, seed)],
                        env_steps=np.array(row["trace"]["env_steps"]),
                        best=np.array(row["trace"]["in_search"], dtype=float),
                        core_seconds=row["train_core_seconds"],
                        retest_mean=row["heldout"],
                    )
                )
        for variant, by_seed in runs.items():
            if variant != default:
                entries[variant]["heldout_minus_default"] = [
                    {"seed": seed, **paired_difference(runs[default][seed], row)}
                    for seed, row in by_seed.items()
                    if seed in runs.get(default, {})
                ]
        combined["tasks"][task] = {
            "arlbench_smac_in_search": TASKS[task][2],
            "wall_minutes_per_seed": wall_minutes(summaries),
            **entries,
        }
        if traces:
            plot(traces, plot_file(task))
    write_yaml(RESULTS_DIR / f"{NAME}.yaml", combined)
    return combined


def print_table(combined: dict[str, Any], tasks: list[str], markdown: bool = False) -> None:
    """The combined figures of ``tasks``, as a plain table or (``markdown``) one for
    RESULTS.md with each search seed's held-out score."""
    headers = ["task", "variant", "search seeds", "held-out (mean +- std)", "in search",
               "env steps", "train core-min, median"]  # fmt: skip
    rows = []
    for task in tasks:
        for variant, e in combined["tasks"].get(task, {}).items():
            if not isinstance(e, dict):
                continue
            heldout = f"{e['heldout_mean']:.1f} +- {e['heldout_std']:.1f}"
            if markdown:
                per_seed = ", ".join(f"{v:.1f}" for v in e["heldout_per_seed"])
                heldout = f"**{heldout}** ({per_seed})"
            rows.append([
                task, variant + (" (default)" if e["default"] else ""),
                ",".join(map(str, e["search_seeds"])), heldout,
                f"{e['insearch_mean']:.1f} +- {e['insearch_std']:.1f}",
                f"{e['env_steps'] / 1e6:.2f}M",
                f"{np.median(e['train_core_minutes_per_seed']):.1f}",
            ])  # fmt: skip
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(str(cell) for cell in row) + " |")
    else:
        print(_bench.table(headers, rows))


def parse_seeds(text: str) -> list[int]:
    seeds = [int(s) for s in text.split(",") if s.strip()]
    if any(not 0 <= s < SEARCH_SEEDS for s in seeds):
        raise argparse.ArgumentTypeError(f"search seeds are 0..{SEARCH_SEEDS - 1}")
    return seeds


def main(argv: list[str] | None = None) -> None:
    global RESULTS_DIR
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(SEARCH_SEEDS)),
                        help="comma-separated search seeds to run (default: all 5)")  # fmt: skip
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=_bench.OUT_DIR / NAME)
    parser.add_argument("--summarise", action="store_true",
                        help="only combine the seed summaries already written")  # fmt: skip
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variants to run (default: all); the others' "
                        "summaries are kept")  # fmt: skip
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown, for RESULTS.md")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS_DIR,
                        help="where the summaries go (plots: beside it, in plots/), e.g. "
                        "another checkout's, to run a frozen copy of the code")  # fmt: skip
    args = parser.parse_args(argv)
    RESULTS_DIR = args.results.resolve()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    for task in tasks:
        if task not in TASKS:
            parser.error(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if not args.summarise:
        for task in tasks:
            for seed in args.seeds:
                run_seed(task, seed, args)
    print_table(summarise(tasks), tasks, args.markdown)
    print(f"written {RESULTS_DIR / f'{NAME}.yaml'}")


if __name__ == "__main__":
    main()
