# What happens when a run starts and ends (snakemake runs one handler of each kind, the last one
# read, so they are all here): the warm workers start and stop (workers.smk); the run records the
# locks it took, so that a rerun after a hard kill removes them (hpsrl/campaign/locks.py; common.smk
# does that when it reads the workflow); and a run that fails or is interrupted (Ctrl-C) on a Slurm
# cluster cancels every job it submitted that is still pending or running (slurm.smk).


onstart:
    run_locks.record_run(LOCKS_BEFORE)
    start_warm_workers()


onsuccess:
    warm_workers.stop_pool(POOL.get("process"))
    run_locks.forget_run()


onerror:
    warm_workers.stop_pool(POOL.get("process"))
    cancel_slurm_jobs(log)
    run_locks.forget_run()
