# Training stage: one job per (architecture, fold), then the final model on all of Training.
# Checkpoints live under results/checkpoints (not declared: Snakemake deletes the outputs of a
# failed job, and the checkpoint is what lets the rerun resume).


rule run_config:
    input:
        plan=PLAN_INPUT,  # study.time_budget: the planned fold budget (plan.smk)
    output:
        f"{R}/cv/{{arch}}/run_config.yaml",
    log:
        f"{R}/logs/run_config/{{arch}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        # The rerun trigger: editing one architecture reruns only its jobs. A hash of the resolved
        # spec beside its name keeps Snakemake's `reason:` lines short. (A new plan reruns them
        # as an input newer than the output.)
        spec=lambda w: spec_id(resolve_arch(STUDY, w.arch)),
    run:
        spec = resolve_arch(planned_study(input.plan), wildcards.arch)
        write_yaml_logged(output[0], spec, log[0], spec_id(spec))


rule final_config:
    output:
        f"{R}/final/final_config.yaml",
    log:
        f"{R}/logs/final_config.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        final=lambda w: spec_id(final_settings(), "final"),
    run:
        write_yaml_logged(output[0], final_settings(), log[0], params.final)


rule train_fold:
    input:
        h5=f"{R}/data/dataset.h5",
        run_config=f"{R}/cv/{{arch}}/run_config.yaml",
    output:
        model=f"{R}/cv/{{arch}}/fold{{fold}}/model.pt",
        history=f"{R}/cv/{{arch}}/fold{{fold}}/history.csv",
        predictions=f"{R}/cv/{{arch}}/fold{{fold}}/predictions.csv",
        config=f"{R}/cv/{{arch}}/fold{{fold}}/config.yaml",
    log:
        f"{R}/logs/train/{{arch}}/fold{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{arch}}/fold{{fold}}.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=train_fold_mem_mb,
        runtime=train_fold_runtime,
        gpu=train_fold_gpu,
    params:
        checkpoint=f"{R}/checkpoints/cv/{{arch}}/fold{{fold}}.pt",
        out_dir=lambda w, output: os.path.dirname(output.model),
    shell:
        "python3 -m ferstudy train --h5 {input.h5:q} --run-config {input.run_config:q} --fold {wildcards.fold:q}"
        " --out-dir {params.out_dir:q} --checkpoint {params.checkpoint:q} --threads {threads} > {log:q} 2>&1"


rule train_final:
    input:
        h5=f"{R}/data/dataset.h5",
        # only the chosen architecture's run config: a change to another one retrains nothing here
        run_config=lambda w: f"{R}/cv/{final_architecture()}/run_config.yaml",
        # with study.time_budget, the planned one (plan.smk: the plan's epochs for the chosen network)
        final_config=FINAL_PLANNED if TIME_BUDGET_S else f"{R}/final/final_config.yaml",
    output:
        model=f"{R}/final/model.pt",
        history=f"{R}/final/history.csv",
        public=f"{R}/final/predictions_public.csv",
        private=f"{R}/final/predictions_private.csv",
        config=f"{R}/final/config.yaml",
    log:
        f"{R}/logs/train_final.log",
    benchmark:
        f"{R}/benchmarks/train_final.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: train_final_threads
    resources:
        mem_mb=train_final_mem_mb,
        runtime=train_final_runtime,
        gpu=train_final_gpu,
    params:
        architecture=lambda w: final_architecture(),  # a new choice retrains (readable in `reason:`)
        checkpoint=f"{R}/checkpoints/final.pt",
        out_dir=lambda w, output: os.path.dirname(output.model),
    shell:
        "python3 -m ferstudy train-final --h5 {input.h5:q} --run-config {input.run_config:q}"
        " --final-config {input.final_config:q} --out-dir {params.out_dir:q} --checkpoint {params.checkpoint:q}"
        " --threads {threads} > {log:q} 2>&1"


# Light jobs run in the Snakemake process (also under a cluster executor), not as cluster jobs.
localrules:
    run_config,
    final_config,
