# Report: results/report/report.md (the main report, 1,200-1,500 words) and results/report/appendix.md
# (every verdict's evidence), rendered from the tables, the cross-validation and final metrics, the
# final model and the figures by `ferstudy report` (ferstudy/report/) with the Jinja2 templates
# report/report.md.j2 and report/appendix.md.j2. The templates are inputs, so editing one reruns
# only this rule (and the pages made from its outputs).
# The inputs are every file the report reads (ferstudy/report/inputs.py, the list `ferstudy report`
# reads by), so Snakemake reruns the report exactly when one of them changes; results/final/ferplus.json
# also when it exists without data.ferplus (scored by hand with `ferstudy ferplus`: ferplus_scored()).
from ferstudy.report.inputs import report_inputs


rule report:
    input:
        **report_inputs(R, ARCHS, len(FOLDS), ferplus=ferplus_scored(), plan=bool(TIME_BUDGET_S)),
        template=os.path.join(REPO, "report", "report.md.j2"),
        appendix_template=os.path.join(REPO, "report", "appendix.md.j2"),
    output:
        report=report(
            f"{R}/report/report.md",
            caption="../report/report_md.rst",
            category="1 Report",
            subcategory="Study report",
            labels={"document": "study report (markdown, download)"},
        ),
        appendix=report(
            f"{R}/report/appendix.md",
            caption="../report/appendix_md.rst",
            category="1 Report",
            subcategory="Study report",
            labels={"document": "appendix (markdown, download)"},
        ),
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report/report.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        results=lambda w, input: os.path.dirname(os.path.dirname(input.h5)),
        preset=STUDY["preset"],
    shell:
        "python3 -m ferstudy report --results {params.results:q} --out {output.report:q}"
        " --appendix-out {output.appendix:q} --template {input.template:q}"
        " --appendix-template {input.appendix_template:q} --preset {params.preset:q} --threads {threads} > {log:q} 2>&1"


localrules:
    report,
