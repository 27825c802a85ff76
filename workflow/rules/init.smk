# Generation 0: individuals sampled from the gene space (its first rung, with successive halving).


rule init_population:
    output:
        f"{RESULTS}/{{batch}}/population.h5",
    log:
        f"{RESULTS}/logs/{{batch}}/population.log",
    wildcard_constraints:
        batch=naming.FIRST_GENERATION_PATTERN,
    conda:
        "../envs/hpsrl.yaml"
    params:
        config=config_json,
    shell:
        "hpsrl populate --config-json {params.config:q} --out {output} > {log} 2>&1"
