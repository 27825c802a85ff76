# One job per individual: its training seeds spread over MPI ranks, rank 0 writes the result.
# The launcher is a resource, so profiles choose it (mpiexec here, srun on Slurm clusters).


rule train_individual:
    input:
        f"{RESULTS}/{{batch}}/population.h5",
    output:
        f"{RESULTS}/{{batch}}/ind{{ind}}.h5",
    log:
        f"{RESULTS}/logs/{{batch}}/ind{{ind}}.log",
    conda:
        "../envs/hpsrl.yaml"
    threads: training_ranks
    resources:
        tasks=training_ranks,
        runtime=training_runtime,
        mpi="mpiexec",
    shell:
        "{resources.mpi} -n {resources.tasks} python -m mpi4py -m hpsrl train"
        " --population {input} --individual {wildcards.ind} --out {output} > {log} 2>&1"
