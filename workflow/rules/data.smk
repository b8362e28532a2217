# Data stage: (demo CSV ->) FER2013 CSV -> validated HDF5 with folds, plus the data summary.


rule demo_csv:
    output:
        f"{R}/data/demo.csv",
    log:
        f"{R}/logs/demo_csv.log",
    benchmark:
        f"{R}/benchmarks/demo_csv.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        images=STUDY["data"]["demo_images"],
        seed=STUDY["data"]["demo_seed"],
    shell:
        "python3 -m ferstudy demo --out {output:q} --images {params.images:q} --seed {params.seed:q} > {log:q} 2>&1"


rule prepare:
    input:
        csv=STUDY["dataset"]["csv"],
    output:
        h5=f"{R}/data/dataset.h5",
        summary_csv=report(
            f"{R}/data/summary.csv",
            caption="../report/data_summary.rst",
            category="2 Data",
            subcategory="CSV downloads",
            labels={"table": "images per split and emotion (CSV)"},
        ),
        summary_md=f"{R}/data/summary.md",
        faces=report(
            f"{R}/data/faces.png",
            caption="../report/faces.rst",
            category="2 Data",
            subcategory="Figures",
            labels={"figure": "example faces"},
        ),
    log:
        f"{R}/logs/prepare.log",
    benchmark:
        f"{R}/benchmarks/prepare.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=prepare_mem_mb,
        runtime=prepare_runtime,
    params:
        dataset=DATASET,
        folds=STUDY["data"]["folds"],
        fold_seed=STUDY["data"]["fold_seed"],
        source_sha256=data_sha256,  # what the HDF5 records as source_sha256
    shell:
        "python3 -m ferstudy prepare --csv {input.csv:q} --h5 {output.h5:q} --dataset {params.dataset:q}"
        " --folds {params.folds:q} --fold-seed {params.fold_seed:q}"
        " --summary-csv {output.summary_csv:q} --summary-md {output.summary_md:q} --faces {output.faces:q}"
        " > {log:q} 2>&1"


# Light jobs run in the Snakemake process (also under a cluster executor), not as cluster jobs.
localrules:
    demo_csv,
