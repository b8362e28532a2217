"""Reading the results into the report's context: `collect(results_dir)` reads the files of
`inputs.report_inputs` (tables, cross-validation and final metrics, the final model, the prepared
data, benchmarks) into one dict of numbers, `ctx`, and raises `UserError` naming every missing file.
The `*_context`, `*_row(s)` and workload helpers turn what was read into the numbers the sections
state."""

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import CLASS_NAMES, SPLIT_NAMES
from ..config import load_yaml
from ..errors import UserError
from ..figures import FIGURES
from ..io import float_or_nan
from ..probe import PICK_SEED
from .inputs import benchmark_files, fold_config, required_files
from .model_facts import inspect_model
from .specs import (
    activations,
    conv_filters,
    has_dropout,
    layer_summary,
    training_changes,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..data import FerData

log = logging.getLogger("ferstudy.report")


def _need_all(paths):
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise UserError(f"report: missing result file(s) {shown} (run `snakemake` first)")


def _records(df):
    """DataFrame -> list of dicts with NaN turned into None-safe floats (kept as float nan)."""
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def plan_context(results: Path, chosen: str | None = None) -> dict | None:
    """The time-budget plan (results/plan.json, ferstudy/plan.py) for the report, or None without
    study.time_budget: its sentence (the plan and why, with the chosen network's final epochs), the
    fold budget, recheck and final epochs."""
    from ..plan import load_plan, plan_sentence

    path = Path(results) / "plan.json"
    plan = load_plan(path) if path.is_file() else None  # opened only where rule report declares it
    if not plan:
        return None
    keys = (
        "fold",
        "recheck_max",
        "final_epochs",
        "time_budget_s",
        "predicted_s",
        "fits",
        "user_set",
        "busy",
        "phases_s",
    )
    return {**{k: plan.get(k) for k in keys}, "sentence": plan_sentence(plan, chosen)}


def collect(
    results_dir: str | Path,
    report_path: str | Path | None = None,
    preset: str | None = None,
    threads: int = 1,
    allow_missing_figures: bool = False,
    appendix_path: str | Path | None = None,
) -> dict:
    """All numbers the report needs, from the files under `results_dir` (`inputs.report_inputs`).

    Every figure must exist unless `allow_missing_figures` (then missing ones are not linked).
    `appendix_path`: where the appendix goes (default: appendix.md beside the report), for the link."""
    import pandas as pd

    from ..cost.study import predicted_vs_actual
    from ..data import count_table, load_h5

    r = Path(results_dir)
    summary_path = r / "tables" / "cv_summary.csv"
    _need_all([summary_path])
    summary = pd.read_csv(summary_path)
    archs = list(summary["architecture"])
    _need_all(required_files(r, archs, figures=not allow_missing_figures))

    data = load_h5(r / "data" / "dataset.h5")
    ablation = pd.read_csv(r / "tables" / "ablation.csv")
    cost = pd.read_csv(r / "tables" / "cost.csv").set_index("architecture")
    selection = json.loads((r / "final" / "selection.json").read_text())
    final_metrics = json.loads((r / "final" / "metrics.json").read_text())
    final_cfg = load_yaml(r / "final" / "config.yaml")
    history = _records(pd.read_csv(r / "final" / "history.csv"))
    cv = {a: json.loads((r / "cv" / a / "metrics.json").read_text()) for a in archs}
    run_cfgs = {a: load_yaml(r / "cv" / a / "run_config.yaml") for a in archs}

    baseline = str(ablation["baseline"].iloc[0]) if len(ablation) else archs[0]
    counts = count_table(data)
    n_train = int(counts.loc["Training", "total"])
    k = int(data.attrs.get("folds", summary["folds"].max()))
    class_counts = {s: [int(counts.loc[s, c]) for c in CLASS_NAMES] for s in SPLIT_NAMES}
    rows = [
        arch_row(rec, cost, cv[rec["architecture"]], run_cfgs, baseline, class_counts, k) for rec in _records(summary)
    ]
    desc = {row["architecture"]: row["description"] for row in rows}
    abl = ablation_rows(_records(ablation), desc)
    alpha = float(ablation["alpha"].iloc[0]) if len(ablation) else 0.05
    fold_train, fold_test = n_train * (k - 1) // k, n_train // k
    filled = fill_newer_columns(abl, cv, baseline, alpha, fold_train, fold_test)
    chosen = selection["architecture"]
    by_name = {row["architecture"]: row for row in rows}
    folds = fold_records(r, archs, k)
    ctx = {
        "dataset": data.attrs.get("dataset", "unknown"),
        "demo": data.attrs.get("dataset") == "demo",
        "data": data_context(data, counts, k),
        "baseline": baseline,
        "metric": selection.get("metric", "accuracy"),
        "alpha": alpha,
        "archs": rows,
        "ablation": abl,
        "ablation_filled": filled,
        **choice_context(selection, by_name, cv, run_cfgs, baseline, fold_train, fold_test),
        **final_run_context(final_metrics, final_cfg, history, class_counts, folds),
        "preset": preset,
        "benchmarks": benchmark_times(r, archs, k),
        "cost_prediction": predicted_vs_actual(r),
        "plan": plan_context(r, chosen),
        "ferplus": read_ferplus_scores(r),
        "inspect": inspect_model(r / "final" / "model.pt", data, threads=threads),
        "seed_picks": PICK_SEED,
        **document_links(r, report_path, appendix_path),
        "results_dir": r.as_posix(),
    }
    ctx["pretrained_pairs"] = pretrained_pairs(
        cv, run_cfgs, ctx["data"]["fold_train"], ctx["data"]["fold_test"], ctx["alpha"]
    )
    return ctx


def choice_context(
    selection: dict, by_name: dict, cv: dict, run_cfgs: dict, baseline: str, fold_train: int, fold_test: int
) -> dict:
    """The report's keys on the chosen architecture: how it was chosen and how it compares."""
    chosen = selection["architecture"]
    return {
        "selection": selection,
        "selected_by_cv": str(selection.get("reason", "")).startswith("highest"),
        "chosen": by_name[chosen],
        "cv_chosen": cv[chosen]["aggregate"],
        "cv_training": run_cfgs[baseline]["training"],
        "chosen_training": run_cfgs[chosen]["training"],
        "runner_up_test": runner_up_test(
            selection, by_name, selection.get("metric", "accuracy"), fold_train, fold_test
        ),
        "chosen_vs": paired_against(chosen, by_name, selection.get("metric", "accuracy"), fold_train, fold_test),
    }


def final_run_context(
    final_metrics: dict, final_cfg: dict, history: list[dict], class_counts: dict, folds: list[dict]
) -> dict:
    """The report's keys on the final training run: its scores, precision and environment."""
    return {
        "final": final_context(final_metrics, final_cfg, history, class_counts),
        "precision": {
            "final": {"precision": final_cfg.get("precision"), "reason": final_cfg.get("precision_reason")},
            "folds": folds,
        },
        "environment": final_cfg.get("environment", {}),
        "config_hash": final_cfg.get("config_hash"),
        "threads": final_cfg.get("threads"),
    }


def document_links(r: Path, report_path: str | Path | None, appendix_path: str | Path | None) -> dict:
    """The links the two documents hold, relative to where they are written: the figures and the
    example faces (from the main report), the appendix (from it) and the main report (from the appendix)."""
    report = Path(report_path) if report_path else r / "report" / "report.md"
    appendix = Path(appendix_path) if appendix_path else report.with_name("appendix.md")

    def link(path, start=report.parent):
        return Path(os.path.relpath(path, start)).as_posix()

    figures = {
        name: link(r / "figures" / f"{name}.png") if (r / "figures" / f"{name}.png").is_file() else None
        for name in FIGURES
    }
    return {
        "figures": figures,
        "faces": link(r / "data" / "faces.png"),
        "appendix": link(appendix),
        "report_link": link(report, appendix.parent),
    }


def final_context(final_metrics: dict, final_cfg: dict, history: list[dict], class_counts: dict) -> dict:
    """The final model's section: its PublicTest, PrivateTest and extra test-set metrics, training
    settings and workload, the epoch PublicTest chose, time and history."""
    training = final_cfg.get("run_config", {}).get("training", {})
    return {
        "public": final_metrics["public"],
        "private": final_metrics["private"],
        "extra": {
            name: m
            for name, m in final_metrics.items()  # extra test sets, if any
            if name not in ("public", "private") and isinstance(m, dict) and "accuracy" in m
        },
        "training": training,
        "model": final_cfg.get("run_config", {}).get("model", {}),
        "workload": final_workload_of(training, class_counts),
        "best_epoch": final_cfg.get("best_epoch"),
        "best_public_acc": final_cfg.get("best_public_acc"),
        "tta_public_accuracy": final_cfg.get("tta_public_accuracy") or {},  # {mode: PublicTest accuracy}
        "seconds": final_cfg.get("seconds"),
        "history": history,
        "n_train": final_cfg.get("n_train"),
    }


def data_context(data: "FerData", counts: "pd.DataFrame", k: int) -> dict:
    """The data section's numbers: counts per split and class, source, folds and fold sizes."""
    n_train = int(counts.loc["Training", "total"])
    return {
        "counts": {s: {c: int(counts.loc[s, c]) for c in [*CLASS_NAMES, "total"]} for s in [*SPLIT_NAMES, "total"]},
        "n_train": n_train,
        "n_public": int(counts.loc["PublicTest", "total"]),
        "n_private": int(counts.loc["PrivateTest", "total"]),
        "source_path": data.attrs.get("source_path"),
        "source_sha256": data.attrs.get("source_sha256"),
        "folds": k,
        "fold_seed": data.attrs.get("fold_seed"),
        "fold_train": n_train * (k - 1) // k,
        "fold_test": n_train // k,
    }


def arch_row(
    rec: dict, cost: "pd.DataFrame", cv_metrics: dict, run_cfgs: dict, baseline: str, class_counts: dict, k: int
) -> dict:
    """One architecture's row of the report: its cv_summary.csv record with its cost, fold scores,
    layers, training settings, per-class recall, fit and what differs from the baseline's training."""
    a = rec["architecture"]
    c = cost.loc[a].to_dict() if a in cost.index else {}
    model, training, agg = run_cfgs[a]["model"], run_cfgs[a]["training"], cv_metrics["aggregate"]
    return {
        **rec,
        "params": c.get("params"),
        "mflops": c.get("mflops"),
        "train_seconds_per_fold": c.get("train_seconds_per_fold"),
        "peak_rss_mb": c.get("peak_rss_mb"),
        "fold_scores": agg["metrics"],
        "fold_accuracy": agg["metrics"]["accuracy"]["folds"],
        "layers": layer_summary(model),
        "conv_filters": conv_filters(model),
        "activations": activations(model),
        "subsample": float(training.get("subsample", 1.0)),
        "dropout": has_dropout(model),
        "augmented": bool(training.get("augment", {}).get("enabled", True)),
        "recall": {cl: v["recall"]["mean"] for cl, v in agg["per_class"].items()},
        "support": {cl: v["support"]["mean"] for cl, v in agg["per_class"].items()},
        "fit": curve_fit(cv_metrics.get("curve")),
        "workload": fold_workload(run_cfgs[a], class_counts, k),
        "training_changes": training_changes(run_cfgs[baseline]["training"], training)
        if a != baseline and baseline in run_cfgs
        else [],
    }


def pretrained_pairs(cv: dict, run_cfgs: dict, fold_train: int, fold_test: int, alpha: float) -> list[dict]:
    """Each pretrained backbone against its from-scratch twin: the studied architecture with the same
    backbone and `pretrained: null` (one with the same training settings first). Judged by the
    ablation's own rule with the twin in the baseline's place: `metrics.compare_to_baseline` (the
    corrected resampled t-test on fold accuracy, verdict at p < alpha) and `study.budget_checked`
    (the stability label from the paired learning curves). One planned comparison per pair, outside
    the ablation's Holm family, so no Holm p. [{arch, twin (None when none was studied), row (an
    ablation row), changes (training settings that differ from the twin's)}]."""
    from ..metrics import compare_to_baseline
    from ..study import budget_checked

    out = []
    for a, rc in run_cfgs.items():
        spec = rc.get("model") or {}
        if "backbone" not in spec or not spec.get("pretrained"):
            continue
        twins = sorted(
            (b for b, rb in run_cfgs.items() if rb.get("model") == {"backbone": spec["backbone"], "pretrained": None}),
            key=lambda b: run_cfgs[b]["training"] != rc["training"],
        )
        scores = {n: cv[n]["aggregate"]["metrics"]["accuracy"]["folds"] for n in [a, *twins[:1]]}
        if not twins or len(scores[a]) != len(scores[twins[0]]):
            out.append({"arch": a, "twin": None, "backbone": spec["backbone"], "row": None, "changes": []})
            continue
        b = twins[0]
        trained = {n: max(1, round(fold_train * float(run_cfgs[n]["training"].get("subsample", 1.0)))) for n in (a, b)}
        comparison = compare_to_baseline({b: scores[b], a: scores[a]}, b, trained, fold_test, alpha=alpha)
        row = budget_checked(comparison, cv, b, trained, fold_test)[0]
        row = ablation_rows([{**row, "factor": cv[a].get("factor", ""), "p_holm": math.nan, "holm": False}], {})[0]
        out.append(
            {
                "arch": a,
                "twin": b,
                "backbone": spec["backbone"],
                "row": row,
                "changes": training_changes(run_cfgs[b]["training"], rc["training"]),
            }
        )
    return out


def read_ferplus_scores(r: Path) -> dict | None:
    """results/final/ferplus.json (rule ferplus_scores, data.ferplus set) if it scores the current final
    predictions, else None (not run, or left from an earlier final model)."""
    from ..data import sha256_of

    path = r / "final" / "ferplus.json"
    if not path.is_file():
        return None
    scores = json.loads(path.read_text())
    now = {key: sha256_of(r / "final" / f"predictions_{key}.csv") for key in ("public", "private")}
    if scores.get("predictions_sha256") != now:
        log.warning(
            "%s scores other predictions than results/final/ (an earlier final model): left out of the report", path
        )
        return None
    return scores


ABLATION_DEFAULTS = {
    "factor": "",
    "p_holm": math.nan,
    "holm": False,
    "n_train": None,
    "n_test": None,
    "gap_pp": math.nan,
    "baseline_gap_pp": math.nan,
    "stability": "unchecked",
    "stability_rule": "",
    "stability_reason": "ablation.csv has no stability label (written by an older ferstudy)",
    "stability_basis": "",
    "p_pooled": math.nan,
    "fragile": False,
    "detectable_pp": math.nan,
    "compute_ratio": math.nan,
    "compute_mixed": False,
    "recheck_status": "",
    "recheck_reason": "",
    "recheck_1x_pp": math.nan,
    "recheck_2x_pp": math.nan,
}
ABLATION_FLOATS = (
    "p",
    "p_holm",
    "diff_pp",
    "std_pp",
    "t",
    "gap_pp",
    "baseline_gap_pp",
    "mean",
    "baseline_mean",
    "p_pooled",
    "detectable_pp",
    "compute_ratio",
    "recheck_1x_pp",
    "recheck_2x_pp",
)


def ablation_rows(records: list[dict], descriptions: dict) -> list[dict]:
    """ablation.csv rows with clean types: floats (NaN for missing), `holm` a bool, text never NaN;
    the columns an older ablation.csv lacks get `ABLATION_DEFAULTS` (Holm p computed here)."""
    from ..stability import holm_adjusted

    rows = [{**ABLATION_DEFAULTS, **{key: v for key, v in rec.items() if not _missing(v)}} for rec in records]
    if rows and "p_holm" not in records[0]:
        for row, p_holm in zip(rows, holm_adjusted([float_or_nan(rw.get("p")) for rw in rows])):
            row["p_holm"] = p_holm
            row["holm"] = bool(p_holm < float_or_nan(row["alpha"])) and row["verdict"] != "no measurable difference"
    for row in rows:
        row["description"] = descriptions.get(row["arch"], "")
        for key in ABLATION_FLOATS:
            row[key] = float_or_nan(row.get(key))
        for key in ("holm", "fragile", "compute_mixed"):
            row[key] = str(row[key]).lower() == "true"
        row["note"] = row["note"] if isinstance(row.get("note"), str) else None
    return rows


NEWER_COLUMNS = ("p_pooled", "fragile", "detectable_pp", "compute_ratio", "compute_mixed")


def fill_newer_columns(
    rows: list[dict], cv: dict, baseline: str, alpha: float, fold_train: int, fold_test: int
) -> list[str]:
    """An ablation.csv written before the pooled check and the compute ratio (ferstudy before #20)
    gets them from the cross-validation metrics by the study's own rule
    (`study.comparisons_with_pooled`), so that every report states them; returns the columns filled
    (none for a current table, or when the metrics lack what the rule needs)."""
    from ..study import comparisons_with_pooled

    missing = [c for c in NEWER_COLUMNS if rows and all(_is_default(row, c) for row in rows)]
    if not missing:
        return []
    try:
        computed, _ = comparisons_with_pooled(cv, baseline, alpha, fold_train, fold_test)
    except (KeyError, TypeError, ValueError):
        return []
    by_arch = {c["arch"]: c for c in computed}
    for row in rows:
        for column in missing:
            if row["arch"] in by_arch:
                row[column] = by_arch[row["arch"]][column]
    return missing


def _is_default(row, column):
    value, default = row.get(column), ABLATION_DEFAULTS[column]
    return value == default or (isinstance(value, float) and math.isnan(value))


def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def curve_fit(curve: dict | None) -> dict | None:
    """The last epoch of a learning curve, mean over folds: held-out and trained-on accuracy (fixed
    subsets, un-augmented), the accuracy on the training batches (as trained) and the gap (pp)."""
    from ..stability import last_gap_pp

    if not curve:
        return None

    def last(key):
        values = [fold[-1] for fold in curve.get(key) or [] if fold and np.isfinite(fold[-1])]
        return float(np.mean(values)) if values else math.nan

    return {
        "epoch": int(curve["epochs"][-1]),
        "val": last("val_acc"),
        "train": last("train_acc"),
        "batches": last("train_acc_augmented"),
        "gap_pp": last_gap_pp(curve),
        "late_gain_pp": late_gain_pp(curve),
    }


def late_gain_pp(curve: dict) -> float:
    """How much held-out curve accuracy rose over the last half of the epochs (`stability.late_mask`),
    mean over folds, in pp: a network still gaining at the end was stopped by the budget."""
    from ..stability import late_mask

    epochs = curve.get("epochs") or []
    if len(epochs) < 3:
        return math.nan
    first = int(np.flatnonzero(late_mask(epochs))[0])
    gains = [
        100 * (fold[-1] - fold[first])
        for fold in curve.get("val_acc") or []
        if len(fold) == len(epochs) and np.isfinite(fold[-1]) and np.isfinite(fold[first])
    ]
    return float(np.mean(gains)) if gains else math.nan


def fold_workload(run_cfg: dict, class_counts: dict, folds: int) -> dict:
    """Images, batch, SGD steps and epochs of one fold job (mean over folds), as `cost.cv_workload`."""
    from ..cost.workload import cv_workload

    w = cv_workload(run_cfg, {"Training": class_counts["Training"]}, folds)
    n = float(np.mean([j["n_train"] for j in w["jobs"]]))
    steps = float(np.mean([j["steps"] for j in w["jobs"]]))
    return {
        "n_train": n,
        "batch_size": w["jobs"][0]["batch_size"],
        "steps_per_epoch": steps,
        "epochs": int(w["epochs"]),
        "steps": steps * w["epochs"],
    }


def final_workload_of(training: dict, class_counts: dict) -> dict | None:
    """The same numbers for the final model (`cost.final_workload`); None without its settings."""
    from ..cost.workload import final_workload

    if not training.get("epochs") or not training.get("batch_size"):
        return None
    w = final_workload({"training": training}, class_counts)
    return {
        "n_train": w["n_train"],
        "batch_size": w["batch_size"],
        "steps_per_epoch": w["steps"],
        "epochs": int(w["epochs"]),
        "steps": w["steps"] * w["epochs"],
    }


def runner_up_test(selection: dict, rows: dict, metric: str, fold_train: int, fold_test: int) -> dict | None:
    """The chosen architecture against the runner-up, paired by fold (`paired_test`)."""
    runner = selection.get("runner_up")
    if not runner or runner["architecture"] not in rows:
        return None
    return paired_test(rows[selection["architecture"]], rows[runner["architecture"]], metric, fold_train, fold_test)


def paired_test(a: dict, b: dict, metric: str, fold_train: int, fold_test: int) -> dict | None:
    """Architecture row `a` against `b`, paired by fold: the corrected resampled t-test with the
    pair's images (the smaller subsample of the two, as `study.aggregate` does); None without
    matching folds."""
    from ..metrics import corrected_resampled_ttest

    fa, fb = a["fold_scores"][metric]["folds"], b["fold_scores"][metric]["folds"]
    if len(fa) != len(fb) or len(fa) < 2:
        return None
    n_train = min(max(1, round(fold_train * row["subsample"])) for row in (a, b))
    test = corrected_resampled_ttest(np.subtract(fa, fb), n_train, fold_test)
    return {"architecture": b["architecture"], **test, "diff_pp": 100 * test["mean_diff"]}


def paired_against(chosen: str, rows: dict, metric: str, fold_train: int, fold_test: int) -> dict:
    """{architecture: `paired_test` of the chosen one against it} for every other architecture."""
    return {
        name: paired_test(rows[chosen], row, metric, fold_train, fold_test)
        for name, row in rows.items()
        if name != chosen
    }


def fold_records(results: str | Path, archs: list[str], folds: int) -> list[dict]:
    """[{arch, fold, precision, reason, init_seed}] from each fold job's config.yaml (None where not
    recorded: `init_seed` is missing from folds trained before fold k started from seed s + k)."""
    out = []
    for a in archs:
        for k in range(folds):
            path = fold_config(results, a, k)
            cfg = load_yaml(path) if path.is_file() else {}
            out.append(
                {
                    "arch": a,
                    "fold": k,
                    "precision": cfg.get("precision"),
                    "reason": cfg.get("precision_reason"),
                    "init_seed": cfg.get("init_seed"),
                }
            )
    return out


STAGE_NAMES = {
    "prepare": "data preparation",
    "train": "cross-validation training",
    "train_final": "final model",
    "figures": "figures",
}


def benchmark_times(results_dir: str | Path, archs: list[str], folds: int) -> dict:
    """Wall seconds and peak memory per stage from Snakemake's benchmark files (column `s`, `max_rss`):
    those of `inputs.benchmark_files` that exist (the rule declares them: no stale file counts).

    The stage is the first path component under benchmarks/ (prepare, train, train_final, figures).
    """
    import pandas as pd

    root = Path(results_dir) / "benchmarks"
    stages: dict = {}
    for path in [p for p in benchmark_files(results_dir, archs, folds) if p.is_file()]:
        stage = path.relative_to(root).with_suffix("").parts[0]
        try:
            b = pd.read_csv(path, sep="\t")
            s, rss = float(b["s"].iloc[0]), float(pd.to_numeric(b["max_rss"], errors="coerce").iloc[0])
        except (KeyError, IndexError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        st = stages.setdefault(
            stage, {"stage": STAGE_NAMES.get(stage, stage), "jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0}
        )
        st["jobs"] += 1
        st["seconds"] += s
        if np.isfinite(rss):
            st["max_rss_mb"] = max(st["max_rss_mb"], rss)
    rows = sorted(stages.values(), key=lambda st: -st["seconds"])
    return {"stages": rows, "total_seconds": sum(st["seconds"] for st in rows), "jobs": sum(st["jobs"] for st in rows)}
