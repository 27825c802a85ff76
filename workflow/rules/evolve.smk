# Generation g's results are collected into genGGG.h5 (pooling each configuration's seeds with what
# generation g-1 knew of it: search.evidence); the search strategy (search.strategy) writes
# generation g+1's population from it: selection, crossover and mutation on it (ga), a fresh sample
# (random), or a batch proposed by Bayesian optimisation on it and every earlier generation (bo).


rule collect_generation:
    input:
        population=f"{RESULTS}/{{batch}}/population.h5",
        jobs=training_jobs,
        previous=pooled_generation,
    output:
        f"{RESULTS}/{{batch}}.h5",
    log:
        f"{RESULTS}/logs/{{batch}}/collect.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        previous=previous_option,
    shell:
        "hpsrl collect --population {input.population} --out {output}{params.previous}"
        " {input.jobs} > {log} 2>&1"


rule evolve_population:
    input:
        search_history,
    output:
        f"{RESULTS}/gen{{gen}}/population.h5",
    log:
        f"{RESULTS}/logs/gen{{gen}}/population.log",
    wildcard_constraints:
        gen=r"(?!000)\d{3}",
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl evolve --out {output} {input} > {log} 2>&1"
