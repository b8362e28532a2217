"""Metrics: per-run classification metrics, aggregation over folds, and the corrected t-test.

Everything here works on numpy arrays and returns plain Python values (float, int, list, dict),
so results can go straight into `metrics.json` with `ferstudy.io.write_json`. No torch.

- `classification_metrics(labels, probs)`: scikit-learn metrics of one set of predictions.
- `read_predictions(path)`: the predictions CSV (see docs/DESIGN.md) -> labels, probs, rows.
- `aggregate_folds(fold_metrics)`: mean, std and per-fold values over cross-validation folds.
- `corrected_resampled_ttest(diffs, n_train, n_test)`: Nadeau & Bengio (2003) paired test.
- `compare_to_baseline(...)`: every architecture against the baseline, with a verdict.
- `pooled_resampled_ttests(...)`: the same test with the variance pooled over all pairs.
- `detectable_difference(...)`: the smallest difference such a test finds with 80% power.
- `wilson_interval(successes, n)`: the Wilson score confidence interval of a proportion (accuracy).
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from ferstudy import CLASS_NAMES
from ferstudy.errors import UserError

N_CLASSES = len(CLASS_NAMES)
LABELS = list(range(N_CLASSES))
PROB_COLUMNS = [f"p_{name}" for name in CLASS_NAMES]
PREDICTION_COLUMNS = ["row", "label", "pred", *PROB_COLUMNS]

# Differences (of accuracies, F1, ...) smaller than this are treated as exactly equal, so that
# floating-point noise in "identical" results does not turn into an infinite t statistic.
_TIE_TOL = 1e-12


# --------------------------------------------------------------------------- one set of predictions


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Metrics of one set of predictions; the prediction is the argmax of `probs`.

    labels: int array (N,) with values 0-6; probs: float array (N, 7), columns in CLASS_NAMES order.
    All per-class quantities use the 7 labels, so a class absent from `labels` still gets its row
    (zeros; `zero_division=0`). Consequences worth knowing:
    - macro precision/recall/F1 average over all 7 classes (an absent class counts as 0);
    - balanced_accuracy is the mean recall over the classes that occur in `labels` (scikit-learn's
      definition), so it equals macro recall only when every class occurs;
    - top2_accuracy ranks classes by probability, ties broken towards the lower class index
      exactly as `argmax` does, so top-1 of that ranking is the prediction.
    Returns a JSON-ready dict (floats, ints, lists; `per_class` keyed by class name).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.ndim != 1 or probs.ndim != 2 or probs.shape != (labels.shape[0], N_CLASSES):
        raise ValueError(f"expected labels (N,) and probs (N, {N_CLASSES}); got {labels.shape} and {probs.shape}")
    if labels.shape[0] == 0:
        raise ValueError("no predictions to score")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or infinite values")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("labels must be integers")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise ValueError(f"labels must be in 0..{N_CLASSES - 1}; got {labels.min()}..{labels.max()}")

    # Stable sort of -p: equal probabilities keep ascending class order, so order[:, 0] == argmax.
    order = np.argsort(-probs, axis=1, kind="stable")
    preds = order[:, 0]
    top2 = np.any(order[:, :2] == labels[:, None], axis=1)

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=LABELS, average=None, zero_division=0
    )
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(
        labels, preds, labels=LABELS, average="macro", zero_division=0
    )
    counts = confusion_matrix(labels, preds, labels=LABELS)
    present = support > 0

    return {
        "n": int(labels.shape[0]),
        "accuracy": float(accuracy_score(labels, preds)),
        "balanced_accuracy": float(np.mean(recall[present])),
        "macro_precision": float(macro_p),
        "macro_recall": float(macro_r),
        "macro_f1": float(macro_f1),
        "top2_accuracy": float(np.mean(top2)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "class_names": list(CLASS_NAMES),
        "confusion_matrix": counts.astype(int).tolist(),
        "confusion_matrix_normalized": _row_normalize(counts).tolist(),
    }


def _row_normalize(counts):
    """Each row divided by its sum; rows that sum to zero stay zero (no division, no warning)."""
    counts = np.asarray(counts, dtype=np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)


# --------------------------------------------------------------------------- predictions CSV


def read_predictions(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a predictions CSV (`row,label,pred,p_angry,...,p_neutral`) -> (labels, probs, rows).

    labels: int64 (N,); probs: float64 (N, 7) in CLASS_NAMES order whatever the column order;
    rows: int64 (N,). The `pred` column must be present but is not used: metrics take the argmax
    of the probabilities. Extra columns are ignored. Malformed files raise UserError naming the
    file (and the column, or the file line).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: predictions file not found")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(
            f"{path}: predictions file is empty; expected columns {', '.join(PREDICTION_COLUMNS)}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None

    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise UserError(
            f"{path}: missing {noun} {', '.join(repr(c) for c in missing)}; expected columns "
            f"{', '.join(PREDICTION_COLUMNS)}"
        )
    if len(table) == 0:
        raise UserError(f"{path}: no prediction rows (header only)")

    def numeric(column, integer):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if integer:
            bad |= np.isfinite(values) & (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = "an integer" if integer else "a finite number"
            raise UserError(f"{path}, line {i + 2}: column '{column}' is {table[column].iloc[i]!r}, expected {kind}")
        return values

    rows = numeric("row", integer=True).astype(np.int64)
    labels = numeric("label", integer=True)
    out_of_range = (labels < 0) | (labels >= N_CLASSES)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise UserError(f"{path}, line {i + 2}: column 'label' is {labels[i]:g}, expected 0..{N_CLASSES - 1}")
    probs = np.column_stack([numeric(c, integer=False) for c in PROB_COLUMNS])
    return labels.astype(np.int64), probs, rows


# --------------------------------------------------------------------------- folds


def aggregate_folds(fold_metrics: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and per-fold values over folds of `classification_metrics` dicts.

    std is the sample standard deviation (ddof=1), 0.0 when there is a single fold. The per-fold
    values are kept in fold order (`folds`), because paired tests need them. Returns
        {"k", "n" (total), "n_per_fold",
         "metrics": {name: {"mean", "std", "folds"}}           # every scalar metric except n
         "per_class": {class: {"precision"|"recall"|"f1"|"support": {"mean", "std", "folds"}}},
         "class_names", "confusion_matrix" (summed counts), "confusion_matrix_normalized"}
    """
    fold_metrics = list(fold_metrics)
    if not fold_metrics:
        raise ValueError("aggregate_folds needs at least one fold")
    first = fold_metrics[0]
    scalar_keys = [key for key, value in first.items() if key != "n" and _is_number(value)]
    for i, fold in enumerate(fold_metrics):
        missing = [key for key in [*scalar_keys, "n", "per_class", "confusion_matrix"] if key not in fold]
        if missing:
            raise ValueError(f"fold {i} lacks {', '.join(missing)}")

    per_class = {}
    for name in CLASS_NAMES:
        per_class[name] = {
            stat: _summary([fold["per_class"][name][stat] for fold in fold_metrics])
            for stat in ("precision", "recall", "f1", "support")
        }
    counts = np.sum([np.asarray(fold["confusion_matrix"], dtype=np.int64) for fold in fold_metrics], axis=0)
    n_per_fold = [int(fold["n"]) for fold in fold_metrics]

    return {
        "k": len(fold_metrics),
        "n": sum(n_per_fold),
        "n_per_fold": n_per_fold,
        "metrics": {key: _summary([fold[key] for fold in fold_metrics]) for key in scalar_keys},
        "per_class": per_class,
        "class_names": list(CLASS_NAMES),
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": _row_normalize(counts).tolist(),
    }


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _summary(values):
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "folds": values}


# --------------------------------------------------------------------------- significance


def corrected_resampled_ttest(diffs: np.ndarray | Sequence[float], n_train: float, n_test: float) -> dict[str, Any]:
    """Corrected resampled paired t-test for k-fold cross-validation (Nadeau & Bengio, 2003).

    C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52(3),
    239-281, 2003.

    diffs: per-fold differences of a score between two models evaluated on the same folds
    (fold i of one model paired with fold i of the other); n_train, n_test: the number of
    training and held-out samples of one fold (for k-fold CV, n_test / n_train = 1 / (k - 1)).

        t = mean(d) / sqrt((1/k + n_test/n_train) * var(d, ddof=1)),   df = k - 1,
        p = two-sided, from Student's t with df degrees of freedom.

    Why the correction: the naive paired t-test uses var(d)/k, which assumes the k differences are
    independent. In cross-validation they are not: any two folds share most of their training data
    (and the models are trained from the same pool), so the fold results are positively correlated
    and var(d)/k underestimates the variance of mean(d). The naive test is then too liberal: it
    finds "significant" differences far more often than its nominal level. Nadeau & Bengio replace
    1/k by 1/k + n_test/n_train, which accounts for that correlation, and the test keeps its
    level much better (it is more conservative than the naive test by construction).

    Edge cases: if all differences are equal (variance 0), t is 0 and p is 1 when they are all 0
    (identical results), otherwise t is +/-inf and p is 0; with fewer than 2 folds no variance can
    be estimated, so t and p are NaN. `note` explains these cases and is None otherwise.
    Differences within 1e-12 of each other (or of 0) count as equal.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("differences contain NaN or infinite values")
    if not (n_train > 0 and n_test > 0):
        raise ValueError(f"n_train and n_test must be positive; got {n_train} and {n_test}")
    k = int(d.size)
    result: dict[str, Any] = {
        "k": k,
        "df": max(k - 1, 0),
        "n_train": n_train,
        "n_test": n_test,
        "mean_diff": float(np.mean(d)) if k else math.nan,
        "std_diff": math.nan,
        "t": math.nan,
        "p": math.nan,
        "note": None,
    }
    if k < 2:
        result["note"] = (
            f"{k} paired fold(s): at least 2 folds are needed to estimate the variance "
            "of the differences, so no test was done"
        )
        return result

    mean = float(np.mean(d))
    if np.all(np.abs(d - d[0]) <= _TIE_TOL):
        result["std_diff"] = 0.0
        if abs(mean) <= _TIE_TOL:
            result.update(mean_diff=0.0, t=0.0, p=1.0, note="identical results on every fold (all differences are 0)")
        else:
            result.update(
                t=math.copysign(math.inf, mean), p=0.0, note="the same non-zero difference on every fold (variance 0)"
            )
        return result

    var = float(np.var(d, ddof=1))
    t = mean / math.sqrt((1.0 / k + n_test / n_train) * var)
    result.update(std_diff=math.sqrt(var), t=float(t), p=float(2.0 * stats.t.sf(abs(t), k - 1)))
    return result


def compare_to_baseline(
    per_arch_fold_scores: Mapping[str, np.ndarray | Sequence[float]],
    baseline: str,
    n_train: float | Mapping[str, float],
    n_test: float,
    alpha: float = 0.05,
    metric: str = "accuracy",
) -> list[dict[str, Any]]:
    """Compare every architecture with `baseline` on per-fold scores, fold i paired with fold i.

    per_arch_fold_scores: {arch: [score of fold 0, fold 1, ...]}, scores as fractions (0-1, e.g.
    accuracy); all architectures must have the same number of folds. For each architecture other
    than the baseline (in dict order) returns a dict with the mean scores, the difference
    arch - baseline in percentage points (mean over folds of the paired differences, and their
    std), t, p and df of `corrected_resampled_ttest`, and
        verdict = "helped" (p < alpha, difference > 0) | "hurt" (p < alpha, difference < 0)
                  | "no measurable difference" (otherwise, including p = NaN).
    n_train: training images of one fold, or {arch: images} when architectures trained on
    different subsamples (a pair then uses the smaller: the more conservative correction).
    No correction for multiple comparisons is applied.
    """
    if baseline not in per_arch_fold_scores:
        raise UserError(
            f"baseline architecture '{baseline}' has no cross-validation scores; "
            f"available: {', '.join(per_arch_fold_scores) or 'none'}"
        )
    base = np.asarray(per_arch_fold_scores[baseline], dtype=np.float64)
    comparisons = []
    for arch, scores in per_arch_fold_scores.items():
        if arch == baseline:
            continue
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != base.shape:
            raise UserError(
                f"architecture '{arch}' has {scores.size} fold scores but baseline "
                f"'{baseline}' has {base.size}; folds are paired by index, so run the "
                "same folds for both"
            )
        pair_n_train = min(n_train[arch], n_train[baseline]) if isinstance(n_train, Mapping) else n_train
        test = corrected_resampled_ttest(scores - base, pair_n_train, n_test)
        p = test["p"]
        if p < alpha and test["mean_diff"] > 0:
            verdict = "helped"
        elif p < alpha and test["mean_diff"] < 0:
            verdict = "hurt"
        else:
            verdict = "no measurable difference"
        comparisons.append(
            {
                "arch": arch,
                "baseline": baseline,
                "metric": metric,
                "k": test["k"],
                "mean": float(np.mean(scores)) if scores.size else math.nan,
                "baseline_mean": float(np.mean(base)) if base.size else math.nan,
                "diff_pp": 100.0 * test["mean_diff"],
                "std_pp": 100.0 * test["std_diff"],
                "t": test["t"],
                "p": p,
                "df": test["df"],
                "alpha": alpha,
                "verdict": verdict,
                "note": test["note"],
            }
        )
    return comparisons


# --------------------------------------------------------------------------- pooled variance, power


def variance_factor(k: int, n_train: float, n_test: float) -> float:
    """Nadeau & Bengio's factor on the variance of the paired differences: 1/k + n_test/n_train."""
    return 1.0 / k + n_test / n_train


def pooled_resampled_ttests(diffs_by_pair: dict, n_train: float | dict, n_test: float) -> tuple[dict, dict]:
    """Each pair's corrected resampled t-test with the variance of the paired differences pooled over
    all pairs: with 3 folds a pair's own variance has 2 degrees of freedom, so one pair whose folds
    happen to agree gets a tiny variance and a large t. Pooling assumes that every pair's per-fold
    differences share one noise level (the same folds, the same training budget).

    diffs_by_pair: {pair: per-fold differences}; n_train: a number or {pair: n_train}. Pairs with
    fewer than 2 folds add nothing to the pool. Pooled variance = sum over pairs of
    sum_i (d_i - mean)^2 / sum over pairs of (k - 1), df = that sum, and for each pair
    t = mean / sqrt((1/k + n_test/n_train) * pooled variance). Returns ({pair: {"t", "p", "df",
    "std_pooled", "se_pooled"}}, {"std": pooled std, "df": df})."""
    squares, df = 0.0, 0
    for d in diffs_by_pair.values():
        d = np.asarray(d, dtype=np.float64).ravel()
        if d.size >= 2 and np.all(np.isfinite(d)):
            squares += float(((d - d.mean()) ** 2).sum())
            df += d.size - 1
    std = math.sqrt(squares / df) if df else math.nan
    out = {}
    for pair, d in diffs_by_pair.items():
        d = np.asarray(d, dtype=np.float64).ravel()
        pair_n_train = n_train[pair] if isinstance(n_train, dict) else n_train
        se = math.sqrt(variance_factor(d.size, pair_n_train, n_test)) * std if d.size and df else math.nan
        mean = float(np.mean(d)) if d.size else math.nan
        if not np.isfinite(se) or not np.isfinite(mean):
            t = p = math.nan
        elif se <= _TIE_TOL:
            t, p = (0.0, 1.0) if abs(mean) <= _TIE_TOL else (math.copysign(math.inf, mean), 0.0)
        else:
            t = mean / se
            p = float(2.0 * stats.t.sf(abs(t), df))
        out[pair] = {"t": float(t), "p": float(p), "df": df, "std_pooled": std, "se_pooled": se}
    return out, {"std": std, "df": df}


def detectable_difference(
    std: float, k: int, n_train: float, n_test: float, alpha: float = 0.05, power: float = 0.8, df: int | None = None
) -> float:
    """The smallest true mean difference (in the units of `std`) that a two-sided corrected
    resampled t-test at `alpha` finds with probability `power`, when the paired per-fold
    differences have standard deviation `std`: t follows a noncentral t with `df` (default k - 1,
    a pair's own test) degrees of freedom and noncentrality delta / sqrt((1/k + n_test/n_train) std^2).
    NaN when std or df is not usable."""
    from scipy.optimize import brentq

    df = k - 1 if df is None else df
    if not (np.isfinite(std) and std > 0 and df >= 1 and k >= 1):
        return math.nan
    se = math.sqrt(variance_factor(k, n_train, n_test)) * std
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(nc):
        return _two_sided_power(t_crit, df, nc) - power

    high = max(1.0, t_crit)
    while shortfall(high) < 0:
        high *= 2
    return brentq(shortfall, 0.0, high, xtol=1e-9) * se


def power_of_test(
    delta: float, std: float, k: int, n_train: float, n_test: float, alpha: float = 0.05, df: int | None = None
) -> float:
    """Probability that the two-sided corrected resampled t-test at `alpha` finds a true difference
    `delta` (units of `std`); the inverse of `detectable_difference`."""
    df = k - 1 if df is None else df
    se = math.sqrt(variance_factor(k, n_train, n_test)) * std
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))
    return _two_sided_power(t_crit, df, delta / se)


def _two_sided_power(t_crit, df, nc):
    """P(|T| > t_crit) for T noncentral t; scipy's far tail can come out NaN where it is ~0."""
    far = float(stats.nct.cdf(-abs(t_crit), df, abs(nc)))
    return float(stats.nct.sf(abs(t_crit), df, abs(nc))) + (far if np.isfinite(far) else 0.0)


# --------------------------------------------------------------------------- a proportion's interval


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion successes / n (Wilson, 1927): the p whose normal
    test against the observed share is not rejected at 1 - confidence,
    (p_hat + z^2 / 2n +- z sqrt(p_hat (1 - p_hat) / n + z^2 / 4n^2)) / (1 + z^2 / n). Unlike the normal
    approximation p_hat +- z sqrt(p_hat (1 - p_hat) / n) it stays inside [0, 1] and keeps its coverage
    near 0 and 1 (a rare class's recall); at FER2013's test-set sizes the two agree to 0.1 pp."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p_hat = successes / n
    centre = (p_hat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
