# Figures: cross-validation and final-model plots, and a look inside the final model (filters,
# activations per emotion, Grad-CAM, example predictions). One job writes them all: the model
# figures share one model load, and each figure takes seconds.

# Where each figure goes in `snakemake --report`: (category, subcategory, label).
FIGURE_PLACES = {
    "training_curves": ("3 Cross-validation", "Figures", "training curves per architecture"),
    "cv_accuracy": ("3 Cross-validation", "Figures", "accuracy per architecture"),
    "accuracy_vs_compute": ("3 Cross-validation", "Figures", "accuracy against compute"),
    "confusion_cv": ("3 Cross-validation", "Figures", "confusion matrix of the final architecture"),
    "confusion_final": ("4 Final model", "Figures", "confusion matrices on PublicTest and PrivateTest"),
    "final_history": ("4 Final model", "Figures", "training history"),
    "examples": ("4 Final model", "Figures", "correct and wrong predictions"),
    "filters_layer1": ("5 Inside the final model", "Filters", "first-layer filters"),
    "filters_deeper": ("5 Inside the final model", "Filters", "deeper convolution layers"),
    "activations": ("5 Inside the final model", "Activations", "feature maps per emotion"),
    "channel_emotion": ("5 Inside the final model", "Activations", "channels and the emotions they prefer"),
    "saliency": ("5 Inside the final model", "Activations", "Grad-CAM saliency"),
}


rule figures:
    input:
        h5=f"{R}/data/dataset.h5",
        summary=f"{R}/tables/cv_summary.csv",
        cost=f"{R}/tables/cost.csv",
        histories=expand(f"{R}/cv/{{arch}}/fold{{fold}}/history.csv", arch=ARCHS, fold=FOLDS),
        metrics=expand(f"{R}/cv/{{arch}}/metrics.json", arch=ARCHS),
        selection=f"{R}/final/selection.json",
        model=f"{R}/final/model.pt",
        history=f"{R}/final/history.csv",
        public=f"{R}/final/predictions_public.csv",
        final_metrics=f"{R}/final/metrics.json",
        final_config=f"{R}/final/config.yaml",
    output:
        **{
            name: report(
                f"{R}/figures/{name}.png",
                caption=f"../report/fig_{name}.rst",
                category=FIGURE_PLACES[name][0],
                subcategory=FIGURE_PLACES[name][1],
                labels={"figure": FIGURE_PLACES[name][2]},
            )
            for name in FIGURE_NAMES
        },
    log:
        f"{R}/logs/figures.log",
    benchmark:
        f"{R}/benchmarks/figures.tsv"
    conda:
        "../../envs/ferstudy.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        archs=ARCHS,
        baseline=STUDY["study"]["baseline"],
        results=lambda w, input: os.path.dirname(os.path.dirname(input.h5)),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "python3 -m ferstudy figures --h5 {input.h5:q} --results {params.results:q} --archs {params.archs:q}"
        " --baseline {params.baseline:q} --out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


localrules:
    figures,
