# Evaluation stage: metrics per architecture over folds, the cross-validation tables, the choice
# of the final architecture (cross-validation only) and the final model's test metrics.


rule evaluate_arch:
    input:
        run_config=f"{R}/cv/{{arch}}/run_config.yaml",
        predictions=expand(f"{R}/cv/{{{{arch}}}}/fold{{fold}}/predictions.csv", fold=FOLDS),
        benchmarks=expand(f"{R}/benchmarks/train/{{{{arch}}}}/fold{{fold}}.tsv", fold=FOLDS),
    output:
        f"{R}/cv/{{arch}}/metrics.json",
    log:
        f"{R}/logs/evaluate/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{arch}}.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python3 -m ferstudy evaluate-arch --run-config {input.run_config:q} --predictions {input.predictions:q}"
        " --benchmarks {input.benchmarks:q} --out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        h5=f"{R}/data/dataset.h5",
        metrics=expand(f"{R}/cv/{{arch}}/metrics.json", arch=ARCHS),
        recheck=recheck_inputs,  # recheck.smk: the plan and the longer runs (none when study.recheck is off)
    output:
        summary=report(
            f"{R}/tables/cv_summary.csv",
            caption="../report/cv_summary.rst",
            category="3 Cross-validation",
            subcategory="CSV downloads",
            labels={"table": "cross-validation summary (CSV)"},
        ),
        ablation=report(
            f"{R}/tables/ablation.csv",
            caption="../report/ablation.rst",
            category="3 Cross-validation",
            subcategory="CSV downloads",
            labels={"table": "each variant against the baseline (CSV)"},
        ),
        cost=report(
            f"{R}/tables/cost.csv",
            caption="../report/cost.rst",
            category="3 Cross-validation",
            subcategory="CSV downloads",
            labels={"table": "cost per architecture (CSV)"},
        ),
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        baseline=STUDY["study"]["baseline"],
        alpha=STUDY["study"].get("alpha", 0.05),
    shell:
        "python3 -m ferstudy aggregate --h5 {input.h5:q} --metrics {input.metrics:q} --baseline {params.baseline:q}"
        " --alpha {params.alpha:q} --summary {output.summary:q} --ablation {output.ablation:q} --cost {output.cost:q}"
        " --recheck {input.recheck:q} > {log:q} 2>&1"


# A checkpoint: the DAG is re-evaluated after it, so train_final (keyed on the chosen
# architecture, common.smk final_architecture) reruns only when the choice or its settings change.
checkpoint select:
    input:
        summary=f"{R}/tables/cv_summary.csv",
        final_config=f"{R}/final/final_config.yaml",
    output:
        f"{R}/final/selection.json",
    log:
        f"{R}/logs/select.log",
    benchmark:
        f"{R}/benchmarks/select.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        metric=STUDY["study"].get("select_metric", "accuracy"),
    shell:
        "python3 -m ferstudy select --summary {input.summary:q} --metric {params.metric:q}"
        " --final-config {input.final_config:q} --out {output:q} > {log:q} 2>&1"


rule predict_extra:
    input:
        model=f"{R}/final/model.pt",
        csv=lambda w: EXTRA_TEST_SETS[w.name],
    output:
        f"{R}/final/extra/{{name}}/predictions.csv",
    log:
        f"{R}/logs/predict_extra/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/predict_extra/{{name}}.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        # `ferstudy predict` runs on the CPU: no GPU asked for
        mem_mb=predict_extra_mem_mb,
        runtime=predict_extra_runtime,
    shell:
        "python3 -m ferstudy predict --model {input.model:q} --csv {input.csv:q} --out {output:q} --threads {threads}"
        " > {log:q} 2>&1"


rule evaluate_final:
    input:
        public=f"{R}/final/predictions_public.csv",
        private=f"{R}/final/predictions_private.csv",
        extra=expand(f"{R}/final/extra/{{name}}/predictions.csv", name=EXTRA_TEST_SETS),
    output:
        f"{R}/final/metrics.json",
    log:
        f"{R}/logs/evaluate_final.log",
    benchmark:
        f"{R}/benchmarks/evaluate_final.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        extra=[f"{name}={R}/final/extra/{name}/predictions.csv" for name in EXTRA_TEST_SETS],
    shell:
        "python3 -m ferstudy evaluate-final --public {input.public:q} --private {input.private:q} --extra {params.extra:q}"
        " --out {output:q} > {log:q} 2>&1"


# FER+ as a second opinion (data.ferplus set): the final model's test predictions against the
# crowd's majority label, aligned by source row. Scoring only: nothing upstream reads it.
if FERPLUS:

    rule ferplus_scores:
        input:
            h5=f"{R}/data/dataset.h5",
            public=f"{R}/final/predictions_public.csv",
            private=f"{R}/final/predictions_private.csv",
            ferplus=FERPLUS,
        output:
            f"{R}/final/ferplus.json",
        log:
            f"{R}/logs/ferplus_scores.log",
        benchmark:
            f"{R}/benchmarks/ferplus_scores.tsv"
        conda:
            "../../envs/ferstudy.yaml"
        threads: 1
        resources:
            mem_mb=1500,
            runtime=10,
        shell:
            "python3 -m ferstudy ferplus --h5 {input.h5:q} --public {input.public:q} --private {input.private:q}"
            " --ferplus {input.ferplus:q} --out {output:q} > {log:q} 2>&1"

    localrules:
        ferplus_scores,


# Light jobs run in the Snakemake process (also under a cluster executor), not as cluster jobs.
localrules:
    evaluate_arch,
    aggregate,
    select,
    evaluate_final,
