"""The files the report reads, named as rule `report` declares them: `report_inputs` is that one
list, for workflow/rules/report.smk and for `load.collect`, so that Snakemake reruns the report
exactly when one of them changes. It imports nothing heavy: the workflow imports it.

Read but not declared: results/cost/prediction.json, results/cost/run.json and Snakemake's log
(`cost.study.predicted_vs_actual`). The Snakefile's onstart writes them, outside the DAG, and only
on runs that build the whole study, which rerun the report anyway.
"""

from pathlib import Path

from ..figures import FIGURES

# The report's required files that are one per study, in the order a missing-files message names them.
SINGLE_FILES = (
    "h5",
    "faces",
    "summary",
    "ablation",
    "cost",
    "selection",
    "final_metrics",
    "final_config",
    "history",
    "model",
)


def report_inputs(
    results: str | Path, archs: list[str], folds: int, ferplus: bool = False, figures: bool = True, plan: bool = False
) -> dict:
    """{name: path or [paths]}: every file the report reads under `results` for a study of `archs`
    with `folds` folds; results/final/ferplus.json when `ferplus` (`data.ferplus`), results/plan.json
    when `plan` (`study.time_budget`), the figures unless `figures` is False."""
    r = Path(results)
    return {
        "h5": r / "data" / "dataset.h5",
        "faces": r / "data" / "faces.png",
        "summary": r / "tables" / "cv_summary.csv",
        "ablation": r / "tables" / "ablation.csv",
        "cost": r / "tables" / "cost.csv",
        "metrics": [r / "cv" / a / "metrics.json" for a in archs],
        "run_configs": [r / "cv" / a / "run_config.yaml" for a in archs],
        "fold_configs": [fold_config(r, a, k) for a in archs for k in range(folds)],
        "selection": r / "final" / "selection.json",
        "final_metrics": r / "final" / "metrics.json",
        "final_config": r / "final" / "config.yaml",
        "history": r / "final" / "history.csv",
        "model": r / "final" / "model.pt",
        "predictions": [r / "final" / f"predictions_{key}.csv" for key in ("public", "private")],
        "ferplus": [r / "final" / "ferplus.json"] if ferplus else [],
        "plan": [r / "plan.json"] if plan else [],  # study.time_budget (ferstudy/plan.py)
        "benchmarks": benchmark_files(r, archs, folds),
        "figures": [r / "figures" / f"{name}.png" for name in FIGURES] if figures else [],
    }


def required_files(results: str | Path, archs: list[str], figures: bool = True) -> list[Path]:
    """The inputs the report cannot do without (fold configs, benchmarks and FER+ scores it reads
    when they exist)."""
    files = report_inputs(results, archs, 0, figures=figures)
    per_arch = [path for pair in zip(files["metrics"], files["run_configs"]) for path in pair]
    return [*(files[name] for name in SINGLE_FILES), *files["figures"], *per_arch]


def fold_config(results: str | Path, arch: str, fold: int) -> Path:
    """The config.yaml a fold job writes beside its results (its precision and why)."""
    return Path(results) / "cv" / arch / f"fold{fold}" / "config.yaml"


def benchmark_files(results: str | Path, archs: list[str], folds: int) -> list[Path]:
    """Snakemake's benchmark files of the rules that declare one (prepare, train_fold, train_final,
    figures), sorted."""
    root = Path(results) / "benchmarks"
    folds_tsv = [root / "train" / a / f"fold{k}.tsv" for a in archs for k in range(folds)]
    return sorted([root / "prepare.tsv", *folds_tsv, root / "train_final.tsv", root / "figures.tsv"])
