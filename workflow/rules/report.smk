# The end of a campaign: the best individual (see best_candidate_files) trained again on fresh
# seeds, and the summaries people read (the same as `hpsrl status`, `hpsrl best` and
# `hpsrl report`). Outputs flagged report(...) also go into `snakemake --report report.html`.


rule plan_retest:
    input:
        best_candidate_files,
    output:
        f"{RESULTS}/retest/population.h5",
    log:
        f"{RESULTS}/logs/retest/population.log",
    conda:
        "../envs/hpsrl.yaml"
    shell:
        "hpsrl retest --out {output} {input} > {log} 2>&1"


rule report:
    input:
        summarised_files,
    output:
        status=report(
            f"{RESULTS}/status.txt",
            caption="../report/status.rst",
            category="Campaign",
        ),
        best=report(
            f"{RESULTS}/best.yaml", caption="../report/best.rst", category="Campaign"
        ),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        campaign=RESULTS,
    shell:
        "(hpsrl status {params.campaign} > {output.status}"
        " && hpsrl best {params.campaign} > {output.best}) 2> {log}"


rule html_report:
    input:
        summarised_files,
    output:
        report(
            f"{RESULTS}/report.html",
            caption="../report/campaign_report.rst",
            category="Campaign",
        ),
    log:
        f"{RESULTS}/logs/report_html.log",
    conda:
        "../envs/hpsrl.yaml"
    params:
        campaign=RESULTS,
    shell:
        "hpsrl report {params.campaign} --out {output} > {log} 2>&1"
