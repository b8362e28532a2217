"""Choosing the final architecture (cross-validation only) and the study tables."""

import numpy as np
import pandas as pd
import pytest

from ferstudy.errors import UserError
from ferstudy.io import write_json
from ferstudy.metrics import aggregate_folds, classification_metrics
from ferstudy.study import aggregate, select


def summary(means):
    return pd.DataFrame(
        [
            {"architecture": a, "accuracy_mean": m, "accuracy_std": 0.01, "macro_f1_mean": 1 - m, "macro_f1_std": 0.02}
            for a, m in means.items()
        ]
    )


def test_select_takes_best_cv_mean_and_reports_runner_up():
    choice = select(summary({"a": 0.61, "b": 0.64, "c": 0.63}), "accuracy")
    assert choice["architecture"] == "b" and choice["runner_up"]["architecture"] == "c"
    assert [r["architecture"] for r in choice["ranking"]] == ["b", "c", "a"]
    assert select(summary({"a": 0.61, "b": 0.64, "c": 0.63}), "macro_f1")["architecture"] == "a"


def test_select_forced_architecture_must_exist():
    assert select(summary({"a": 0.6, "b": 0.7}), "accuracy", forced="a")["architecture"] == "a"
    with pytest.raises(UserError, match="final.architecture"):
        select(summary({"a": 0.6}), "accuracy", forced="zzz")


def _metrics_file(tmp_path, name, fold_accuracies, rng, subsample=1.0):
    folds = []
    for acc in fold_accuracies:
        labels = rng.integers(0, 7, 200)
        preds = np.where(rng.random(200) < acc, labels, (labels + 1) % 7)
        folds.append(classification_metrics(labels, np.eye(7)[preds]))
    path = tmp_path / f"{name}.json"
    write_json(
        path,
        {
            "architecture": name,
            "dataset": "demo",
            "factor": "f",
            "description": name,
            "folds": folds,
            "subsample": subsample,
            "aggregate": aggregate_folds(folds),
            "cost": {"params": 10, "mflops": 1.0},
        },
    )
    return path


def test_aggregate_tables_and_verdicts(tmp_path):
    rng = np.random.default_rng(0)
    files = [
        _metrics_file(tmp_path, "base", [0.50, 0.52, 0.51], rng),
        _metrics_file(tmp_path, "better", [0.70, 0.71, 0.72], rng),
        _metrics_file(tmp_path, "same", [0.50, 0.53, 0.50], rng),
    ]
    summary_df, ablation, cost = aggregate(files, "base", 0.05, n_train=400, n_test=200)
    assert list(summary_df["architecture"]) == ["base", "better", "same"]
    verdicts = dict(zip(ablation["arch"], ablation["verdict"]))
    assert verdicts["better"] == "helped" and verdicts["same"] == "no measurable difference"
    assert len(cost) == 3 and (cost["params"] == 10).all()


def test_aggregate_uses_the_subsampled_training_size(tmp_path):
    """An architecture trained on 10% of each fold is tested with n_train = 10% of the fold."""
    rng = np.random.default_rng(0)
    accs = [0.50, 0.56, 0.51]
    base = _metrics_file(tmp_path, "base", [0.50, 0.52, 0.51], rng)
    full = aggregate(
        [base, _metrics_file(tmp_path, "other", accs, np.random.default_rng(1))],
        "base",
        0.05,
        n_train=4000,
        n_test=2000,
    )[1]
    sub = aggregate(
        [base, _metrics_file(tmp_path, "other", accs, np.random.default_rng(1), subsample=0.1)],
        "base",
        0.05,
        n_train=4000,
        n_test=2000,
    )[1]
    assert sub["p"].iloc[0] > full["p"].iloc[0]
    assert sub["diff_pp"].iloc[0] == pytest.approx(full["diff_pp"].iloc[0])


def _result(folds, factor="f", mflops=50.0, subsample=0.5):
    """A metrics.json as evaluate_arch writes it, reduced to what the comparisons read."""
    return {
        "aggregate": {"metrics": {"accuracy": {"folds": list(folds)}}},
        "factor": factor,
        "subsample": subsample,
        "cost": {"mflops": mflops},
        "epochs": 8,
    }


def made_up_study():
    """Ten variants whose paired differences spread 0.45 pp over 3 folds (the cpu preset's typical
    spread), `tight` +1.0 pp with an implausibly small spread of 0.1 pp, `loose` -1.3 pp with 0.6 pp,
    `deep` +4.7 pp at 3.6x the baseline's compute."""
    base = np.array([0.54, 0.55, 0.53])
    noise = np.array([-0.45, 0.0, 0.45]) / 100  # sample std 0.45 pp
    results = {"baseline": _result(base, "baseline")}
    for i in range(10):
        results[f"v{i}"] = _result(base + (0.2 * (i - 5)) / 100 + np.roll(noise, i % 3))
    results["tight"] = _result(base + np.array([0.9, 1.0, 1.1]) / 100, "kernel size", 143.0)
    results["loose"] = _result(base + np.array([-1.9, -1.3, -0.7]) / 100, "activation")
    results["deep"] = _result(base + np.array([4.2, 4.7, 5.2]) / 100, "depth", 188.0)
    return results


def test_the_pooled_check_flags_a_pair_whose_own_spread_is_implausibly_small():
    from ferstudy.metrics import detectable_difference
    from ferstudy.study import comparisons_with_pooled

    rows, trained = comparisons_with_pooled(made_up_study(), "baseline", 0.05, n_train=19140, n_test=9569)
    r = {row["arch"]: row for row in rows}
    assert trained["tight"] == 9570 and r["tight"]["df_pooled"] == 2 * 13
    # its own test: significant (a spread of 0.1 pp); with the pooled spread it is not: fragile
    assert r["tight"]["p"] < 0.05 < r["tight"]["p_pooled"] and r["tight"]["fragile"]
    # the other way round: its own spread is large, the pooled one finds it
    assert r["loose"]["p_pooled"] < 0.05 < r["loose"]["p"] and r["loose"]["fragile"]
    assert not r["deep"]["fragile"] and r["deep"]["p"] < 0.05 and r["deep"]["p_pooled"] < 0.05
    pooled = r["tight"]["std_pooled_pp"]
    assert 0.4 < pooled < 0.5 and all(row["std_pooled_pp"] == pooled for row in rows)
    assert r["tight"]["detectable_pp"] == pytest.approx(100 * detectable_difference(pooled / 100, 3, 9570, 9569))
    assert r["tight"]["detectable_pooled_pp"] < r["tight"]["detectable_pp"]
    # compute named: 188 / 50 MFLOPs mixes the operation and compute, 1x does not
    assert r["deep"]["compute_ratio"] == pytest.approx(3.76) and r["deep"]["compute_mixed"]
    assert r["v0"]["compute_ratio"] == pytest.approx(1.0) and not r["v0"]["compute_mixed"]


def test_a_rechecked_verdict_takes_its_label_from_the_longer_run(tmp_path):
    """budget_checked: the rechecked pair's label is measured (here: the difference halved at 2x,
    so budget-dependent), the one left by the cap keeps its heuristic label and says so."""
    from ferstudy.recheck import plan
    from ferstudy.study import budget_checked, comparisons_with_pooled

    results = made_up_study()
    results["no_dropout"] = _result(
        results["baseline"]["aggregate"]["metrics"]["accuracy"]["folds"] + np.array([1.4, 1.5, 1.6]) / 100, "dropout"
    )
    for m in results.values():
        m["curve"], m["regularization"] = None, 0.0
    rows, trained = comparisons_with_pooled(results, "baseline", 0.05, n_train=19140, n_test=9569)
    the_plan = plan(rows, "baseline", "auto", cap=1)
    assert the_plan["rechecked"] == ["tight"] and the_plan["unchecked"] == ["no_dropout"]
    assert the_plan["runs"] == ["baseline", "tight"]
    measured = {"tight": {"recheck_1x_pp": 0.9, "recheck_2x_pp": 0.45}}
    out = {r["arch"]: r for r in budget_checked(rows, results, "baseline", trained, 9569, (the_plan, measured))}
    t = out["tight"]
    assert (t["stability"], t["stability_basis"], t["recheck_status"]) == ("budget-dependent", "measured", "rechecked")
    assert t["recheck_2x_pp"] == 0.45 and t["recheck_epochs"] == 16 and "(measured)" in t["stability_reason"]
    n = out["no_dropout"]
    assert n["recheck_status"] == "at risk, not rechecked (study.recheck_max)" and n["stability_basis"] == "heuristic"
    assert "heuristic" in n["stability_reason"] and "regularizer" in n["recheck_reason"]
    assert out["deep"]["recheck_status"] == "not at risk"


def test_the_recheck_plan_takes_the_riskiest_first():
    """At risk: every regularizer verdict, every significant one within 2 pooled standard errors of
    zero; the claims first, weakest margin first, then the null regularizer verdicts. The numbers of
    the committed cpu-preset run (pooled standard error 0.52 pp)."""
    from ferstudy.recheck import plan

    se = 0.524
    rows = [
        dict(arch=a, factor=f, verdict=v, diff_pp=d, se_pooled_pp=se)
        for a, f, v, d in (
            ("depth_2convs", "depth", "helped", 4.68),
            ("kernel_5", "kernel size", "helped", 1.02),
            ("pool_avg", "pooling", "hurt", -1.15),
            ("filters_half", "filters", "no measurable difference", -1.30),
            ("no_dropout", "dropout", "helped", 1.04),
            ("dropout_blocks", "dropout", "hurt", -6.83),
            ("no_augment", "augmentation", "no measurable difference", -0.20),
            ("augment_full", "augmentation", "hurt", -2.53),
        )
    ]
    full = plan(rows, "baseline", "auto")
    assert full["rechecked"] == ["kernel_5", "no_dropout", "augment_full", "dropout_blocks", "no_augment"]
    assert full["runs"][0] == "baseline" and not full["unchecked"]
    capped = plan(rows, "baseline", "auto", cap=2)
    assert capped["rechecked"] == ["kernel_5", "no_dropout"]
    assert capped["unchecked"] == ["augment_full", "dropout_blocks", "no_augment"]
    listed = plan(rows, "baseline", ["pool_avg"], cap=0)
    assert listed["rechecked"] == ["pool_avg"] and listed["mode"] == "list" and "kernel_5" in listed["unchecked"]
    off = plan(rows, "baseline", "off")
    assert off["rechecked"] == [] and off["runs"] == []
    with pytest.raises(UserError, match="study.recheck: 'vgg_deep' is no variant"):
        plan(rows, "baseline", ["vgg_deep"])
