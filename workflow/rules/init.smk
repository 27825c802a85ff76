# Generation 0: individuals sampled from the gene space.


rule init_population:
    output:
        f"{RESULTS}/gen000/population.h5",
    log:
        f"{RESULTS}/logs/gen000/population.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        config=config_json,
    shell:
        "hpsrl init --config-json {params.config:q} --out {output} > {log} 2>&1"
