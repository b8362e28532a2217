# Report: results/report/report.md, rendered from the tables, the cross-validation and final
# metrics, the final model and the figures by `ferstudy report` (ferstudy/report/) with the
# Jinja2 template report/report.md.j2. The template is an input, so editing it reruns only this rule.
# The inputs are every file the report reads (ferstudy/report/inputs.py, the list `ferstudy report`
# reads by), so Snakemake reruns the report exactly when one of them changes.
from ferstudy.report.inputs import report_inputs


rule report:
    input:
        **report_inputs(R, ARCHS, len(FOLDS), ferplus=bool(FERPLUS), plan=bool(TIME_BUDGET_S)),
        template=os.path.join(REPO, "report", "report.md.j2"),
    output:
        report(f"{R}/report/report.md", caption="../report/report_md.rst", category="1 Report",
               subcategory="Study report", labels={"document": "study report (markdown, download)"}),
    params:
        results=lambda w, input: os.path.dirname(os.path.dirname(input.h5)),
        preset=STUDY["preset"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report/report.tsv",
    conda:
        "../../envs/ferstudy.yaml"
    shell:
        "python3 -m ferstudy report --results {params.results:q} --out {output:q} --template {input.template:q}"
        " --preset {params.preset:q} --threads {threads} > {log:q} 2>&1"


localrules:
    report,
