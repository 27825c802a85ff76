# Training jobs: each trains one or more individuals of a batch (training.individuals_per_job), one
# after the other, with each individual's seeds spread over the job's MPI ranks. The launcher is a
# resource, so profiles choose it (mpiexec here, srun on Slurm clusters).
#
# A job writes each individual's result file (indIII.h5) as soon as it is trained and its manifest
# (indFFF-LLL.txt, the rule's output) at the end. Result files are not outputs on purpose: snakemake
# deletes the outputs of a job that was interrupted, and so would throw away the individuals a
# killed or timed-out job had finished; the rerun job keeps them and trains only the rest.
#
# Under `snakemake compare`, the strategies on one search seed share generation 0: the first
# strategy's jobs train it, the others' wait for them and copy what is the same training.


rule train_individuals:
    input:
        population=f"{RESULTS}/{{batch}}/population.h5",
        same_training=same_training_jobs,
    output:
        f"{RESULTS}/{{batch}}/ind{{first}}-{{last}}.txt",
    log:
        f"{RESULTS}/logs/{{batch}}/ind{{first}}-{{last}}.log",
    conda:
        "../envs/hpsrl.yaml"
    threads: training_ranks
    resources:
        tasks=launched_ranks,
        runtime=training_runtime,
        mpi="mpiexec",
    params:
        individuals=job_individuals,
        results=job_results,
        same_training=same_training_option,
        warm_workers=warm_workers_prefix,
    shell:
        "{params.warm_workers}{resources.mpi} -n {resources.tasks} python -m mpi4py -m hpsrl train"
        " --population {input.population} --individual {params.individuals}"
        " --out {params.results} --manifest {output}{params.same_training} > {log} 2>&1"
