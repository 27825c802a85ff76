# What happens when a run starts and ends (snakemake runs one handler of each kind): the warm
# workers start and stop (workers.smk), and the run records the locks it took, so that a rerun
# after a hard kill removes them (hpsrl/locks.py; common.smk does that when it reads the workflow).


onstart:
    run_locks.record_run(LOCKS_BEFORE)
    start_warm_workers()


onsuccess:
    warm_workers.stop_pool(POOL.get("process"))
    run_locks.forget_run()


onerror:
    warm_workers.stop_pool(POOL.get("process"))
    run_locks.forget_run()
