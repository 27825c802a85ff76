# The end of a campaign: the final generation's best individual trained again on fresh seeds, and
# the summaries people read (the same as `hpsrl status` and `hpsrl best`).


rule plan_retest:
    input:
        final_generation_file(),
    output:
        f"{RESULTS}/retest/population.h5",
    log:
        f"{RESULTS}/logs/retest/population.log",
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl retest --generation {input} --out {output} > {log} 2>&1"


rule report:
    input:
        generations=[generation_file(g) for g in range(GENERATIONS)],
        retest=[f"{RESULTS}/retest.h5"] if RETEST_SEEDS > 0 else [],
    output:
        status=f"{RESULTS}/status.txt",
        best=f"{RESULTS}/best.yaml",
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        campaign=campaign_dir,
    shell:
        "(hpsrl status {params.campaign} > {output.status}"
        " && hpsrl best {params.campaign} > {output.best}) 2> {log}"
