# The measured recheck (ferstudy/recheck.py): after cross-validation, the checkpoint recheck_plan
# picks the pairs whose verdict is most at risk (study.recheck: auto | off | [variants];
# study.recheck_max caps them, the riskiest first). Each picked variant and the baseline (one run
# shared by all pairs) train again at RECHECK_FACTOR x the epochs on fold RECHECK_FOLD, the same
# faces, seed and precision as that fold's study run; aggregate (evaluate.smk) labels each rechecked
# verdict from what that run measured. Which pairs depends on the CV results, hence the checkpoint:
# Snakemake re-evaluates the DAG once the plan exists, and a dry run shows the recheck jobs only then.
from ferstudy.recheck import RECHECK_FACTOR, RECHECK_FOLD, workflow_inputs

RECHECK = STUDY["study"].get("recheck", "auto")  # ferstudy.config: `off` (also YAML's false) or checked names
RECHECK_PLAN = f"{R}/recheck/plan.json"
# For aggregate (evaluate.smk): the plan, then the predictions of every run it names; nothing when off.
recheck_inputs = lambda wildcards: workflow_inputs(checkpoints, RECHECK, R)


checkpoint recheck_plan:
    input:
        h5=f"{R}/data/dataset.h5",
        metrics=expand(f"{R}/cv/{{arch}}/metrics.json", arch=ARCHS),
        plan=PLAN_INPUT,  # study.time_budget: the planned recheck_max (plan.smk)
    output:
        RECHECK_PLAN,
    log:
        f"{R}/logs/recheck_plan.log",
    benchmark:
        f"{R}/benchmarks/recheck_plan.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        baseline=STUDY["study"]["baseline"],
        alpha=STUDY["study"].get("alpha", 0.05),
        recheck=RECHECK,
        cap=STUDY["study"].get("recheck_max"),
    shell:
        "python3 -m ferstudy recheck-plan --h5 {input.h5:q} --metrics {input.metrics:q} --baseline {params.baseline:q}"
        " --alpha {params.alpha:q} --recheck {params.recheck:q} --max {params.cap:q} --plan {input.plan:q}"
        " --out {output:q} > {log:q} 2>&1"


rule recheck_config:
    input:
        run_config=f"{R}/cv/{{arch}}/run_config.yaml",
        fold_config=f"{R}/cv/{{arch}}/fold{RECHECK_FOLD}/config.yaml",
    output:
        f"{R}/recheck/x{RECHECK_FACTOR:g}/{{arch}}/run_config.yaml",
    log:
        f"{R}/logs/recheck_config/{{arch}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        factor=RECHECK_FACTOR,
    run:
        longer = longer_recheck_config(input.run_config, input.fold_config, params.factor)
        write_yaml_logged(output[0], longer, log[0], spec_id(longer))


rule recheck:
    input:
        h5=f"{R}/data/dataset.h5",
        run_config=f"{R}/recheck/x{RECHECK_FACTOR:g}/{{arch}}/run_config.yaml",
    output:
        model=f"{R}/recheck/x{RECHECK_FACTOR:g}/{{arch}}/fold{RECHECK_FOLD}/model.pt",
        history=f"{R}/recheck/x{RECHECK_FACTOR:g}/{{arch}}/fold{RECHECK_FOLD}/history.csv",
        predictions=f"{R}/recheck/x{RECHECK_FACTOR:g}/{{arch}}/fold{RECHECK_FOLD}/predictions.csv",
        config=f"{R}/recheck/x{RECHECK_FACTOR:g}/{{arch}}/fold{RECHECK_FOLD}/config.yaml",
    log:
        f"{R}/logs/recheck/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/recheck/{{arch}}.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=train_fold_mem_mb,
        runtime=lambda w, threads, attempt: math.ceil(RECHECK_FACTOR * train_fold_runtime(w, threads, attempt)),
        gpu=train_fold_gpu,
    params:
        fold=RECHECK_FOLD,
        checkpoint=f"{R}/checkpoints/recheck/x{RECHECK_FACTOR:g}/{{arch}}/fold{RECHECK_FOLD}.pt",
        out_dir=lambda w, output: os.path.dirname(output.model),
    shell:
        "python3 -m ferstudy train --h5 {input.h5:q} --run-config {input.run_config:q} --fold {params.fold:q}"
        " --out-dir {params.out_dir:q} --checkpoint {params.checkpoint:q} --threads {threads} > {log:q} 2>&1"


localrules:
    recheck_plan,
    recheck_config,
