# Paths and indices of a campaign; everything else lives in the hpsrl package.
import json
import math
import os
import sys

from hpsrl.config import ConfigError, check_environment, load_config
from hpsrl.evolve import best_candidates, reads_whole_history
from hpsrl.storage import StorageError, check_campaign_matches, check_writable

# The validated config with every default filled in (schema: hpsrl/schemas/config.schema.yaml).
# A bad config stops here with one message, before any job starts.
try:
    CAMPAIGN = load_config(config)
    RESULTS = f"{CAMPAIGN['results_dir']}/{CAMPAIGN['campaign']}"
    if workflow.is_main_process:  # not again inside each cluster job
        check_environment(CAMPAIGN)
        check_campaign_matches(CAMPAIGN, RESULTS)
        check_writable(RESULTS)
except (ConfigError, StorageError) as error:
    sys.exit(f"hpsrl: {error}")
GENERATIONS = CAMPAIGN["ga"]["generations"]
RETEST_SEEDS = CAMPAIGN["report"]["retest_seeds"]


wildcard_constraints:
    batch=r"gen\d{3}|retest",
    gen=r"\d{3}",
    first=r"\d{3}",
    last=r"\d{3}",


def config_json():
    return json.dumps(CAMPAIGN)


def generation_file(gen):
    return f"{RESULTS}/gen{gen:03d}.h5"


def batch_size(batch):
    """Individuals in a batch: the population, or the one re-tested best individual."""
    return 1 if batch == "retest" else CAMPAIGN["ga"]["population"]


def seeds_of(batch):
    return RETEST_SEEDS if batch == "retest" else CAMPAIGN["training"]["seeds"]


def training_jobs(wildcards):
    """The manifests of a batch's training jobs, in population order: indFFF-LLL.txt for the job
    that trains individuals FFF to LLL (training.individuals_per_job of them; 1 for the re-test).
    Named by their individuals, so that changing individuals_per_job on a running campaign makes
    new jobs (which keep the results already trained) instead of reusing ones that mean others.
    """
    n = batch_size(wildcards.batch)
    k = (
        1
        if wildcards.batch == "retest"
        else CAMPAIGN["training"]["individuals_per_job"]
    )
    return [
        f"{RESULTS}/{wildcards.batch}/ind{first:03d}-{min(first + k, n) - 1:03d}.txt"
        for first in range(0, n, k)
    ]


def job_individuals(wildcards):
    return list(range(int(wildcards.first), int(wildcards.last) + 1))


def job_results(wildcards):
    """The result file of each individual a training job trains (not its outputs: see train.smk)."""
    return [
        f"{RESULTS}/{wildcards.batch}/ind{i:03d}.h5" for i in job_individuals(wildcards)
    ]


def previous_generation(wildcards):
    return generation_file(int(wildcards.gen) - 1)


def search_history(wildcards):
    """The generation files that proposing generation gen reads: every earlier one where the
    search strategy refits a model on them all (bo), else the previous one."""
    if reads_whole_history(CAMPAIGN):
        return [generation_file(g) for g in range(int(wildcards.gen))]
    return [previous_generation(wildcards)]


def best_candidate_files():
    """The generation files the best individual is chosen from (the final one for ga, all for
    random and bo: see hpsrl.evolve.best_candidates)."""
    return best_candidates(CAMPAIGN, [generation_file(g) for g in range(GENERATIONS)])


def training_ranks(wildcards):
    """One MPI rank, and so one core, per training seed. Locally these are the job's threads, so
    snakemake --cores N never runs more ranks than cores; on Slurm, tasks with cpus_per_task each.
    """
    return seeds_of(wildcards.batch)


def training_runtime(wildcards):
    """Minutes for one training job: its individuals' step budget at a conservative 500 steps/s
    per rank, plus 5 minutes for start-up and evaluation. Override with
    --set-resources train_individuals:runtime=M.
    """
    seconds = len(job_individuals(wildcards)) * CAMPAIGN["training"]["steps"] / 500
    return 5 + math.ceil(seconds / 60)


def campaign_dir(wildcards, input):
    """RESULTS_DIR/CAMPAIGN, as the folder of the generation files."""
    return os.path.dirname(input.generations[0])


def campaign_targets():
    targets = [generation_file(g) for g in range(GENERATIONS)]
    targets += [
        f"{RESULTS}/status.txt",
        f"{RESULTS}/best.yaml",
        f"{RESULTS}/report.html",
    ]
    return targets
