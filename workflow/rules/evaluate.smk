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
    shell:
        "{FERSTUDY} evaluate-arch --run-config {input.run_config} --predictions {input.predictions}"
        " --benchmarks {input.benchmarks} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        h5=f"{R}/data/dataset.h5",
        metrics=expand(f"{R}/cv/{{arch}}/metrics.json", arch=ARCHS),
    output:
        summary=report(f"{R}/tables/cv_summary.csv", category="Cross-validation", caption="../report/cv_summary.rst"),
        ablation=report(f"{R}/tables/ablation.csv", category="Cross-validation", caption="../report/ablation.rst"),
        cost=report(f"{R}/tables/cost.csv", category="Cross-validation", caption="../report/cost.rst"),
    params:
        baseline=STUDY["study"]["baseline"],
        alpha=STUDY["study"].get("alpha", 0.05),
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "{FERSTUDY} aggregate --h5 {input.h5} --metrics {input.metrics} --baseline {params.baseline}"
        " --alpha {params.alpha} --summary {output.summary} --ablation {output.ablation} --cost {output.cost}"
        " > {log} 2>&1"


rule select:
    input:
        summary=f"{R}/tables/cv_summary.csv",
        final_config=f"{R}/final/final_config.yaml",
    output:
        f"{R}/final/selection.json",
    params:
        metric=STUDY["study"].get("select_metric", "accuracy"),
    log:
        f"{R}/logs/select.log",
    shell:
        "{FERSTUDY} select --summary {input.summary} --metric {params.metric}"
        " --final-config {input.final_config} --out {output} > {log} 2>&1"


rule evaluate_final:
    input:
        public=f"{R}/final/predictions_public.csv",
        private=f"{R}/final/predictions_private.csv",
    output:
        f"{R}/final/metrics.json",
    log:
        f"{R}/logs/evaluate_final.log",
    shell:
        "{FERSTUDY} evaluate-final --public {input.public} --private {input.private} --out {output} > {log} 2>&1"
