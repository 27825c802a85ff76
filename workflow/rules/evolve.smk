# Generation g's results are collected into genGGG.h5 (pooling each configuration's seeds with what
# generation g-1 knew of it: search.evidence), from its batch, or from the records of its
# successive-halving rungs genGGG/rungR.h5, each of which promotes its best into the next rung
# (search.fidelity); the search strategy (search.strategy) writes
# generation g+1's population from it: selection, crossover and mutation on it (ga), a fresh sample
# (random), or a batch proposed by Bayesian optimisation on it and every earlier generation (bo).


rule collect_generation:
    input:
        population=batch_population,
        jobs=training_jobs,
        rungs=rung_records,
        previous=pooled_generation,
    output:
        f"{RESULTS}/{{batch}}.h5",
    log:
        f"{RESULTS}/logs/{{batch}}/collect.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        sources=collect_sources,
        previous=previous_option,
    shell:
        "hpsrl collect {params.sources} --out {output}{params.previous}"
        " {input.jobs} > {log} 2>&1"


rule promote_rung:
    input:
        previous_rung,
    output:
        f"{RESULTS}/gen{{gen}}/rung{{rung}}/population.h5",
    log:
        f"{RESULTS}/logs/gen{{gen}}/rung{{rung}}/population.log",
    wildcard_constraints:
        rung=r"[1-9]",
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl promote --out {output} {input} > {log} 2>&1"


rule evolve_population:
    input:
        search_history,
    output:
        f"{RESULTS}/{{batch}}/population.h5",
    log:
        f"{RESULTS}/logs/{{batch}}/population.log",
    wildcard_constraints:
        batch=naming.LATER_GENERATION_PATTERN,
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl evolve --out {output} {input} > {log} 2>&1"
