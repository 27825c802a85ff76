"""The ``hpsrl`` command: what Snakemake's rules call, and what people read campaigns with."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import hpsrl
from hpsrl import LOG_FORMAT
from hpsrl.campaign.config import (
    check_environment,
    default_genes,
    load_config,
    load_yaml,
    search_space,
)
from hpsrl.readers.evaluate import RECORDING_FORMATS
from hpsrl.training.recovery import (
    RUNTIME_ERROR,
    failure_message,
    quarantine_damaged_input,
)
from hpsrl.training.train_request import add_train_arguments, train_arguments_problem


def _cmd_check(args: argparse.Namespace) -> None:
    config = load_config(load_yaml(args.config))
    kind = check_environment(config)
    print(
        f"{args.config}: ok ({config['algorithm']} on {config['env']['id']} with {kind} actions, "
        f"{len(search_space(config))} genes)"
    )


def _cmd_genes(args: argparse.Namespace) -> None:
    import dataclasses

    import yaml

    from hpsrl.agents import hyperparameters_of

    searched = default_genes(args.algorithm)  # ConfigError for an unknown algorithm
    module = hyperparameters_of(args.algorithm)
    print(
        f"# {args.algorithm}: the genes a config searches unless it says otherwise. Under `genes:`"
    )
    print("# a gene of the same name replaces one of these, a new name adds one, `NAME: null`")
    print("# leaves one out; a hyperparameter under `fixed:` is held constant instead.")
    print(yaml.safe_dump({"genes": searched}, sort_keys=False, default_flow_style=None), end="")
    print("# Not searched by default (the default value each individual gets):")
    for field in dataclasses.fields(module.Hyperparameters):
        if field.name not in searched:
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            print(f"#   {field.name}: {json.dumps(default)}")


def _cmd_init(args: argparse.Namespace) -> None:
    from hpsrl.deploy import init_folder

    folder = args.folder
    written = init_folder(folder)
    config = load_yaml(folder / "config" / "config.yaml")
    examples = sum(1 for path in written if path.parent == Path("config", "examples"))
    profiles = sorted(path.parent.name for path in written if path.parts[0] == "profiles")
    print(
        f"wrote {folder / 'config' / 'config.yaml'}: the campaign ({config['algorithm']} on "
        f"{config['env']['id']}); edit it, or start from one of the {examples} in "
        f"{folder / 'config' / 'examples'}"
    )
    print(f"wrote {folder / 'profiles'}: {', '.join(profiles)} (each says what it sets)")
    print(
        f"wrote {folder / 'workflow' / 'Snakefile'}: runs the workflow of the installed hpsrl "
        f"{hpsrl.__version__}"
    )
    where = "" if folder.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(folder))} && "
    print(f"next: {where}snakemake --cores all")


def _cmd_populate(args: argparse.Namespace) -> None:
    from hpsrl.campaign.storage import write_population
    from hpsrl.search.evolve import initial_population

    config = load_config(args.config_json)
    write_population(args.out, initial_population(config))


def _cmd_train(args: argparse.Namespace) -> None:
    from hpsrl.training.train import run_job

    run_job(args.population, args.individual, args.out, args.manifest, args.same_training_as)


def _cmd_collect(args: argparse.Namespace) -> None:
    from hpsrl import steps

    if args.rungs:
        steps.combine_rungs(args.rungs, args.previous, args.out)
    else:
        steps.collect(args.population, args.jobs, args.previous, args.out)


def _cmd_promote(args: argparse.Namespace) -> None:
    from hpsrl import steps

    steps.promote(args.rung, args.out)


def _cmd_evolve(args: argparse.Namespace) -> None:
    from hpsrl import steps

    steps.evolve(args.generations, args.out)


def _cmd_retest(args: argparse.Namespace) -> None:
    from hpsrl import steps

    steps.retest(args.generations, args.out)


def _cmd_status(args: argparse.Namespace) -> None:
    from hpsrl.readers.summary import status_data, status_table, watch_status

    if args.watch is not None:
        watch_status(args.campaign_dir, args.watch, as_json=args.json)
    elif args.json:
        sys.stdout.write(json.dumps(status_data(args.campaign_dir), indent=2) + "\n")
    else:
        sys.stdout.write(status_table(args.campaign_dir))


def _cmd_table(args: argparse.Namespace) -> None:
    from hpsrl.readers.summary import individual_rows, rows_csv, rows_json

    rows = individual_rows(args.campaign_dir)
    sys.stdout.write(rows_json(rows) if args.format == "json" else rows_csv(rows))


def _cmd_best(args: argparse.Namespace) -> None:
    from hpsrl.readers.summary import best_yaml

    sys.stdout.write(best_yaml(args.campaign_dir))


def _cmd_report(args: argparse.Namespace) -> None:
    from hpsrl.readers.report import write_report

    out = write_report(args.campaign_dir, args.out or Path(args.campaign_dir) / "report.html")
    print(f"wrote {out}")


def _cmd_export(args: argparse.Namespace) -> None:
    if args.optuna:
        from hpsrl.readers.optuna_export import export_study

        written = export_study(args.campaign_dir, args.optuna)
        states = ", ".join(f"{n} {state}" for state, n in written["states"].items())
        print(f"wrote {args.optuna}: Optuna study {written['study']!r}, {written['trials']} "
              f"trials ({states})")  # fmt: skip
        print(
            f"load it with: optuna.load_study(study_name={written['study']!r}, "
            f"storage=JournalStorage(JournalFileBackend({str(args.optuna)!r})))"
        )
        if not args.out:
            return
    from hpsrl.readers.export import export_best

    for path in export_best(args.campaign_dir, args.out or Path(args.campaign_dir) / "export"):
        print(f"wrote {path}")


def _cmd_retrain(args: argparse.Namespace) -> None:
    import secrets

    import numpy as np

    from hpsrl.readers.export import load_exported, retrain

    exported = load_exported(args.hyperparameters)
    root_seed = secrets.randbelow(2**32) if args.seed is None else args.seed
    print(
        f"{exported['algorithm']} on {exported['env']['id']}, {args.seeds} fresh seeds from root "
        f"seed {root_seed} (repeat with --seed {root_seed})",
        flush=True,
    )
    means = []
    for k, seed in enumerate(retrain(exported, args.seeds, root_seed, args.steps)):
        means.append(float(np.mean(seed.eval_returns)))
        returns = " ".join(f"{r:.1f}" for r in seed.eval_returns)
        print(
            f"seed {k} (training seed {seed.train_seed}): mean evaluation return {means[-1]:.2f} "
            f"in {seed.train_seconds:.2f} s; episodes: {returns}",
            flush=True,
        )
    print(f"mean over seeds: {np.mean(means):.2f} (min {min(means):.2f}, max {max(means):.2f})")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from hpsrl.readers.evaluate import (
        check_recording,
        evaluate_agent,
        load_agent,
        record_episode,
        result_file,
    )

    if args.record:
        check_recording(args.record)  # before any episode runs
    path = result_file(args.campaign_dir, args.generation, args.individual)
    agent = load_agent(path, args.seed_index)
    episodes = args.episodes or len(agent.stored_returns)
    returns = evaluate_agent(agent, episodes, args.seed)
    seed = agent.eval_seed if args.seed is None else args.seed
    print(f"{path}, training seed {args.seed_index}: {episodes} greedy episodes from seed {seed}")
    print("returns: " + " ".join(f"{r:.1f}" for r in returns))
    print(f"mean {returns.mean():.2f} (min {returns.min():.1f}, max {returns.max():.1f})")
    if args.seed is None:
        stored = agent.stored_returns
        print(f"the campaign's evaluation on this seed: mean {stored.mean():.2f}")
    if args.record:
        episode_return, frames = record_episode(agent, args.record, args.seed)
        print(f"wrote {args.record}: one episode, {frames} frames, return {episode_return:.1f}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from hpsrl.readers.compare import compare

    compare(args.campaign_dirs, args.plot, args.summary)
    print(f"wrote {args.plot} and {args.summary}")


CAMPAIGN_DIR_HELP = "RESULTS_DIR/CAMPAIGN, e.g. results/cartpole-ppo"
WATCH_SECONDS = 5.0  # hpsrl status --watch's default refresh


def _json_object(text: str) -> dict:
    """--config-json's value: a JSON object (argparse makes a ValueError a usage error)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object is needed, not {type(value).__name__}")
    return value


def _user_command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A command people run: listed in ``hpsrl --help`` with ``summary``; its own ``--help``
    gives ``description`` and ``example`` (one or more command lines)."""
    return sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 92),
        epilog="example:\n" + textwrap.indent(example, "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _workflow_step(
    sub: argparse._SubParsersAction, name: str, description: str
) -> argparse.ArgumentParser:
    """A step the Snakemake rules call: left out of ``hpsrl --help`` (no ``help``), described in
    its own ``--help``."""
    return sub.add_parser(
        name, description=f"Workflow step, called by the Snakemake rules: {description}."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpsrl",
        description="Tune deep-RL hyperparameters with a genetic algorithm. A campaign runs with "
        "snakemake (snakemake --cores all, in a clone or in a folder hpsrl init wrote; see "
        "README.md); these commands set up such a folder, check a config and read results.",
        epilog="The workflow's own steps (populate, train, collect, promote, evolve, retest) are "
        "called by its Snakemake rules and left out of this list; each has --help.",
    )
    parser.add_argument("--version", action="version", version=f"hpsrl {hpsrl.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    p = _user_command(
        sub,
        "init",
        "write a folder that runs campaigns with this hpsrl",
        "Write a campaign folder: config/config.yaml (the default campaign, to edit), "
        "config/examples/, profiles/ (default, applied to every run; slurm, for a cluster) and "
        "workflow/Snakefile, which runs the workflow this hpsrl installed (not a copy: upgrading "
        "hpsrl upgrades it). Run snakemake there. Overwrites nothing: a folder with any of these "
        "files already is refused.",
        "hpsrl init my-campaign && cd my-campaign && snakemake --cores all",
    )
    p.add_argument("folder", type=Path, help="the folder to write (made if missing)")
    p.set_defaults(func=_cmd_init)

    p = _user_command(
        sub,
        "check",
        "validate a campaign config without running anything",
        "Validate a campaign config against the schema, import what env.imports names and make "
        "the environment once, without training anything.",
        "hpsrl check config/examples/acrobot-dqn.yaml",
    )
    p.add_argument("config", nargs="?", default="config/config.yaml", help="YAML config file")
    p.set_defaults(func=_cmd_check)

    p = _user_command(
        sub,
        "genes",
        "an algorithm's default genes, as YAML for a config",
        "Print the genes a config searches for an algorithm unless it says otherwise, as YAML "
        "to paste under `genes:`, and the hyperparameters left at their defaults.",
        "hpsrl genes dqn",
    )
    p.add_argument("algorithm", help="e.g. ppo, dqn, sac, td3, ddpg")
    p.set_defaults(func=_cmd_genes)

    p = _user_command(
        sub,
        "status",
        "objectives and failures per generation, the batch in progress",
        "Per finished generation of a campaign: individuals trained and failed, the leader (the "
        "best estimate of the primary objective, with the seeds behind it) and each objective's "
        "best and median over the individuals' own seeds; then every failure with its error, "
        "and the batch in progress: its individuals trained, failed and queued, read from its "
        "result files and training jobs' manifests.",
        "hpsrl status results/cartpole-ppo --watch     # while snakemake runs\n"
        "hpsrl status results/cartpole-ppo --json > status.json",
    )
    p.add_argument("campaign_dir", help=CAMPAIGN_DIR_HELP)
    p.add_argument(
        "--json",
        action="store_true",
        help="the table, the campaign's answer, its held-out test and the batch in progress as "
        "JSON (with --watch: one JSON document per line)",
    )
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=WATCH_SECONDS,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {WATCH_SECONDS:g}) until the campaign is finished "
        "or Ctrl-C",
    )
    p.set_defaults(func=_cmd_status)

    p = _user_command(
        sub,
        "table",
        "every individual of every generation, as CSV or JSON",
        "One row per individual of every finished generation: generation, individual, "
        "operator, parents, env steps it trained to, each gene, each objective over its own "
        "seeds, the estimate selection ranked it by and the seeds of evidence behind it, its "
        "NSGA-II front, status and error, and per training seed its return, training seed, env "
        "steps and training seconds. CSV flattens names as pandas.json_normalize does "
        "(genes.gamma, objectives.return, returns.seed0); empty cells (JSON: null) are values "
        "a failed individual does not have.",
        "hpsrl table results/cartpole-ppo > individuals.csv\n"
        "hpsrl table results/cartpole-ppo --format json | jq '.[] | select(.generation == 3)'",
    )
    p.add_argument("campaign_dir", help=CAMPAIGN_DIR_HELP)
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="(default: csv)")
    p.set_defaults(func=_cmd_table)

    p = _user_command(
        sub,
        "best",
        "the campaign's answer and its held-out test, as YAML",
        "The configuration the campaign returns, as YAML: its held-out test on fresh seeds "
        "first (where the campaign has one), then its hyperparameters, its objectives over all "
        "the seeds behind it, the estimate selection ranked it by and its per-seed returns.",
        "hpsrl best results/cartpole-ppo > best.yaml",
    )
    p.add_argument("campaign_dir", help=CAMPAIGN_DIR_HELP)
    p.set_defaults(func=_cmd_best)

    p = _user_command(
        sub,
        "report",
        "a self-contained HTML report of a campaign, with plots",
        "Write one HTML file with its plots embedded: summary, held-out test, objectives and "
        "genes per generation, learning curves, failures and the config. Works on a running "
        "campaign too.",
        "hpsrl report results/cartpole-ppo --out report.html",
    )
    p.add_argument("campaign_dir", help=CAMPAIGN_DIR_HELP)
    p.add_argument("--out", type=Path, help="the HTML file (default: CAMPAIGN_DIR/report.html)")
    p.set_defaults(func=_cmd_report)

    p = _user_command(
        sub,
        "export",
        "the answer's hyperparameters and weights, or an Optuna study",
        "Write the campaign's answer for use elsewhere: hyperparameters.yaml (for hpsrl "
        "retrain), rl-zoo.yml (Stable-Baselines3's RL Zoo format) and weights_seedK.pt (a "
        "state dict per training seed). With --optuna, write the whole campaign as an Optuna "
        "study instead (and the answer too where --out is given): a trial per individual, "
        "in Optuna's journal storage, for optuna.visualization and other Optuna tools.",
        "hpsrl export results/cartpole-ppo --out best\n"
        "hpsrl export results/cartpole-ppo --optuna cartpole-ppo.journal",
    )
    p.add_argument("campaign_dir", help=CAMPAIGN_DIR_HELP)
    p.add_argument("--out", type=Path, help="the folder (default: CAMPAIGN_DIR/export)")
    p.add_argument(
        "--optuna",
        type=Path,
        metavar="FILE",
        help="write the campaign as an Optuna study (journal storage, named after the "
        "campaign) to FILE, replacing what it held",
    )
    p.set_defaults(func=_cmd_export)

    p = _user_command(
        sub,
        "evaluate",
        "run a trained agent again; --record an episode as GIF or MP4",
        "Rebuild a trained agent from its result file and run greedy episodes: by default the "
        "campaign's answer, training seed 0, on the campaign's own evaluation seed, which "
        "reproduces its evaluation returns. --record renders one episode into a GIF or an MP4.",
        "hpsrl evaluate results/cartpole-ppo --episodes 20 --record best.gif",
    )
    p.add_argument("campaign_dir", help=CAMPAIGN_DIR_HELP)
    p.add_argument("--generation", help="gen000, gen001, ... or retest (default: the best's)")
    p.add_argument("--individual", type=int, help="index in that batch (default: the best)")
    p.add_argument("--seed-index", type=int, default=0, help="which training seed's agent (0)")
    p.add_argument("--episodes", type=int, help="default: as many as the campaign evaluated")
    p.add_argument("--seed", type=int, help="default: the campaign's evaluation seed")
    p.add_argument(
        "--record", type=Path, help="also write one episode to this .gif or .mp4 (hpsrl[video])"
    )
    p.set_defaults(func=_cmd_evaluate)

    p = _user_command(
        sub,
        "retrain",
        "train exported hyperparameters on fresh seeds",
        "Train the hyperparameters.yaml that hpsrl export wrote on fresh seeds, derived from "
        "--seed (a random root by default, printed so that a run can be repeated), and print "
        "each seed's evaluation returns.",
        "hpsrl retrain best/hyperparameters.yaml --seeds 5",
    )
    p.add_argument("hyperparameters", type=Path, help="a hyperparameters.yaml of hpsrl export")
    p.add_argument("--seeds", type=int, default=3, help="fresh training seeds (default 3)")
    p.add_argument("--seed", type=int, help="root of the derived seeds (default: a random one)")
    p.add_argument("--steps", type=int, help="env steps per seed (default: the campaign's)")
    p.set_defaults(func=_cmd_retrain)

    p = _user_command(
        sub,
        "compare",
        "campaigns of one problem compared: best found vs env steps",
        "Compare campaigns of the same problem and budget (snakemake compare runs them): each "
        "search's best against the env steps it trained, and its answer's held-out test.",
        "hpsrl compare results/cartpole-ppo-ga-s0 results/cartpole-ppo-random-s0 \\\n"
        "    --plot comparison.png --summary comparison.yaml",
    )
    p.add_argument("campaign_dirs", nargs="+", type=Path, help="RESULTS_DIR/CAMPAIGN folders")
    p.add_argument("--plot", type=Path, default=Path("comparison.png"), help="the plot (PNG)")
    p.add_argument("--summary", type=Path, default=Path("comparison.yaml"), help="the numbers")
    p.set_defaults(func=_cmd_compare)

    # The workflow's steps (called by the Snakemake rules), hidden from `hpsrl --help`.
    p = _workflow_step(sub, "populate", "write generation 0's population")
    p.add_argument(
        "--config-json", required=True, type=_json_object, help="the validated config as JSON"
    )
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=_cmd_populate)

    p = _workflow_step(sub, "train", "train individuals on their seeds (an MPI job)")
    add_train_arguments(p)  # the warm workers read a job's request with the same options
    p.set_defaults(func=_cmd_train)

    p = _workflow_step(sub, "collect", "stack a batch's results into its record, genGGG.h5")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--population", type=Path, help="the batch's population (with jobs)")
    source.add_argument(
        "--rungs",
        type=Path,
        nargs="+",
        help="the records of a generation's successive-halving rungs, in order, to combine "
        "(their checkpoints are removed then, unless training.checkpoint.keep)",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--previous",
        type=Path,
        help="the previous generation's record, whose evidence this one pools (search.evidence: "
        "pooled, from generation 1 on)",
    )
    p.add_argument("jobs", nargs="*", type=Path, help="training jobs' manifests, in order")
    p.set_defaults(func=_cmd_collect)

    p = _workflow_step(sub, "promote", "write the next successive-halving rung's population")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("rung", type=Path, help="the record of the rung before it")
    p.set_defaults(func=_cmd_promote)

    p = _workflow_step(sub, "evolve", "write generation g+1's population")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "generations",
        nargs="+",
        type=Path,
        help="earlier generations' files in order, the last being generation g: "
        "all of them for search.strategy bo, generation g alone is enough otherwise",
    )
    p.set_defaults(func=_cmd_evolve)

    p = _workflow_step(sub, "retest", "plan the campaign's answer's re-test on fresh seeds")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "generations",
        nargs="+",
        type=Path,
        help="the campaign's generation files in order, the last being the final one: "
        "ga re-tests the final one's best, random and bo the best of all given",
    )
    p.set_defaults(func=_cmd_retest)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments, checked; a bad one exits with usage (status 2,
    recovery.USAGE_ERROR)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (
        args.command == "evaluate"
        and args.record
        and args.record.suffix.lower() not in RECORDING_FORMATS
    ):
        parser.error(
            f"--record writes an animated GIF or an MP4 video: give a path ending in .gif or "
            f".mp4 ({args.record})"
        )
    if args.command == "status" and args.watch is not None and not args.watch > 0:
        parser.error(f"--watch takes a number of seconds above 0, not {args.watch:g}")
    if args.command == "collect" and bool(args.population) != bool(args.jobs):
        parser.error("collect takes training jobs' manifests with --population, none with --rungs")
    if args.command == "train" and (problem := train_arguments_problem(args)):
        parser.error(problem)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOG_FORMAT,
    )
    try:
        args.func(args)
    except BrokenPipeError:  # `hpsrl genes ppo | head`: the reader has all it wanted
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        message = failure_message(e, quarantine_damaged_input(args.command, e))
        if message is None:
            raise
        print(message, file=sys.stderr)
        return RUNTIME_ERROR
    return 0
