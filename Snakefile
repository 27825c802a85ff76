# hpsrl: a genetic-algorithm search over deep-RL hyperparameters, one Snakemake job per individual.
#
#   gen000/population.h5 -> gen000/ind*.h5 (train, MPI) -> gen000.h5 (collect) -> gen001/population.h5
#   (evolve) -> ... -> retest/ (best individual on fresh seeds) -> status.txt, best.yaml (report)
from snakemake.utils import min_version

from hpsrl.campaign.config import readable_config_file

min_version("9.0")


# The description atop `snakemake --report report.html`.
report: "workflow/report/workflow.rst"


# The default campaign, unless a --configfile names another one (which then replaces it whole:
# merging two campaigns' genes would silently search something nobody wrote).
if not workflow.overwrite_configfiles:

    configfile: readable_config_file("config/config.yaml")


# Seconds of bookkeeping each: on a cluster they run where snakemake runs, not as Slurm jobs.
localrules:
    init_population,
    collect_generation,
    evolve_population,
    promote_rung,
    plan_retest,
    report,
    html_report,
    compare_strategies,
    all,
    compare,


include: "workflow/rules/common.smk"
include: "workflow/rules/workers.smk"
include: "workflow/rules/slurm.smk"
include: "workflow/rules/hooks.smk"
include: "workflow/rules/init.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evolve.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/compare.smk"


rule all:
    default_target: True
    input:
        campaign_targets(CAMPAIGN["campaign"]),
