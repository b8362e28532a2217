"""Choosing the final architecture (cross-validation only) and the study tables."""

import numpy as np
import pandas as pd
import pytest

from ferstudy.errors import UserError
from ferstudy.io import write_json
from ferstudy.metrics import aggregate_folds, classification_metrics
from ferstudy.study import aggregate, select


def summary(means):
    return pd.DataFrame([{"architecture": a, "accuracy_mean": m, "accuracy_std": 0.01, "macro_f1_mean": 1 - m,
                          "macro_f1_std": 0.02} for a, m in means.items()])


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
    write_json(path, {"architecture": name, "dataset": "demo", "factor": "f", "description": name, "folds": folds,
                      "subsample": subsample, "aggregate": aggregate_folds(folds), "cost": {"params": 10, "mflops": 1.0}})
    return path


def test_aggregate_tables_and_verdicts(tmp_path):
    rng = np.random.default_rng(0)
    files = [_metrics_file(tmp_path, "base", [0.50, 0.52, 0.51], rng),
             _metrics_file(tmp_path, "better", [0.70, 0.71, 0.72], rng),
             _metrics_file(tmp_path, "same", [0.50, 0.53, 0.50], rng)]
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
    full = aggregate([base, _metrics_file(tmp_path, "other", accs, np.random.default_rng(1))],
                     "base", 0.05, n_train=4000, n_test=2000)[1]
    sub = aggregate([base, _metrics_file(tmp_path, "other", accs, np.random.default_rng(1), subsample=0.1)],
                    "base", 0.05, n_train=4000, n_test=2000)[1]
    assert sub["p"].iloc[0] > full["p"].iloc[0]
    assert sub["diff_pp"].iloc[0] == pytest.approx(full["diff_pp"].iloc[0])
