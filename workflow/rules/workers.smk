# Warm workers (hpsrl/training/workers.py): run on this machine, training jobs hand their seeds to
# one pool of processes that imported torch once, started with the run, instead of each job
# launching ranks that import it again (about 2.3 s a job against 0.5 s for a 20k-step CartPole
# seed). On a cluster, with --no-hooks or with HPSRL_WARM_WORKERS=0, each job launches its own
# ranks; so does a job that finds no pool (one that could not start or stopped), with the ranks it
# was given, and its log says why. Jobs that start while the pool is starting (a resumed campaign's
# first ones) wait for it: onstart names its process in a file next to its socket before any job
# runs.
import os
from pathlib import Path

from hpsrl.training import workers as warm_workers

# This run's pool, once onstart has started it.
POOL = {}


def uses_warm_workers():
    """Whether this run's training jobs go to warm workers: run here (jobs_run_here, common.smk:
    so not in a dry run of a cluster run either), with hooks (onstart starts the pool), not
    turned off. Not in modes that run no job (--report has no execution settings)."""
    no_hooks = getattr(workflow.execution_settings, "no_hooks", True)
    return jobs_run_here() and not no_hooks and warm_workers.enabled()


def warm_workers_prefix(wildcards):
    """What a training job's command starts with: hand it to this run's pool, which trains it
    unless the pool is not there (then the job runs the rest of the command itself)."""
    if not uses_warm_workers():
        return ""
    return f"python -m hpsrl.training.workers submit {warm_workers.socket_path(os.getpid())} -- "


def pool_size():
    """A worker per core, but no more than the seeds one batch can train side by side: more
    would only import torch for nothing (about 300 MiB each)."""
    seeds = max(
        max(c["budget"]["population"] * c["training"]["seeds"], c["retest"]["seeds"])
        for c in CAMPAIGNS.values()
    )
    return min(workflow.cores, seeds)


def start_warm_workers():
    """Start this run's pool, where its training jobs go to warm workers (onstart: hooks.smk),
    unless no training job will run. Where Snakemake's job list cannot be read (private API,
    warm_workers.campaigns_to_train), the pool starts anyway."""
    if not uses_warm_workers():
        return
    training = warm_workers.campaigns_to_train(workflow, "train_individuals")
    if training == []:
        return
    # its log goes with a campaign it trains for (under `snakemake compare`, one of several)
    campaign = training[0] if training else CAMPAIGN["campaign"]
    POOL["process"] = warm_workers.start_pool(
        pool_size(),
        sorted({c["algorithm"] for c in CAMPAIGNS.values()}),
        Path(RESULTS_DIR) / campaign / "logs" / "workers.log",
    )
