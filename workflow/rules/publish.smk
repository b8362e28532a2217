# For readers: the report, its appendix and the tables as HTML pages (shown by `snakemake --report
# report.zip`), and the hand-in zip (`snakemake handin`: results/handin.zip, or
# results/<Surname1>_<Surname2>_<name>.zip with `handin.authors`). Logic in ferstudy/htmlreport.py
# and ferstudy/handin.py.
#
# The study report is a folder (index.html, its figures beside it) marked with `htmlindex`:
# Snakemake's report keeps a folder's files only in a zip report. A single-file report
# (`--report x.html`) would show it as a data URI, which Chromium refuses over 2 MB. The pages
# and their places in the report: HTML_REPORT, HTML_TABLES, html_targets() in common.smk.


rule report_html:
    input:
        markdown=f"{R}/report/report.md",
        appendix=f"{R}/report/appendix.md",
        figures=figure_targets(),
        faces=f"{R}/data/faces.png",
        final_metrics=f"{R}/final/metrics.json",
        selection=f"{R}/final/selection.json",
        tables=[csv for csv, *_ in HTML_TABLES.values()],
    output:
        **{
            name: report(
                html_page(name),
                caption=f"../report/{caption}",
                category=category,
                subcategory=sub,
                labels={"table": label},
            )
            for name, (_, caption, category, sub, label) in HTML_TABLES.items()
        },
        html=report(
            directory(HTML_REPORT),
            htmlindex="index.html",
            caption="../report/report_html.rst",
            category="1 Report",
            subcategory="Study report",
            labels={"document": "study report (HTML)"},
        ),
        final_metrics=report(
            html_page("final_metrics"),
            caption="../report/final_metrics.rst",
            category="4 Final model",
            subcategory="Test metrics",
            labels={"table": "PublicTest, PrivateTest and extra test sets"},
        ),
    log:
        f"{R}/logs/report_html.log",
    benchmark:
        f"{R}/benchmarks/report/report_html.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        tables=lambda w, input, output: [f"{csv}={getattr(output, name)}" for name, (csv, *_) in HTML_TABLES.items()],
        final_metrics=lambda w, input, output: f"{input.final_metrics}={output.final_metrics}",
    shell:
        "python3 -m ferstudy report-html --markdown {input.markdown:q} --page {input.appendix:q} --out-dir {output.html:q}"
        " --table {params.tables:q} --final-metrics {params.final_metrics:q} --selection {input.selection:q}"
        " > {log:q} 2>&1"


rule handin:
    input:
        readme=os.path.join(REPO, "README.md"),
        report_md=f"{R}/report/report.md",
        appendix_md=f"{R}/report/appendix.md",
        report_html=HTML_REPORT,
        figures=figure_targets(),
        faces=f"{R}/data/faces.png",
        files=[
            f"{R}/final/metrics.json",
            f"{R}/final/selection.json",
            f"{R}/final/config.yaml",
            f"{R}/tables/cv_summary.csv",
            f"{R}/tables/ablation.csv",
            f"{R}/tables/cost.csv",
            f"{R}/data/summary.csv",
            *ferplus_targets(),
        ],
    output:
        f"{R}/{handin_name()}",
    log:
        f"{R}/logs/handin.log",
    benchmark:
        f"{R}/benchmarks/report/handin.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        source=lambda w, input: os.path.dirname(input.readme),
        results=lambda w, input: os.path.dirname(os.path.dirname(input.report_md)),
        commit=code_version,
    shell:
        "python3 -m ferstudy handin --out {output:q} --source {params.source:q} --readme {input.readme:q}"
        " --report-md {input.report_md:q} --appendix-md {input.appendix_md:q} --report-html-dir {input.report_html:q}"
        " --files {input.files:q} --results {params.results:q} --log {log:q}"


localrules:
    report_html,
    handin,
