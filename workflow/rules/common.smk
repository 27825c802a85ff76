# Paths and indices of campaigns; everything else lives in the hpsrl package.
#
# Every rule's paths start with RESULTS_DIR/{campaign}: the config's campaign, and, for `snakemake
# compare`, the campaigns its compare section derives from it (one per strategy and search seed).
import json
import math
import os
import re
import sys

from hpsrl.campaign import locks as run_locks
from hpsrl.campaign import paths as naming
from hpsrl.campaign.config import (
    ConfigError,
    check_environment,
    compared_campaigns,
    load_config,
    one_line,
    shared_first_generations,
)
from hpsrl.campaign.evidence import pools_evidence
from hpsrl.campaign.halving import rungs
from hpsrl.campaign.paths import (
    batch_generation,
    batch_name,
    individuals_per_job,
    manifest_path,
    record_path,
    result_path,
    rung_batch,
    rung_of,
)
from hpsrl.campaign.storage import StorageError, check_campaign_matches, check_writable
from hpsrl.cluster.executor import runs_locally, this_runs_executor
from hpsrl.search.evolve import best_candidates, planned_size, reads_whole_history

# MPICH's ranks swap network addresses through the launcher's PMI at start-up. Its UCX addresses run
# to kilobytes, sent in pieces that Slurm's PMI server can misread ("mpi/pmi2: value not properly
# terminated in client request", pmodels/mpich#6924): one rank dies, the other hangs until the job's
# time limit. libfabric's addresses are 16 bytes, and hpsrl's ranks exchange a few kilobytes per
# training: it loses nothing. Jobs inherit this (sbatch exports the environment); only MPICH reads
# it, and a value set by the user wins.
os.environ.setdefault("MPIR_CVAR_CH4_NETMOD", "ofi")

# The validated configs with every default filled in (schema: hpsrl/schemas/config.schema.yaml).
# A bad config stops here with one message, before any job starts.
try:
    CAMPAIGN = load_config(config)
    COMPARED = compared_campaigns(CAMPAIGN)
    CAMPAIGNS = {CAMPAIGN["campaign"]: CAMPAIGN, **COMPARED}
    FIRST_GENERATION_FROM = shared_first_generations(CAMPAIGN)
    RESULTS_DIR = CAMPAIGN["results_dir"]
    if workflow.is_main_process:  # not again inside each cluster job
        # a run killed before it could remove its locks would stop this one (see hooks.smk)
        for line in run_locks.remove_dead_runs_locks():
            print(line, file=sys.stderr)
        LOCKS_BEFORE = run_locks.lock_files()
        check_environment(CAMPAIGN)
        for name, campaign in CAMPAIGNS.items():
            check_campaign_matches(campaign, f"{RESULTS_DIR}/{name}")
        check_writable(RESULTS_DIR)
except (ConfigError, StorageError) as error:
    sys.exit(one_line(f"hpsrl: {error}"))

# The folder of the campaign a job belongs to, as a path pattern of the rules.
RESULTS = f"{RESULTS_DIR}/{{campaign}}"


wildcard_constraints:
    campaign="|".join(re.escape(name) for name in CAMPAIGNS),
    batch=naming.BATCH_PATTERN,
    gen=naming.NUMBER_PATTERN,
    first=naming.NUMBER_PATTERN,
    last=naming.NUMBER_PATTERN,


def campaign_of(wildcards):
    return CAMPAIGNS[wildcards.campaign]


def config_json(wildcards):
    return json.dumps(campaign_of(wildcards))


def generation_file(campaign, gen):
    return f"{RESULTS_DIR}/{campaign}/{record_path(batch_name(gen))}"


def generation_files(campaign):
    generations = CAMPAIGNS[campaign]["budget"]["generations"]
    return [generation_file(campaign, g) for g in range(generations)]


def retest_files(campaign):
    """The re-test's generation file, where the campaign has a re-test."""
    if CAMPAIGNS[campaign]["retest"]["seeds"] == 0:
        return []
    return [f"{RESULTS_DIR}/{campaign}/retest.h5"]


def batch_size(wildcards):
    """Individuals in a batch: the population (its first rung's, and each later rung's, with
    successive halving: hpsrl.campaign.halving), or the one re-tested best
    individual."""
    if wildcards.batch == "retest":
        return 1
    return planned_size(campaign_of(wildcards), wildcards.batch)


def combines_rungs(wildcards):
    """Whether a generation's record is made from its rungs' records (search.fidelity), not
    from a batch of its own."""
    rung = rung_of(wildcards.batch)
    return (
        rung is None
        and wildcards.batch != "retest"
        and rungs(campaign_of(wildcards)) > 1
    )


def batch_population(wildcards):
    """The population file a record collects, where it collects a batch."""
    if combines_rungs(wildcards):
        return []
    return [f"{RESULTS_DIR}/{wildcards.campaign}/{wildcards.batch}/population.h5"]


def rung_records(wildcards):
    """The records of a generation's rungs, where its record combines them."""
    if not combines_rungs(wildcards):
        return []
    generation = batch_generation(wildcards.batch)
    return [
        f"{RESULTS_DIR}/{wildcards.campaign}/{record_path(rung_batch(generation, r))}"
        for r in range(rungs(campaign_of(wildcards)))
    ]


def collect_sources(wildcards):
    """hpsrl collect's arguments naming what it collects: a batch's population, or rungs."""
    records = rung_records(wildcards)
    if records:
        return f"--rungs {' '.join(records)}"
    return f"--population {batch_population(wildcards)[0]}"


def previous_rung(wildcards):
    """The record of the rung before a rung's population (wildcards gen and rung), which
    promotes into it."""
    previous = rung_batch(int(wildcards.gen), int(wildcards.rung) - 1)
    return f"{RESULTS_DIR}/{wildcards.campaign}/{record_path(previous)}"


def seeds_of(wildcards):
    campaign = campaign_of(wildcards)
    if wildcards.batch == "retest":
        return campaign["retest"]["seeds"]
    return campaign["training"]["seeds"]


def training_jobs(wildcards):
    """The manifests of a batch's training jobs, in population order: indFFF-LLL.txt for the job
    that trains individuals FFF to LLL (training.individuals_per_job of them; 1 for the re-test).
    Named by their individuals, so that changing individuals_per_job on a running campaign makes
    new jobs (which keep the results already trained) instead of reusing ones that mean others.
    """
    if combines_rungs(wildcards):
        return []
    n = batch_size(wildcards)
    k = (
        1
        if wildcards.batch == "retest"
        else individuals_per_job(campaign_of(wildcards), n)
    )
    folder = f"{RESULTS_DIR}/{wildcards.campaign}"
    return [
        f"{folder}/{manifest_path(wildcards.batch, first, min(first + k, n) - 1)}"
        for first in range(0, n, k)
    ]


def job_individuals(wildcards):
    return list(range(int(wildcards.first), int(wildcards.last) + 1))


def result_files(campaign, batch, individuals):
    return [f"{RESULTS_DIR}/{campaign}/{result_path(batch, i)}" for i in individuals]


def job_results(wildcards):
    """The result file of each individual a training job trains (not its outputs: see train.smk)."""
    return result_files(wildcards.campaign, wildcards.batch, job_individuals(wildcards))


def same_training_jobs(wildcards):
    """For a generation-0 job of a compared campaign whose generation 0 another campaign trains
    (see hpsrl.campaign.config.shared_first_generations), that campaign's job of the same
    individuals.
    """
    twin = FIRST_GENERATION_FROM.get(wildcards.campaign)
    if twin is None or wildcards.batch != batch_name(0):
        return []
    first, last = int(wildcards.first), int(wildcards.last)
    return [f"{RESULTS_DIR}/{twin}/{manifest_path(batch_name(0), first, last)}"]


def same_training_option(wildcards):
    """hpsrl train's option naming the result files to copy (see same_training_jobs), or ""."""
    if not same_training_jobs(wildcards):
        return ""
    twin = FIRST_GENERATION_FROM[wildcards.campaign]
    files = result_files(twin, batch_name(0), job_individuals(wildcards))
    return " --same-training-as " + " ".join(files)


def pooled_generation(wildcards):
    """The generation record a generation's record pools its evidence with (search.evidence:
    pooled): that of the previous generation, from generation 1 on; none for generation 0, the
    re-test and the records of rungs."""
    generation = batch_generation(wildcards.batch)
    if (
        not generation
        or rung_of(wildcards.batch) is not None
        or not pools_evidence(campaign_of(wildcards))
    ):
        return []
    return [generation_file(wildcards.campaign, generation - 1)]


def previous_option(wildcards):
    """hpsrl collect's option naming the record of pooled_generation, or ""."""
    return "".join(f" --previous {path}" for path in pooled_generation(wildcards))


def search_history(wildcards):
    """The generation files that proposing generation gen reads: every earlier one where the
    search strategy refits a model on them all (bo), else the previous one."""
    gen = batch_generation(wildcards.batch)
    first = 0 if reads_whole_history(campaign_of(wildcards)) else gen - 1
    return [generation_file(wildcards.campaign, g) for g in range(first, gen)]


def best_candidate_files(wildcards):
    """The generation files the best individual is chosen from (the final one for ga, all for
    random and bo: see hpsrl.search.evolve.best_candidates)."""
    return best_candidates(campaign_of(wildcards), generation_files(wildcards.campaign))


def summarised_files(wildcards):
    """What the summaries of a campaign read: its generations and its re-test."""
    return generation_files(wildcards.campaign) + retest_files(wildcards.campaign)


def training_ranks(wildcards):
    """The job's threads: one MPI rank, and so one core, per seed it trains. The ranks take the
    job's (individual, seed) trainings in turn, so any number of them works. Run locally, a job
    asks for a rank per training of all its individuals and snakemake lowers that to --cores, so
    that `snakemake -j8` on jobs of 4 individuals x 2 seeds runs 8 ranks, not 2. On a cluster a
    job asks for one individual's seeds whatever training.individuals_per_job: batching there
    saves scheduler round trips, and a bigger allocation waits longer in the queue
    (--set-threads train_individuals=N asks for N).

    A job that hands its seeds to the warm workers (see workers.smk) only waits for them: it
    takes one core, so that snakemake runs as many such jobs as --cores and the workers always
    find the next seed queued instead of waiting for snakemake to start the next job.
    """
    seeds = seeds_of(wildcards)
    if uses_warm_workers():
        return 1
    if jobs_run_here():
        return seeds * len(job_individuals(wildcards))
    return seeds


def launched_ranks(wildcards, threads):
    """The ranks a training job launches: its threads after snakemake's --cores limit, so that
    `snakemake --cores 1` on 3-seed individuals runs 1 rank, not 3 on one core.

    A dry run of a cluster run shows the ranks its submission asks for: Snakemake limits a dry
    run's threads to its --cores (1 unless given), but not a submission's (no --cores), so the
    dry run takes the threads the rule asks for, or those --set-threads gives it."""
    if workflow.dryrun and not jobs_run_here():
        asked = workflow.resource_settings.overwrite_threads.get("train_individuals")
        if asked is None:
            return training_ranks(wildcards)
        return int(getattr(asked, "value", asked))
    return threads


def jobs_run_here():
    """Whether this run's jobs run on this machine, as its own processes: not submitted to a
    cluster, and not inside a cluster job (a Slurm job runs snakemake again, with the
    slurm-jobstep executor, in the remote execution mode).

    Decided from the executor the run was asked for (--executor, or the profile's `executor:`),
    not from workflow.local_exec alone: a dry run (-n) always has Snakemake's local "dryrun"
    executor, and so `snakemake -n --profile profiles/slurm` showed local jobs (one task each,
    handed to warm workers) for training jobs that Slurm runs with a task per seed
    (hpsrl/cluster/executor.py). Where the command line cannot say (snakemake through its Python
    API, a relative --profile after --directory), a dry run shows the local plan, as
    before."""
    if workflow.remote_exec:
        return False
    if workflow.dryrun:
        asked = this_runs_executor()
        return asked is None or runs_locally(asked)
    return workflow.local_exec


def check_slurm_tasks():
    """Stop a Slurm run whose training jobs would be MPI jobs of one task, before any job: a job
    asks Slurm for a task per seed, and the Slurm executor plugin refuses an MPI job of one
    task ("For MPI jobs, 'tasks' must be greater than 1"), which a one-seed re-test would meet
    only at the campaign's end. --set-threads train_individuals=N sets the tasks instead.
    """
    if this_runs_executor() != "slurm":
        return
    if "train_individuals" in workflow.resource_settings.overwrite_threads:
        return
    for campaign in CAMPAIGNS.values():
        for key, fix in (
            ("training", "2 or more"),
            ("retest", "2 or more, or 0 for no re-test"),
        ):
            if campaign[key]["seeds"] == 1:
                raise ConfigError(
                    f"{key}.seeds is 1, and on Slurm a training job runs an MPI task per seed:"
                    " the Slurm executor plugin refuses an MPI job of one task. Set"
                    f" {key}.seeds to {fix} (or run this campaign locally)"
                )


def training_runtime(wildcards):
    """Minutes for one training job: its individuals' step budget at a conservative 500 steps/s
    per rank, plus 5 minutes for start-up and evaluation. Override with
    --set-resources train_individuals:runtime=M.
    """
    steps = campaign_of(wildcards)["training"]["steps"]
    seconds = len(job_individuals(wildcards)) * steps / 500
    return 5 + math.ceil(seconds / 60)


def campaign_targets(campaign):
    folder = f"{RESULTS_DIR}/{campaign}"
    summaries = [
        f"{folder}/{name}" for name in ("status.txt", "best.yaml", "report.html")
    ]
    return generation_files(campaign) + summaries


def comparison_folder():
    return f"{RESULTS_DIR}/{CAMPAIGN['campaign']}-compare"


if workflow.is_main_process:
    try:
        check_slurm_tasks()
    except ConfigError as error:
        sys.exit(one_line(f"hpsrl: {error}"))
