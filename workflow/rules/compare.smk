# `snakemake compare`: the config's search run with each strategy of its compare section on as many
# search seeds, each as a campaign of its own (CAMPAIGN-STRATEGY-sK), then the best objective found
# against individuals trained, per strategy (mean and spread over search seeds).


rule compare_strategies:
    input:
        [
            path
            for name in COMPARED
            for path in generation_files(name) + retest_files(name)
        ],
    output:
        plot=report(
            f"{comparison_folder()}/comparison.png",
            caption="../report/comparison.rst",
            category="Comparison",
        ),
        summary=f"{comparison_folder()}/comparison.yaml",
    log:
        f"{comparison_folder()}/comparison.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        campaigns=[f"{RESULTS_DIR}/{name}" for name in COMPARED],
    shell:
        "hpsrl compare --plot {output.plot} --summary {output.summary} {params.campaigns}"
        " > {log} 2>&1"


rule compare:
    input:
        rules.compare_strategies.output,
