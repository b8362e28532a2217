# The time-budget plan (study.time_budget; ferstudy/plan.py). With a budget, the first training-side
# jobs are plan_config (the plan's inputs: the study as resolved, the budget, the values the user
# set) and plan (`ferstudy plan`: measures this machine once, writes results/plan.json and the cost
# prediction). run_config, recheck_plan and final_planned_config read plan.json, so every training job
# sees the planned budgets. A plain rule, not a checkpoint: the DAG's shape (networks, folds) does
# not depend on the plan, only the files' contents do, so dry runs stay as fast as without it and
# show every job. plan_config's params are the rerun trigger (the planned keys' sources and the
# budget, not --cores): a rerun with the same config reuses plan.json, no new measurement.
# TIME_BUDGET_S, PLAN, PLAN_INPUT, plan_inputs and planned_study live in common.smk.
if TIME_BUDGET_S:

    rule plan_config:
        output:
            f"{R}/plan/inputs.yaml",
        log:
            f"{R}/logs/plan_config.log",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            inputs=lambda w: spec_id(plan_inputs(), "plan"),
        run:
            from ferstudy.cost.study import fingerprint

            inputs = {**plan_inputs(), "cores": workflow.cores, "fingerprint": fingerprint(STUDY, workflow.cores)}
            write_yaml_logged(output[0], inputs, log[0], params.inputs)

    rule plan:
        input:
            h5=f"{R}/data/dataset.h5",
            inputs=f"{R}/plan/inputs.yaml",
        output:
            PLAN,
        log:
            f"{R}/logs/plan.log",
        benchmark:
            f"{R}/benchmarks/plan.tsv"
        conda:
            "../../envs/ferstudy.yaml"
        # alone on the machine while it measures (nothing else of the study runs beside it)
        threads: lambda w: workflow.cores
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            prediction=f"{R}/cost/prediction.json",
        shell:
            "python3 -m ferstudy plan --inputs {input.inputs:q} --h5 {input.h5:q} --cores {threads}"
            " --out {output:q} --prediction {params.prediction:q} > {log:q} 2>&1"

    rule final_planned_config:
        # After `select` (final_config is an input of select, so it cannot wait for the choice):
        # final_config.yaml with the plan's epochs for the chosen network, unless the user set them.
        input:
            final_config=f"{R}/final/final_config.yaml",
            plan=PLAN,
            chosen=lambda w: f"{R}/cv/{final_architecture()}/run_config.yaml",
        output:
            FINAL_PLANNED,
        log:
            f"{R}/logs/final_planned_config.log",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            architecture=lambda w: final_architecture(),
        run:
            from ferstudy.config import load_yaml

            settings = load_yaml(input.final_config)
            planned = planned_study([input.plan], params.architecture)["final"]["training"]
            settings["training"] = {**(settings.get("training") or {}), "epochs": planned["epochs"]}
            write_yaml_logged(output[0], settings, log[0], spec_id(settings, "final"))

    localrules:
        plan_config,
        final_planned_config,
