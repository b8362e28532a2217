# Report: results/report/report.md, rendered from the tables, the cross-validation and final
# metrics, the final model and the figures by `ferstudy report` (ferstudy/report.py) with the
# Jinja2 template report/report.md.j2. The template is an input, so editing it reruns only this rule.

rule report:
    input:
        h5=f"{R}/data/dataset.h5",
        faces=f"{R}/data/faces.png",
        summary=f"{R}/tables/cv_summary.csv",
        ablation=f"{R}/tables/ablation.csv",
        cost=f"{R}/tables/cost.csv",
        metrics=expand(f"{R}/cv/{{arch}}/metrics.json", arch=ARCHS),
        run_configs=expand(f"{R}/cv/{{arch}}/run_config.yaml", arch=ARCHS),
        selection=f"{R}/final/selection.json",
        final_metrics=f"{R}/final/metrics.json",
        ferplus=ferplus_targets(),
        final_config=f"{R}/final/config.yaml",
        history=f"{R}/final/history.csv",
        model=f"{R}/final/model.pt",
        figures=figure_targets(),
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
