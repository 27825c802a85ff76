# Generation 0: individuals sampled from the gene space.


rule init_population:
    output:
        f"{RESULTS}/gen000/population.h5",
    params:
        config=config_json(),
    conda:
        "../envs/hpsrl.yaml"
    log:
        f"{RESULTS}/logs/gen000/population.log",
    shell:
        "hpsrl init --config-json {params.config:q} --out {output} > {log} 2>&1"
