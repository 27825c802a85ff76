# On a Slurm cluster: when a run fails or is interrupted (Ctrl-C), every Slurm job of the run is
# cancelled, also those the executor plugin missed (hpsrl/cluster/slurm.py says which it can miss).
# The onerror hook (hooks.smk) calls cancel_slurm_jobs after the plugin has cancelled the jobs it
# knew of and submitted those it had queued.
import os

from hpsrl.cluster import slurm as slurm_jobs


def submits_to_slurm():
    """Whether this snakemake process submits jobs through the Slurm executor plugin (not
    one inside a Slurm job: that has the slurm-jobstep executor, and no hooks)."""
    plugin = workflow.executor_plugin
    return plugin is not None and plugin.name == "slurm"


def cancel_slurm_jobs(log):
    """Cancel every job of this run that is still pending or running: `scancel --name RUN_ID`,
    the run ID from the run's log files `log` (the hook's argument: a list in snakemake 9, a
    path in earlier ones) and from the plugin's executor where it has one."""
    if not submits_to_slurm():
        return
    logs = [log] if isinstance(log, (str, os.PathLike)) else list(log or [])
    ids = slurm_jobs.run_ids(logs)
    executor = getattr(workflow.scheduler, "_executor", None)
    run_uuid = getattr(executor, "run_uuid", None)
    if isinstance(run_uuid, str):
        ids.append(run_uuid)
    slurm_jobs.cancel_runs(ids)
