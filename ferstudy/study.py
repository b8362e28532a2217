"""Study-level steps between training and the report: per-architecture evaluation over folds,
the cross-validation tables (summary, ablation, cost) and the choice of the final architecture.

The choice reads cross-validation results only; PrivateTest never enters here.
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import UserError
from .io import atomic_path, write_json
from .metrics import (
    aggregate_folds,
    classification_metrics,
    compare_to_baseline,
    detectable_difference,
    pooled_resampled_ttests,
    read_predictions,
)
from .stability import (
    curve_from_histories,
    gap_curve_pp,
    heuristic_stability,
    holm_adjusted,
    last_gap_pp,
    paired_curve_pp,
    recheck_label,
    regularization_amount,
)

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "top2_accuracy")
# ablation.csv's columns, as `aggregate` writes them (tests/test_study.py checks the two agree): a
# study of one architecture has no variant to compare and writes the header alone.
ABLATION_COLUMNS = (
    "arch",
    "factor",
    "baseline",
    "metric",
    "k",
    "mean",
    "baseline_mean",
    "diff_pp",
    "std_pp",
    "t",
    "p",
    "df",
    "alpha",
    "verdict",
    "note",
    "p_pooled",
    "t_pooled",
    "df_pooled",
    "std_pooled_pp",
    "se_pooled_pp",
    "fragile",
    "detectable_pp",
    "detectable_pooled_pp",
    "compute_ratio",
    "compute_mixed",
    "p_holm",
    "holm",
    "n_train",
    "n_test",
    "epochs",
    "gap_pp",
    "baseline_gap_pp",
    "curve_epochs",
    "curve_diff_pp",
    "band_pp",
    "late_min_pp",
    "late_max_pp",
    "gap_growth_pp",
    "baseline_gap_growth_pp",
    "stability_basis",
    "stability_rule",
    "recheck_status",
    "recheck_reason",
    "recheck_fold",
    "recheck_epochs",
    "recheck_1x_pp",
    "recheck_2x_pp",
    "stability",
    "stability_reason",
)


def evaluate_arch(
    prediction_files: Iterable[Path | str],
    run_config: dict,
    model_file: Path | str | None = None,
    benchmark_files: Iterable[Path | str] = (),
) -> dict:
    """metrics.json content for one architecture: per-fold metrics, their aggregate, the cost and the
    learning curve (from each fold's history.csv, written beside its predictions by the same job)."""
    folds, histories = [], []
    for path in prediction_files:
        labels, probs, _ = read_predictions(path)
        folds.append(classification_metrics(labels, probs))
        history = Path(path).with_name("history.csv")
        histories.append(pd.read_csv(history).to_dict("records") if history.is_file() else [])
    return {
        "architecture": run_config["name"],
        "dataset": run_config.get("dataset"),
        "description": run_config.get("description", ""),
        "factor": run_config.get("factor", ""),
        "subsample": float(run_config["training"].get("subsample", 1.0)),
        "epochs": int(run_config["training"]["epochs"]),
        "regularization": regularization_amount(run_config),
        "folds": folds,
        "aggregate": aggregate_folds(folds),
        "curve": curve_from_histories(histories),
        "cost": model_cost(run_config, model_file, benchmark_files),
    }


def model_cost(
    run_config: dict, model_file: Path | str | None = None, benchmark_files: Iterable[Path | str] = ()
) -> dict[str, float]:
    """Parameters, forward MFLOPs per image, training seconds and peak memory (Snakemake benchmarks)."""
    from .models import build_model, count_parameters, forward_flops

    crop = run_config["training"]["augment"].get("crop", 48)
    model = build_model(run_config["model"], input_size=crop, weights=False)  # counts need no pretrained file
    cost = {"params": count_parameters(model), "mflops": forward_flops(model, crop) / 1e6}
    bench = [pd.read_csv(p, sep="\t") for p in benchmark_files if Path(p).is_file()]
    if bench:
        cost["train_seconds_per_fold"] = float(np.mean([b["s"].iloc[0] for b in bench]))
        cost["peak_rss_mb"] = float(max(b["max_rss"].iloc[0] for b in bench))
    return cost


def load_results(metrics_files: Iterable[Path | str]) -> dict:
    """{architecture: metrics.json content} in the order given."""
    results = {}
    for path in metrics_files:
        m = json.loads(Path(path).read_text())
        results[m["architecture"]] = m
    return results


def aggregate(
    metrics_files: Iterable[Path | str],
    baseline: str,
    alpha: float,
    n_train: int,
    n_test: int,
    recheck: tuple[dict, dict] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, ablation, cost) DataFrames over all architectures.

    n_train: training images of one full fold; each architecture's t-test uses the share its
    `training.subsample` kept, since the test's correction depends on the images really trained on.
    recheck: (plan, {arch: recheck differences}) of ferstudy/recheck.py, or None (no recheck ran)."""
    results = load_results(metrics_files)
    rows = []
    for name, m in results.items():
        agg = m["aggregate"]["metrics"]
        row = {
            "architecture": name,
            "dataset": m.get("dataset"),
            "factor": m["factor"],
            "description": m["description"],
            "folds": len(m["folds"]),
        }
        for key in SUMMARY_METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = agg[key]["mean"], agg[key]["std"]
        rows.append(row)
    summary = pd.DataFrame(rows)
    comparisons, trained = comparisons_with_pooled(results, baseline, alpha, n_train, n_test)
    ablation = pd.DataFrame(budget_checked(comparisons, results, baseline, trained, n_test, recheck))
    if len(ablation):  # the factor second, as the tables show it
        ablation = ablation[["arch", "factor", *(c for c in ablation.columns if c not in ("arch", "factor"))]]
    else:
        ablation = pd.DataFrame(columns=list(ABLATION_COLUMNS))
    cost = pd.DataFrame(
        [
            {"architecture": name, **m["cost"], "accuracy_mean": m["aggregate"]["metrics"]["accuracy"]["mean"]}
            for name, m in results.items()
        ]
    )
    return summary, ablation, cost


COMPUTE_SIMILAR = (0.67, 1.5)  # a variant's compute within this ratio of the baseline's: a one-factor verdict


def comparisons_with_pooled(
    results: dict | Iterable[Path | str], baseline: str, alpha: float, n_train: int, n_test: int, power: float = 0.8
) -> tuple[list[dict], dict]:
    """(rows, trained): `compare_to_baseline` of every variant, each row with the pooled check beside
    its own test (`metrics.pooled_resampled_ttests`: p_pooled, t_pooled, df_pooled, std_pooled_pp,
    se_pooled_pp; `fragile` when the two disagree on p < alpha), the smallest difference the study
    detects with `power` (`detectable_pp`: the pair's own test, df = k - 1, at the pooled spread;
    `detectable_pooled_pp`: the pooled test) and the compute ratio to the baseline (forward MFLOPs;
    `compute_mixed` outside `COMPUTE_SIMILAR`: the verdict is on the operation and compute together).
    results: {arch: metrics.json} or a list of metrics.json paths; trained: {arch: images per fold}."""
    if not isinstance(results, dict):
        results = load_results(results)
    scores = {name: m["aggregate"]["metrics"]["accuracy"]["folds"] for name, m in results.items()}
    if baseline not in scores:
        raise UserError(f"study.baseline {baseline!r} has no results among {', '.join(scores)}")
    trained = {name: max(1, round(n_train * m.get("subsample", 1.0))) for name, m in results.items()}
    rows = compare_to_baseline(scores, baseline, trained, n_test, alpha=alpha)
    pair_n = {r["arch"]: min(trained[r["arch"]], trained[baseline]) for r in rows}
    diffs = {r["arch"]: np.subtract(scores[r["arch"]], scores[baseline]) for r in rows}
    pooled, pool = pooled_resampled_ttests(diffs, pair_n, n_test)
    base_mflops = results[baseline].get("cost", {}).get("mflops")
    for r in rows:
        a, k = r["arch"], r["k"]
        t = pooled[a]
        own, shared = r["p"] < alpha, t["p"] < alpha  # NaN counts as not significant
        mflops = results[a].get("cost", {}).get("mflops")
        ratio = mflops / base_mflops if mflops and base_mflops else float("nan")
        r.update(
            factor=results[a]["factor"],
            p_pooled=t["p"],
            t_pooled=t["t"],
            df_pooled=t["df"],
            std_pooled_pp=100 * pool["std"],
            se_pooled_pp=100 * t["se_pooled"],
            fragile=bool(own != shared),
            detectable_pp=100 * detectable_difference(pool["std"], k, pair_n[a], n_test, alpha, power),
            detectable_pooled_pp=100
            * detectable_difference(pool["std"], k, pair_n[a], n_test, alpha, power, df=pool["df"]),
            compute_ratio=ratio,
            compute_mixed=bool(np.isfinite(ratio) and not COMPUTE_SIMILAR[0] <= ratio <= COMPUTE_SIMILAR[1]),
        )
    return rows, trained


def budget_checked(
    comparisons: list[dict], results: dict, baseline: str, trained: dict, n_test: int, recheck: Any = None
) -> list[dict]:
    """Each comparison with what the verdict rests on and whether it depends on the budget: the Holm
    adjusted p over all comparisons, the images and epochs behind the test, the train-minus-held-out
    gaps, the paired learning curve, the heuristic label (`stability.heuristic_stability`) and, for a
    pair the recheck retrained (`recheck`: (plan, {arch: differences})), the measured label
    (`stability.recheck_label`) in its place."""
    adjusted = holm_adjusted([c["p"] for c in comparisons])
    base_curve = results[baseline].get("curve")
    the_plan, measured = recheck if recheck else (None, {})
    out = []
    for c, p_holm in zip(comparisons, adjusted):
        arch = c["arch"]
        curve = results[arch].get("curve")
        epochs, diffs = paired_curve_pp(curve, base_curve)
        significant = c["verdict"] in ("helped", "hurt")
        gap, base_gap = last_gap_pp(curve), last_gap_pp(base_curve)
        amounts = [results[a].get("regularization") for a in (arch, baseline)]
        more = None if None in amounts or amounts[0] == amounts[1] else amounts[0] > amounts[1]
        label, reason, evidence = heuristic_stability(
            epochs,
            diffs,
            c["diff_pp"],
            significant,
            c["std_pp"],
            c["k"],
            results[arch]["factor"],
            gap,
            base_gap,
            more,
            gap_curve_pp(curve),
            gap_curve_pp(base_curve),
        )
        row = {
            **c,
            "p_holm": p_holm,
            "holm": bool(p_holm < c["alpha"]),
            "n_train": min(trained[arch], trained[baseline]),
            "n_test": n_test,
            "epochs": results[arch].get("epochs"),
            "gap_pp": gap,
            "baseline_gap_pp": base_gap,
            "curve_epochs": " ".join(str(e) for e in epochs),
            "curve_diff_pp": " ".join(f"{d:.2f}" for d in diffs),
            **evidence,
        }
        row.update(recheck_fields(the_plan, measured, c, results))
        if arch in measured:
            label, reason = recheck_label(
                c["verdict"],
                c["diff_pp"],
                row["recheck_1x_pp"],
                row["recheck_2x_pp"],
                c.get("std_pooled_pp", c["std_pp"]),
                the_plan["fold"],
                the_plan["factor"],
            )
            row.update(stability_basis="measured", stability_rule="recheck")
        out.append({**row, "stability": label, "stability_reason": reason})
    return out


def recheck_fields(the_plan: dict | None, measured: dict, comparison: dict, results: dict) -> dict:
    """The recheck columns of one ablation row: status (rechecked | at risk, not rechecked | not at
    risk | off), why it was at risk, the fold, the longer run's epochs and the 1x and 2x differences."""
    arch = comparison["arch"]
    nan = float("nan")
    fields = {
        "recheck_status": "off",
        "recheck_reason": "",
        "recheck_fold": nan,
        "recheck_epochs": nan,
        "recheck_1x_pp": nan,
        "recheck_2x_pp": nan,
    }
    if the_plan is None:
        return fields
    risk = {e["arch"]: e["reason"] for e in the_plan["at_risk"]}
    fields["recheck_reason"] = risk.get(arch) or ("named in study.recheck" if arch in measured else "")
    if arch in measured:
        epochs = results[arch].get("epochs")
        fields.update(
            recheck_status="rechecked",
            recheck_fold=the_plan["fold"],
            **measured[arch],
            recheck_epochs=round(epochs * the_plan["factor"]) if epochs else nan,
        )
    elif arch in the_plan["unchecked"]:
        fields["recheck_status"] = (
            "at risk, not rechecked (study.recheck_max)"
            if the_plan["mode"] == "auto"
            else "at risk, not in study.recheck"
        )
    else:
        fields["recheck_status"] = "off" if the_plan["mode"] == "off" else "not at risk"
    return fields


def select(summary: pd.DataFrame, metric: str, forced: str | None = None) -> dict:
    """The final architecture: the best cross-validation mean of `metric` (or the one config names)."""
    col = f"{metric}_mean"
    ranked = summary.sort_values([col, "architecture"], ascending=[False, True]).reset_index(drop=True)
    if forced:
        if forced not in set(summary["architecture"]):
            raise UserError(f"config key final.architecture: {forced!r} is not among the studied architectures")
        chosen, reason = forced, "named in config (final.architecture)"
    else:
        chosen, reason = ranked.loc[0, "architecture"], f"highest mean cross-validation {metric}"
    row = summary.set_index("architecture").loc[chosen]
    runner_up = ranked[ranked["architecture"] != chosen].head(1)
    return {
        "architecture": chosen,
        "dataset": row.get("dataset"),
        "metric": metric,
        "reason": reason,
        "mean": float(row[col]),
        "std": float(row[f"{metric}_std"]),
        "runner_up": None
        if runner_up.empty
        else {"architecture": runner_up["architecture"].iloc[0], "mean": float(runner_up[col].iloc[0])},
        "ranking": ranked[["architecture", col, f"{metric}_std"]].to_dict("records"),
    }


def write_csv(df: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def evaluate_final(
    public_csv: Path | str, private_csv: Path | str, extra: dict[str, Path | str] | None = None
) -> dict[str, dict]:
    out = {}
    for name, path in (("public", public_csv), ("private", private_csv), *((extra or {}).items())):
        labels, probs, _ = read_predictions(path)
        out[name] = classification_metrics(labels, probs)
    return out


__all__ = [
    "evaluate_arch",
    "aggregate",
    "comparisons_with_pooled",
    "select",
    "evaluate_final",
    "write_csv",
    "write_json",
]
