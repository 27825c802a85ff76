# Generation g's results are collected into genGGG.h5; selection, crossover and mutation on it
# write generation g+1's population.


rule collect_generation:
    input:
        population=f"{RESULTS}/{{batch}}/population.h5",
        jobs=training_jobs,
    output:
        f"{RESULTS}/{{batch}}.h5",
    log:
        f"{RESULTS}/logs/{{batch}}/collect.log",
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl collect --population {input.population} --out {output} {input.jobs}"
        " > {log} 2>&1"


rule evolve_population:
    input:
        previous_generation,
    output:
        f"{RESULTS}/gen{{gen}}/population.h5",
    log:
        f"{RESULTS}/logs/gen{{gen}}/population.log",
    wildcard_constraints:
        gen=r"(?!000)\d{3}",
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl evolve --generation {input} --out {output} > {log} 2>&1"
